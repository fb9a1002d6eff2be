// Command bench is rpwrap's zero-downtime benchmark: it restarts the same
// server (the built-in socket-activated demo server, `rpwrap serve-demo`)
// under the same load with several restart strategies, side by side, and
// counts every request the load sent and how it ended.
//
// Strategies: stop-start (stop the old process, start the new one),
// reuseport-overlap (the new process binds its own SO_REUSEPORT socket,
// then the old one gets SIGTERM; socket(7)), rpwrap-cbpf and rpwrap-ebpf
// (rpwrap with each selector, restarted through its control socket).
// Scenarios: healthy, stuck (the predecessor hangs with connections in its
// accept queue) and slow-start (the successor needs 2 s to be ready). Load
// shapes: closed loop with a new connection per request, open loop at a
// fixed rate, and keep-alive connections.
//
// It writes a table on stdout, results.json and one SVG timeline per
// strategy into -out, each with the command, kernel, CPU and date. It
// needs root (the eBPF selector) and the go tool (it builds rpwrap unless
// -rpwrap names a binary); it sends traffic to 127.0.0.1 only, and every
// load is bounded in time.
//
// With -servers it restarts Debian's Apache, nginx and HAProxy instead,
// each with its own reload mechanisms (Apache USR1, HUP, stop+start, two
// reuseport Apaches; nginx HUP, binary upgrade, stop+start; HAProxy -W
// USR2, -sf -x, -sf, stop+start) and with rpwrap around it (its route for
// that server, eBPF and cBPF), alternated in one run, in three scenarios:
// healthy, the old generation hung (SIGSTOP, at the restart's trigger)
// and a configuration the server refuses. Each restart installs a fresh
// copy of the binary and a new configuration number, which every response
// carries, so the table says what the restart replaced.
//
// Example:
//
//	$ go run ./bench -servers -quick
//	$ go run ./bench -quick
//	$ go run ./bench -out bench/results
//	$ go run ./bench -soak
package main
