//go:build linux

package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/rpwrap/rpwrap/supervisor"
)

const ctlUsage = `Usage: rpwrap ctl [--control PATH] [--json] [--timeout DURATION] COMMAND

Commands:
  restart [--wait]   start a new generation and flip to it once it is ready.
            It answers at the flip, once the new generation serves: exit 0,
            or exit 1 with the reason when the restart was rolled back (the
            old generation keeps serving). The old generation then drains in
            the background. A restart asked for during another one waits for
            it and runs next (ctl says so on stderr after a second).
            --wait  answer only once the old generation has drained too
            --watch DURATION, --canary PCT:DURATION[,...]  this restart's
                    watch and canary instead of rpwrap's (--watch 0: none);
                    it answers when they end: exit 1 with the reason when
                    the new generation was rolled back
  promote   end the canary or watch in progress now: every new connection
            to the new generation, the old one drains
  abort     roll the canary or watch in progress back: every new connection
            to the old generation, the new one is retired
  status    rpwrap's pid, version, uptime and configuration; the last
            restart and the last rollback with its reason; the kernel's
            TcpExt counters (migrations, listen drops); per generation its
            pid, state, start time, age, the server binary it was started
            from (device, inode, mtime), and per listener its slot, queue
            against backlog, established connections and (eBPF) the
            connections the selector gave it, by route
  upgrade [--binary PATH]   upgrade rpwrap itself in place: it re-executes
            itself (execve, same pid) onto PATH, by default the file it was
            started from as it is now (a package manager's new binary). The
            servers keep running untouched; sockets, selector, control
            socket, draining generations, queued restarts and counters carry
            over. PATH is checked first (it must be an rpwrap that reads
            rpwrap's state and accepts its flags): when it is not, exit 1
            with the reason, and the running rpwrap serves on unchanged.
            It answers once the new rpwrap serves. The signal RTMIN+2
            (signal 36) does the same without an answer.
  sockets   per listener and generation, the options of the socket rpwrap
            holds, read with getsockopt: SO_REUSEPORT, SO_REUSEADDR,
            IPV6_V6ONLY, TCP_DEFER_ACCEPT, TCP_FASTOPEN, backlog and queue
            (TCP_INFO), SO_RCVBUF, SO_SNDBUF, O_NONBLOCK, the inode, and the
            selector's program and slots
  events    follow what rpwrap does, one JSON object a line, until rpwrap
            stops or --timeout passes (exit 0; 1 when rpwrap dropped this
            client for reading too slowly): first following (the generation
            serving now), then restart_asked, started, ready,
            flipped, drain_began, drain_ended, rolled_back (with the reason),
            crashed, respawned; rollout_began, canary_stage, rollout_ended
            (--canary, --watch). Fields: at (RFC 3339), event, generation,
            pid, predecessor, source, reason, deadline, took_ns, handed_over,
            phase, percent, to_successor, to_predecessor

Flags (before or after the command):
  --control PATH      the control socket of the rpwrap to talk to (default as
                      rpwrap's own --control)  [RPWRAP_CONTROL]
  --json              print the answer as JSON
  --timeout DURATION  give up waiting for the answer after DURATION (default
                      10s for status and sockets, 1m for upgrade, none for
                      restart and events). A restart given up on
                      is not cancelled: rpwrap goes on with it.

Examples:
  $ rpwrap ctl restart
  $ rpwrap ctl restart --wait
  $ rpwrap ctl restart --canary 20%:6s --watch 30s
  $ rpwrap ctl promote
  $ rpwrap ctl --json status
  $ rpwrap ctl sockets
  $ rpwrap ctl events | jq -r 'select(.event == "rolled_back") | .reason'
  $ rpwrap ctl upgrade
  $ rpwrap ctl upgrade --binary /usr/local/bin/rpwrap.new
  ExecReload=/usr/local/bin/rpwrap ctl restart      (systemd)
`

// ctlCommands are the commands `rpwrap ctl` knows.
var ctlCommands = []string{"restart", "status", "sockets", "events", "promote", "abort", "upgrade"}

// statusTimeout bounds `ctl status` and `ctl sockets` unless --timeout says otherwise: the
// answer is a snapshot and takes milliseconds.
const statusTimeout = 10 * time.Second

