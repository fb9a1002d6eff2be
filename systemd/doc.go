// Package systemd implements both sides of the sd_notify(3) protocol for
// rpwrap.
//
// Towards the service manager that started rpwrap, a [Notifier] sends
// READY=1, RELOADING=1 (with MONOTONIC_USEC, as Type=notify-reload in
// systemd.service(5) requires since systemd 253), STOPPING=1, STATUS= and
// WATCHDOG=1 to $NOTIFY_SOCKET, using go-systemd's daemon package for the
// protocol constants and the watchdog settings. NewNotifier reads
// $NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID once and removes them from
// the environment, so the servers rpwrap starts never talk to systemd
// directly and MAINPID stays rpwrap's own pid.
//
// Towards each server rpwrap starts, a [NotifySocket] is the service manager:
// a unixgram socket with SO_PASSCRED that the server receives as its own
// NOTIFY_SOCKET, and that believes a datagram only when the kernel-attached
// SCM_CREDENTIALS name the server or one of its descendants (as runc's
// notify_socket.go checks the sender). It implements what a server may send
// per sd_notify(3): READY=1 and STATUS=; every other key is ignored, and
// BARRIER=1 (sd_notify_barrier(3), which systemd-notify(1) sends) is honoured
// by closing the file descriptors that came with it.
//
// The sockets themselves (sd_listen_fds(3), LISTEN_FDS) are the business of
// package fdpass; the unit files in examples/ show how systemd.service(5) and
// systemd.socket(5) units run rpwrap.
//
// Towards systemd:
//
//	n := systemd.NewNotifier() // a no-op without $NOTIFY_SOCKET
//	n.Watchdog(ctx)
//	n.Status("generation %d serving on %s", 1, addr)
//	n.Ready()
//
// Towards a server:
//
//	ns, err := systemd.ListenNotify("/run/rpwrap")
//	if err != nil { ... }
//	defer ns.Close()
//	cmd.Env = append(cmd.Env, "NOTIFY_SOCKET="+ns.Path())
//	if err := cmd.Start(); err != nil { ... }
//	ns.SetPID(cmd.Process.Pid)
//	status, err := ns.Ready(ctx) // READY=1 from the server, or ctx's error
package systemd
