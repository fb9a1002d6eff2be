//go:build linux

package main

import (
	"fmt"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/rpwrap/rpwrap/fdpass"
	"github.com/rpwrap/rpwrap/internal/procfs"
)

// ownMechanisms are the restart mechanisms of each server that the
// reference figures measured, in the order of their table.
func ownMechanisms() []own {
	a, n, h := apacheServer, nginxServer, haproxyServer
	apacheStart := func(in *ownInstance) error {
		return startForeground(true, "-DFOREGROUND", "-f", in.s.conf)(in)
	}
	nginxStart := func(in *ownInstance) error {
		return startForeground(true, "-e", filepath.Join(in.s.dir, "error.log"), "-c", in.s.conf)(in)
	}
	haproxyStart := func(in *ownInstance) error {
		return startForeground(false, "-db", "-f", in.s.conf)(in)
	}
	return []own{
		{srv: a, name: "graceful (USR1)", start: apacheStart, swap: reloadInPlace(syscall.SIGUSR1)},
		{srv: a, name: "restart (HUP)", start: apacheStart, swap: reloadInPlace(syscall.SIGHUP)},
		{srv: a, name: "stop+start", start: apacheStart, swap: stopStart(syscall.SIGWINCH)},
		{srv: a, name: "reuseport+WINCH", setup: apacheReuseport, start: apacheStart, swap: overlap(apacheStart, syscall.SIGWINCH)},
		{srv: n, name: "reload (HUP)", start: nginxStart, swap: reloadInPlace(syscall.SIGHUP)},
		{srv: n, name: "upgrade (USR2+WINCH+QUIT)", setup: func(s *site) { s.daemon = true }, start: nginxDaemon, swap: nginxUpgrade},
		{srv: n, name: "stop+start", start: nginxStart, swap: stopStart(syscall.SIGQUIT)},
		{srv: h, name: "-W reload (USR2)", start: func(in *ownInstance) error { return startForeground(true, "-W", "-db", "-f", in.s.conf)(in) }, swap: reloadInPlace(syscall.SIGUSR2)},
		{srv: h, name: "-sf -x", setup: haproxyExpose, start: haproxyStart, swap: haproxySoftFinish(true)},
		{srv: h, name: "-sf", start: haproxyStart, swap: haproxySoftFinish(false)},
		{srv: h, name: "stop+start", start: haproxyStart, swap: stopStart(syscall.SIGUSR1)},
	}
}

// apacheReuseport is the seed's method: each Apache binds its own
// SO_REUSEPORT socket (ListenCoresBucketsRatio), no selector.
func apacheReuseport(s *site) {
	s.extra = "ListenCoresBucketsRatio 1024"
}

// haproxyExpose lets a new HAProxy fetch the old one's listeners (-x).
func haproxyExpose(s *site) {
	s.extra = "    stats socket " + filepath.Join(s.dir, "admin.sock") + " mode 600 level admin expose-fd listeners"
}

// overlap starts a second server next to the old one (its own socket in
// the same reuseport group), then stops the old one with sig.
func overlap(start func(*ownInstance) error, sig syscall.Signal) func(*ownInstance, func([]int)) error {
	return func(in *ownInstance, hook func([]int)) error {
		oldMaster := in.master
		old := in.tree(oldMaster)
		hook(old)
		if err := start(in); err != nil {
			in.master = oldMaster
			if in.sc.HangAfter {
				waitGone(old, in.sc.grace()) // a hung one is stopped; a refused successor leaves the old one serving
			}
			return err
		}
		syscall.Kill(oldMaster, sig)
		waitGone(old, in.sc.grace())
		return nil
	}
}

// nginxDaemon starts nginx as a daemon (the binary upgrade needs it: in
// the foreground nginx ignores USR2) and finds its master by pid file.
func nginxDaemon(in *ownInstance) error {
	pid, err := in.launch("-e", filepath.Join(in.s.dir, "error.log"), "-c", in.s.conf)
	if err != nil {
		return err
	}
	pidFile := filepath.Join(in.s.dir, "nginx.pid")
	pollUntil(in.handoverTimeout(), func() bool { m, err := readPid(pidFile); return err == nil && m != pid && alive([]int{m}) })
	m, err := readPid(pidFile)
	if err != nil {
		return fmt.Errorf("nginx daemon: no pid file %s; see %s", pidFile, in.stderr.Name())
	}
	in.master = m
	return in.waitReady(m, true)
}

// nginxUpgrade is nginx's binary upgrade: USR2 starts a new master on the
// inherited sockets, WINCH stops the old workers, QUIT the old master.
func nginxUpgrade(in *ownInstance, hook func([]int)) error {
	old := in.master
	pidFile := filepath.Join(in.s.dir, "nginx.pid")
	hook(in.children(old))
	if err := syscall.Kill(old, syscall.SIGUSR2); err != nil {
		return fmt.Errorf("signal nginx pid %d: %w", old, err)
	}
	var next int
	pollUntil(in.handoverTimeout(), func() bool {
		next, _ = readPid(pidFile)
		return next != old && next > 0 && len(in.children(next)) > 0
	})
	if next == old || next <= 0 || len(in.children(next)) == 0 {
		return fmt.Errorf("nginx upgrade: no new master with workers within %s (old master %d kept)", in.handoverTimeout(), old)
	}
	var workers []int
	for _, c := range in.children(old) {
		if c != next {
			workers = append(workers, c)
		}
	}
	syscall.Kill(old, syscall.SIGWINCH)
	syscall.Kill(old, syscall.SIGQUIT)
	in.master = next
	waitGone(append(workers, old), in.sc.grace())
	return nil
}

// haproxySoftFinish starts a new HAProxy with -sf OLDPID (and -x, which
// fetches the old one's listeners over its stats socket, when expose):
// the new process tells the old one to finish once it is up.
func haproxySoftFinish(expose bool) func(*ownInstance, func([]int)) error {
	return func(in *ownInstance, hook func([]int)) error {
		old := in.master
		hook([]int{old})
		args := []string{"-db", "-f", in.s.conf}
		if expose {
			args = append(args, "-x", filepath.Join(in.s.dir, "admin.sock"))
		}
		pid, err := in.launch(append(args, "-sf", strconv.Itoa(old))...)
		if err != nil {
			return err
		}
		if err := in.waitReady(pid, false); err != nil {
			if in.sc.HangAfter {
				waitGone([]int{old}, in.sc.grace()) // a hung one is stopped; a refused successor leaves the old one serving
			}
			return err
		}
		in.master = pid
		waitGone([]int{old}, in.sc.grace())
		return nil
	}
}

// holdsListener tells whether one of pids holds a socket listening on port.
func holdsListener(pids []int, port uint16) bool {
	inodes, err := fdpass.ListeningInodes(port)
	if err != nil {
		return false
	}
	set := map[uint64]bool{}
	for _, i := range inodes {
		set[i] = true
	}
	return procfs.HoldsAny(pids, set)
}