// upgradeTimeout bounds `ctl upgrade` unless --timeout says otherwise: the
// check of the new binary takes up to 10 s, the take-over milliseconds.
const upgradeTimeout = time.Minute

// waitNotice is how long ctl waits for an answer before it says why.
const waitNotice = time.Second

type ctlOptions struct {
	control string
	asJSON  bool
	wait    bool
	watch   string
	canary  string
	binary  string
	timeout time.Duration
	help    bool
	command string
}

// runCtl is `rpwrap ctl COMMAND`.
func runCtl(e env, args []string) int {
	o, err := parseCtl(e, args)
	if err != nil {
		printError(e.stderr, "rpwrap ctl", err.Error())
		return 2
	}
	if o.help {
		fmt.Fprint(e.stdout, ctlUsage)
		return 0
	}
	path := o.control
	if path == "" {
		path = filepath.Join(runtimeDir(e), "rpwrap.sock")
	}
	if o.command == "events" {
		return followEvents(e, o, path)
	}
	resp, err := callCtl(e, o, path)
	if err != nil {
		printError(e.stderr, "rpwrap ctl", err.Error())
		return 1
	}
	printAnswer(e, o, resp)
	if !resp.OK {
		printError(e.stderr, "rpwrap ctl "+o.command, resp.Error)
		return 1
	}
	return 0
}

