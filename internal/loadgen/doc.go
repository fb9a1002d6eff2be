// Package loadgen is a bounded HTTP/1.1 load generator for loopback that
// counts the outcome of every request exactly: the figures behind "0
// connections lost across 20 restarts" in rpwrap's tests, `rpwrap demo` and
// the benchmark.
//
// It writes each GET request by hand on a plain TCP connection (connect(2),
// tcp(7)) and reads the response as RFC 9112 frames it (status line,
// Content-Length or chunked body), so that every failure keeps its kind:
// refused, reset, timed out, cut short, bad status. net/http's client would
// hide some of them: it retries idempotent requests on a reused connection
// and folds resets into generic errors. A request counts as OK only when its
// whole response came with status 200.
//
// A load is bounded by a number of requests, a duration, or both. It runs
// closed-loop (Clients workers, each sending its next request when the last
// one is done) or open-loop at a fixed Rate, where latency is measured from
// when a request was due, not when it was sent, so that a stalled server
// shows as latency and not as fewer requests (no coordinated omission).
// Latencies go into a log-linear histogram (exact counts, values within
// 1/32), overall and per timeline bucket, so that a restart's window can be
// compared with the steady state:
//
//	load, err := loadgen.Start(ctx, loadgen.Config{
//		Target: "127.0.0.1:8080", Clients: 4, Duration: 10 * time.Second,
//	})
//	if err != nil {
//		return err
//	}
//	end := load.Window("restart 1")
//	restart()
//	end()
//	res := load.Wait()
//	inside, outside := res.SplitLatency(res.Windows)
//	fmt.Printf("%d sent, %d failed; p99 %v in restarts, %v otherwise\n",
//		res.Sent, res.Failed(), inside.Quantile(0.99), outside.Quantile(0.99))
//
// Loads are meant for loopback addresses only.
package loadgen
