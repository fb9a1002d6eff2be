//go:build linux

package supervisor

// onMainThread runs a function on the process's main thread once
// ServeMainThread serves it; nil before.
var onMainThread func(func())

// ServeMainThread makes the calling goroutine's thread the one that forks
// every server and that execs an in-place upgrade; it never returns. Call
// it from main, on the main goroutine locked to the main thread
// (runtime.LockOSThread in an init function of package main), before Run.
// PR_SET_PDEATHSIG fires when the thread that forked a child ends, and an
// execve(2) ends every thread but the caller's, which lives on as the new
// program's main thread: with the servers forked and the exec done from
// the main thread, one upgrade after another keeps them alive. Without it
// (rpwrap as a library, tests) the reaper locks a thread of its own, and
// the first upgrade works, from that thread, but the new binary must call
// ServeMainThread.
func ServeMainThread() {
	work := make(chan func())
	onMainThread = func(f func()) {
		done := make(chan struct{})
		work <- func() { f(); close(done) }
		<-done
	}
	mainThreadReady <- struct{}{}
	for f := range work {
		f()
	}
}

// mainThreadReady receives once ServeMainThread set onMainThread.
var mainThreadReady = make(chan struct{}, 1)

// WaitMainThread returns once ServeMainThread serves.
func WaitMainThread() { <-mainThreadReady }
