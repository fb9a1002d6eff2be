package demoserver

import (
	"bytes"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Bounds on what one request may ask for, so that no request outlives a test.
const (
	maxSlow          = 60 * time.Second
	maxDownloadBytes = 1 << 30
	maxDownloadTime  = 60 * time.Second
	downloadChunk    = 16 << 10
)

// newMux returns the server's handlers; gen and pid are what "/" answers.
func newMux(gen string, pid int) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/{$}", rootHandler(gen, pid))
	mux.HandleFunc("/slow", slowHandler)
	mux.HandleFunc("/download", downloadHandler)
	return mux
}

func rootHandler(gen string, pid int) http.HandlerFunc {
	body := fmt.Sprintf("gen=%s pid=%d\n", gen, pid)
	return func(w http.ResponseWriter, r *http.Request) {
		writeText(w, http.StatusOK, body)
	}
}

// slowHandler answers /slow?ms=N after N milliseconds, or earlier with no
// answer when the client goes away.
func slowHandler(w http.ResponseWriter, r *http.Request) {
	ms, err := intParam(r, "ms", 0, maxSlow.Milliseconds())
	if err != nil {
		writeText(w, http.StatusBadRequest, err.Error()+"\n")
		return
	}
	t := time.NewTimer(time.Duration(ms) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
		writeText(w, http.StatusOK, fmt.Sprintf("slept %d ms\n", ms))
	case <-r.Context().Done():
	}
}

// downloadHandler answers /download?bytes=N&rate=B with N bytes sent at B
// bytes per second (rate 0: as fast as the connection takes them).
func downloadHandler(w http.ResponseWriter, r *http.Request) {
	n, rate, err := downloadParams(r)
	if err != nil {
		writeText(w, http.StatusBadRequest, err.Error()+"\n")
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	w.WriteHeader(http.StatusOK)
	sendPaced(w, r, n, rate)
}

func downloadParams(r *http.Request) (n, rate int64, err error) {
	if n, err = intParam(r, "bytes", 0, maxDownloadBytes); err != nil {
		return 0, 0, err
	}
	if rate, err = intParam(r, "rate", 0, maxDownloadBytes); err != nil {
		return 0, 0, err
	}
	if rate > 0 && time.Duration(n/rate)*time.Second > maxDownloadTime {
		return 0, 0, fmt.Errorf("bytes=%d at rate=%d takes longer than %v: ask for less or faster", n, rate, maxDownloadTime)
	}
	return n, rate, nil
}

// sendPaced writes n bytes to w, never ahead of rate bytes per second since
// it started. It stops early when the client goes away.
func sendPaced(w http.ResponseWriter, r *http.Request, n, rate int64) {
	chunk := int64(downloadChunk)
	if rate > 0 {
		chunk = min(chunk, max(rate/20, 1)) // about 20 writes a second
	}
	buf := bytes.Repeat([]byte{'x'}, int(chunk))
	rc := http.NewResponseController(w)
	start := time.Now()
	for sent := int64(0); sent < n; {
		k := min(chunk, n-sent)
		if _, err := w.Write(buf[:k]); err != nil {
			return
		}
		sent += k
		if rate == 0 || sent == n {
			continue
		}
		if rc.Flush() != nil || !sleepUntil(r, start.Add(time.Duration(sent*int64(time.Second)/rate))) {
			return
		}
	}
}

// sleepUntil waits until t and reports false if the client went away first.
func sleepUntil(r *http.Request, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return true
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-r.Context().Done():
		return false
	}
}

// intParam reads the query parameter name as an integer in [lo, hi]; absent
// means lo.
func intParam(r *http.Request, name string, lo, hi int64) (int64, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return lo, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < lo || v > hi {
		return 0, fmt.Errorf("%s=%q: want an integer from %d to %d", name, s, lo, hi)
	}
	return v, nil
}

func writeText(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}
