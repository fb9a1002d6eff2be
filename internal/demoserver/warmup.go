package demoserver

import "net/http"

// warmUp is h, or with -crash-in-warm-up a handler that holds every
// request until the process crashes: a server that accepts connections as
// soon as it has its sockets but answers only once warmed up, and dies
// before that. The connections it accepted end unanswered with it.
func warmUp(opts options, h http.Handler) http.Handler {
	if opts.crashWarmUp <= 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // the client gave up; otherwise the exit ends it
	})
}