// parseCtl reads ctl's flags, which may come before or after the command
// (ctl --json status, ctl status --json), and checks the command.
func parseCtl(e env, args []string) (*ctlOptions, error) {
	o := &ctlOptions{}
	fs := flag.NewFlagSet("rpwrap ctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.control, "control", e.getenv("RPWRAP_CONTROL"), "")
	fs.BoolVar(&o.asJSON, "json", false, "")
	fs.BoolVar(&o.wait, "wait", false, "")
	fs.StringVar(&o.watch, "watch", "", "")
	fs.StringVar(&o.canary, "canary", "", "")
	fs.StringVar(&o.binary, "binary", "", "")
	durationVar(fs, &o.timeout, "timeout", 0)
	fs.BoolVar(&o.help, "help", false, "")
	fs.BoolVar(&o.help, "h", false, "")
	err := fs.Parse(args)
	if err == nil && fs.NArg() > 0 {
		o.command = fs.Arg(0)
		err = fs.Parse(fs.Args()[1:])
	}
	switch {
	case err != nil:
		return nil, fmt.Errorf("%v\nTry 'rpwrap ctl --help'.", flagErrorIn(fs, err))
	case o.help:
		return o, nil
	case o.command == "":
		return nil, errors.New("no command: give restart, status, sockets, events, promote, abort or upgrade\nTry 'rpwrap ctl --help'.")
	case fs.NArg() != 0:
		return nil, fmt.Errorf("unexpected argument %q after %s\nTry 'rpwrap ctl --help'.", fs.Arg(0), o.command)
	case o.wait && o.command != "restart":
		return nil, fmt.Errorf("--wait is for restart, not %s", o.command)
	case (o.watch != "" || o.canary != "") && o.command != "restart":
		return nil, fmt.Errorf("--watch and --canary are for restart, not %s", o.command)
	case o.binary != "" && o.command != "upgrade":
		return nil, fmt.Errorf("--binary is for upgrade, not %s", o.command)
	case o.binary != "":
		abs, err := filepath.Abs(o.binary) // rpwrap's working directory is not ctl's
		if err != nil {
			return nil, fmt.Errorf("--binary %s: %v", o.binary, err)
		}
		o.binary = abs
	}
	if o.watch != "" {
		if _, err := parseDuration(o.watch); err != nil {
			return nil, fmt.Errorf("--watch %q: %v", o.watch, err)
		}
	}
	if _, err := supervisor.ParseCanary(o.canary); err != nil {
		return nil, err
	}
	for _, c := range ctlCommands {
		if o.command == c {
			return o, nil
		}
	}
	if near := nearest(o.command, ctlCommands); near != "" {
		return nil, fmt.Errorf("unknown command %q; did you mean %s?", o.command, near)
	}
	return nil, fmt.Errorf("unknown command %q: want restart, status, sockets, events, promote, abort or upgrade\nTry 'rpwrap ctl --help'.", o.command)
}

// callCtl sends o's request to path. While a restart takes more than
// waitNotice it says on stderr what it waits for.
func callCtl(e env, o *ctlOptions, path string) (supervisor.Response, error) {
	limit := o.timeout
	if limit == 0 && o.command != "restart" {
		limit = statusTimeout
		if o.command == "upgrade" {
			limit = upgradeTimeout
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	if limit > 0 {
		ctx, cancel = context.WithTimeout(context.Background(), limit)
	}
	defer cancel()
	done, noticed := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(noticed)
		select {
		case <-done:
		case <-time.After(waitNotice):
			if o.command == "restart" {
				fmt.Fprintf(e.stderr, "rpwrap ctl: %s\n", waitingFor(path, o.wait))
			}
		}
	}()
	resp, err := supervisor.Call(ctx, path, supervisor.Request{Command: o.command, Wait: o.wait, Watch: o.watch, Canary: o.canary, Binary: o.binary})
	close(done)
	<-noticed
	if err != nil && errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("%w; gave up after %s (--timeout)", err, limit)
		if o.command == "restart" {
			err = fmt.Errorf("%w: the restart is not cancelled, rpwrap goes on with it (see rpwrap ctl status)", err)
		}
	}
	return resp, err
}

// waitingFor says what a restart that has not answered yet waits for,
// from a status snapshot of the rpwrap at path.
func waitingFor(path string, wait bool) string {
	const unknown = "waiting for rpwrap to finish the restart in progress (this restart runs after it)"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := supervisor.Call(ctx, path, supervisor.Request{Command: "status"})
	if err != nil || resp.Status == nil {
		return unknown
	}
	if r := resp.Status.Rollout; r != nil && (r.Phase == "canary" || r.Phase == "watch") {
		return fmt.Sprintf("waiting for the %s of generation %d to end (%s); rpwrap ctl promote ends it now, rpwrap ctl abort rolls it back",
			r.Phase, r.Generation, r.Summary())
	}
	for _, g := range resp.Status.Generations {
		if g.State == supervisor.StateStarting || g.State == supervisor.StateReady {
			return fmt.Sprintf("waiting for the restart in progress: generation %d (pid %d) has been %s for %s; a restart asked for meanwhile runs after it",
				g.Generation, g.Pid, g.State, time.Since(g.Started).Round(100*time.Millisecond))
		}
	}
	for _, g := range resp.Status.Generations {
		if wait && g.State == supervisor.StateDraining {
			return fmt.Sprintf("waiting for generation %d (pid %d) to finish draining (--wait)", g.Generation, g.Pid)
		}
	}
	return unknown
}

// printAnswer writes resp to stdout, as JSON or for a human.
func printAnswer(e env, o *ctlOptions, resp supervisor.Response) {
	switch r := resp.Restart; {
	case o.asJSON:
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		enc.Encode(resp)
	case resp.Status != nil:
		resp.Status.Write(e.stdout)
	case resp.Sockets != nil:
		resp.Sockets.Write(e.stdout)
	case resp.Upgrade != nil && resp.OK:
		printUpgrade(e, resp.Upgrade)
	case r != nil && resp.OK:
		old := fmt.Sprintf("generation %d draining (see rpwrap ctl status)", r.Predecessor)
		if r.Drained {
			old = fmt.Sprintf("old generation drained in %s", r.Drain.Round(time.Millisecond))
		}
		fmt.Fprintf(e.stdout, "restarted: generation %d (pid %d) ready in %s, flipped %s after the trigger, %s\n",
			r.Generation, r.Pid, r.Ready.Round(time.Millisecond), r.ToFlip.Round(time.Millisecond), old)
		printRollout(e, r)
	case r != nil:
		printRollout(e, r)
	case resp.OK:
		fmt.Fprintf(e.stdout, "%s: done (see rpwrap ctl status)\n", o.command)
	}
}

// nearest is the word of words within two edits of w (an adjacent
// transposition counts as one), or "".
func nearest(w string, words []string) string {
	best, bestD := "", 3
	for _, c := range words {
		if d := editDistance(w, c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the optimal string alignment distance of a and b.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

// printRollout writes the canary and watch of a restart, when it had one.
func printRollout(e env, r *supervisor.RestartResult) {
	if r.Rollout != nil {
		fmt.Fprintf(e.stdout, "rollout: %s\n", r.Rollout.Summary())
	}
}
