// Package supervisor runs a server generation after generation on
// listening sockets it owns, and replaces one generation by the next without
// losing a connection: the restart data path of rpwrap's DESIGN.md.
//
// A restart (Supervisor.Restart, SIGHUP, or a "restart" request on the
// control socket) goes through these steps:
//
//  1. For each listener, a new socket joins the same SO_REUSEPORT group
//     (socket(7)) and takes a free slot of the group's selector (package
//     bpf); the selector keeps sending new connections to the active slot.
//  2. The successor starts through the exec shim (package fdpass) with
//     RPWRAP_GENERATION set, its sockets passed by the configured route.
//  3. It must pass the readiness check (Ready: notify, accept, http:PATH,
//     exec:CMD, delay:D, none) within Config.ReadyTimeout, and hold the
//     sockets it was given with no listening socket of its own on the port.
//     Otherwise it is killed and its sockets closed: the restart is rolled
//     back and the predecessor serves on.
//  4. The flip: one selector update per listener.
//  5. The predecessor empties its accept queue; one that does not shrink
//     for Config.DrainStall means it hangs: the queue is migrated by the
//     kernel (eBPF) or relayed by rpwrap (cBPF). Then Config.StopSignal, up
//     to Config.DrainTimeout, SIGKILL to its process group, and rpwrap
//     closes its copies of the old sockets.
//
// Triggers that arrive during a restart are queued, and all of them are
// answered by the one restart that follows it.
//
// The supervisor also does what PID 1 must: it is a child subreaper, reaps
// every child in one place (a wait4(-1) loop on SIGCHLD that dispatches exit
// statuses by pid), forwards every signal but SIGCHLD, SIGTERM, SIGINT and
// SIGHUP to the serving generation, and forks servers from one locked OS
// thread with PR_SET_PDEATHSIG, so that no server outlives rpwrap.
//
// Exit status of Run: the serving generation's status when rpwrap stops it
// (SIGTERM/SIGINT) or when it exits on its own without
// Config.RestartOnFailure; 128+N when signal N killed it; 127 or 126 when the
// command cannot be found or run; 1 when the first generation never became
// ready for another reason.
//
// A program that wraps a server:
//
//	s, err := supervisor.New(supervisor.Config{
//		Path: "/usr/sbin/nginx", Argv: []string{"nginx", "-g", "daemon off;"},
//		Listen: []fdpass.Spec{spec}, Route: fdpass.Nginx, StopSignal: syscall.SIGQUIT,
//		Ready: supervisor.Ready{Kind: supervisor.ReadyAccept}, RuntimeDir: "/run/rpwrap",
//	})
//	if err != nil {
//		return err
//	}
//	os.Exit(s.Run(context.Background()))
package supervisor
