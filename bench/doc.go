// Command bench is rpwrap's zero-downtime benchmark: it restarts the same
// server (the built-in socket-activated demo server, `rpwrap serve-demo`)
// under the same load with several restart strategies, side by side, and
// counts every request the load sent and how it ended.
//
// It has two halves. The first, the default, restarts the demo server.
// Strategies: stop-start (stop the old process, start the new one),
// reuseport-overlap (the new process binds its own SO_REUSEPORT socket,
// then the old one gets SIGTERM; socket(7)), shared-socket (one listening
// socket created once and passed to every generation by socket
// activation; the new one starts while the old one still accepts from the
// same queue, and the old one gets SIGTERM once the new one is ready: the
// method of systemd socket units, einhorn, tableflip, HAProxy -x and
// nginx's binary upgrade), rpwrap-cbpf and rpwrap-ebpf (rpwrap with each
// selector, restarted through its control socket). Scenarios: healthy,
// stuck (the predecessor hangs with connections in its accept queue),
// slow-start (the successor needs 2 s to be ready), crash-after-accept
// (every successor accepts at once, holds what it accepted, and crashes
// before it is ready), bad-config (every successor exits at start) and
// long-lived (keep-alive clients whose requests take 500 ms hold their
// connections through the restarts). Load shapes: closed loop with a new
// connection per request, open loop at a fixed rate (a request that falls
// due while every client is busy is sent late, or counted lost once the
// timeout has passed, so the open loop's losses are not capped by its
// clients), and keep-alive connections. Then the UDP rows: every strategy
// restarts the demo server on a UDP socket (rpwrap with its flow table at
// the default) under a datagram load, udp-echo (clients each on its own
// socket, each sending a datagram and waiting up to 1 s for its echo),
// healthy, crash-after-accept and bad-config; each datagram is counted
// answered, lost or refused, and the losses per restart (that load marks
// no restart windows). -udp runs the UDP rows only. -storm restarts
// rpwrap every 300 ms.
//
// It writes a table on stdout, results.json and one SVG timeline per
// strategy into -out, each with the command, kernel, CPU and date. It
// needs root (the eBPF selector) and the go tool (it builds rpwrap unless
// -rpwrap names a binary); it sends traffic to 127.0.0.1 only, and every
// load is bounded in time.
//
// The second half, -servers, restarts Debian's Apache, nginx and HAProxy,
// on the configurations of examples/, each with its own reload mechanisms
// (Apache USR1, HUP, stop+start, two reuseport Apaches; nginx HUP, binary
// upgrade, stop+start; HAProxy -W USR2, -sf -x, -sf, stop+start) and with
// rpwrap around it (its route for that server, eBPF and cBPF), alternated
// in one run, in three scenarios:
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
//	$ go run ./bench -storm -out bench/results/headline/storm
//	$ go run ./bench -soak
package main
