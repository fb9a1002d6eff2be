// Package demoserver is the small HTTP server that `rpwrap demo`, the
// end-to-end tests and the benchmark wrap. It speaks systemd socket activation
// as sd_listen_fds(3) describes it (LISTEN_FDS, LISTEN_PID, fds from 3) and
// readiness as sd_notify(3) describes it (READY=1 on NOTIFY_SOCKET), so it
// stands for any server that rpwrap restarts, and its flags make it misbehave
// the ways real servers do (slow start, early exit, no readiness, crash,
// ignored stop signal).
//
// It binds no socket itself unless -bind asks it to: without sockets passed
// to it, it refuses to start and exits 2. On a datagram (UDP) socket it
// passed or bound it echoes every datagram back to its sender. The rpwrap binary runs it as a hidden subcommand:
//
//	$ rpwrap --listen 127.0.0.1:8080 --ready notify -- rpwrap serve-demo -ready-delay 500ms
//	$ curl http://127.0.0.1:8080/
//	gen=1 pid=4242
//
// which calls
//
//	os.Exit(demoserver.Main(os.Args[2:]))
//
// Its handlers:
//
//	/                      200 "gen=<RPWRAP_GENERATION> pid=<pid>\n"
//	/slow?ms=N             waits N ms (at most 60000), then 200
//	/download?bytes=N&rate=B  sends N bytes (at most 1 GiB) at B bytes/s
//	                       (0 or absent: as fast as possible; at most 60 s in all)
package demoserver
