//go:build linux

package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/rpwrap/rpwrap/supervisor"
)

const ctlUsage = `Usage: rpwrap ctl [--control PATH] [--json] [--timeout DURATION] COMMAND

Commands:
  restart   start a new generation, flip to it once ready, drain the old one;
            waits until it is done: exit 0 on success, 1 with the reason when
            the restart was rolled back (the old generation keeps serving)
  status    generations with pid, state, start time and accept-queue depth

Examples:
  $ rpwrap ctl restart
  $ rpwrap ctl --json status
  ExecReload=/usr/local/bin/rpwrap ctl restart      (systemd)
`

// runCtl is `rpwrap ctl COMMAND`.
func runCtl(e env, args []string) int {
	fs := flag.NewFlagSet("rpwrap ctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	control := fs.String("control", e.getenv("RPWRAP_CONTROL"), "")
	asJSON := fs.Bool("json", false, "")
	timeout := fs.Duration("timeout", 10*time.Minute, "")
	help := fs.Bool("help", false, "")
	fs.BoolVar(help, "h", false, "")
	// Flags may come before or after the command: ctl --json status, ctl status --json.
	err := fs.Parse(args)
	var command string
	if err == nil && fs.NArg() > 0 {
		command = fs.Arg(0)
		err = fs.Parse(fs.Args()[1:])
	}
	if err != nil {
		fmt.Fprintf(e.stderr, "rpwrap ctl: %v\n%s", err, ctlUsage)
		return 2
	}
	if *help {
		fmt.Fprint(e.stdout, ctlUsage)
		return 0
	}
	if fs.NArg() != 0 || (command != "restart" && command != "status") {
		fmt.Fprint(e.stderr, ctlUsage)
		return 2
	}
	path := *control
	if path == "" {
		path = filepath.Join(runtimeDir(e), "rpwrap.sock")
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	resp, err := supervisor.Call(ctx, path, supervisor.Request{Command: command})
	if err != nil {
		fmt.Fprintf(e.stderr, "rpwrap ctl: %v\n", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		enc.Encode(resp)
	} else if resp.Status != nil {
		resp.Status.Write(e.stdout)
	} else if r := resp.Restart; r != nil && resp.OK {
		fmt.Fprintf(e.stdout, "restarted: generation %d (pid %d) ready in %s, flipped %s after the trigger, old generation drained in %s\n",
			r.Generation, r.Pid, r.Ready.Round(time.Millisecond), r.ToFlip.Round(time.Millisecond), r.Drain.Round(time.Millisecond))
	}
	if !resp.OK {
		fmt.Fprintf(e.stderr, "rpwrap ctl %s: %s\n", command, resp.Error)
		return 1
	}
	return 0
}
