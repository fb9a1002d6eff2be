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
//     exec:CMD, delay:D, none) within Config.ReadyTimeout. A probe counts
//     only once a process of the successor has accepted it from its own
//     socket. Then the guard: the successor holds the sockets it was given
//     (with the bind route, once it has bound them) and listens on no socket
//     of its own on their ports. Its TCP sockets get Config.Backlog again
//     (listen(2)), whatever backlog the server asked for. Otherwise it is
//     retired and its sockets closed: the restart is rolled back and the
//     predecessor serves on.
//  4. The flip: one selector update per listener. The restart ends here:
//     Restart returns, and the next restart may begin.
//  5. In the background, side by side with other draining generations,
//     each with its own deadline (Config.DrainTimeout from its flip; at
//     most Config.MaxDraining at once, the oldest stopped early), the
//     predecessor drains: after Config.DrainDelay its queues empty (accept
//     queues; receive queues for UDP), or, when one does not shrink for
//     Config.DrainStall, they are handed over (eBPF: the kernel migrates
//     them; cBPF: rpwrap relays them). Then Config.StopSignal, and SIGKILL
//     to its process group at its deadline. As soon as no process of it
//     holds its sockets, rpwrap lets go of its copies (eBPF: what still
//     arrives, such as a TCP_DEFER_ACCEPT connection whose first data comes
//     late, is migrated) or relays what arrives (cBPF).
//
// Triggers that arrive during a restart are queued, and all of them are
// answered by the one restart that follows it. RestartAndDrain (a "restart"
// request with "wait") answers once the predecessor is drained too.
//
// A generation's life is a state machine (see transitions in lifecycle.go):
// starting, ready, active, draining, and one of the final states stopped,
// abandoned (never served) or crashed (exited on its own). Every end goes
// through one retire step that frees what the generation held: its process
// group, notify socket, bind interception, pidfd, sockets and selector
// slots.
//
// The supervisor also does what PID 1 must: it is a child subreaper, reaps
// every child in one place (a wait4(-1) loop on SIGCHLD that dispatches exit
// statuses by pid), forwards every signal but SIGCHLD, SIGTERM, SIGINT and
// SIGHUP to the serving generation, and forks servers from one locked OS
// thread with PR_SET_PDEATHSIG, so that no server outlives rpwrap.
//
// On SIGTERM or SIGINT, with Config.StopDelay, it first serves on for that
// long while the health endpoint (Config.HealthAddr: /livez, /readyz) says
// not ready and restarts are refused; a second signal ends the delay. Then
// every draining generation is told to stop now, and the active one gets
// Config.StopSignal and up to Config.StopTimeout.
//
// What it does is observable three ways (status.go, metrics.go,
// events.go): Status, a snapshot with the data path per generation (the
// selector's counts, queues, established connections, the kernel's TcpExt
// counters); a Prometheus endpoint (Config.MetricsAddr: /metrics) on a
// socket of rpwrap's own; and the events of the control socket's "events"
// command, which never block the supervisor.
//
// Exit status of Run: the serving generation's status when rpwrap stops it
// (SIGTERM/SIGINT) or when it exits on its own without
// Config.RestartOnFailure; 128+N when signal N killed it; 127 or 126 when the
// command cannot be found or run; 1 when the first generation never became
// ready for another reason, whatever the server's own status (logged); 70 after a panic inside rpwrap (a bug), which
// first kills every generation's process group.
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
