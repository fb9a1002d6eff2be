//go:build linux

package fleet

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// result is one request through the balancer.
type result struct {
	at      time.Time // when it ended
	ok      bool
	release string // "v2" from "fleetserver v2 gen 3"
	host    string // HAProxy's X-Fleet-Host
	err     string
}

// load sends requests through HAProxy from this namespace, each on a new
// connection (so no client retry can hide a failure), from workers clients,
// until stopped; it keeps every result.
type load struct {
	mu      sync.Mutex
	results []result
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

func startLoad(url string, workers int) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for ctx.Err() == nil {
				l.add(get(client, url))
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	return l
}

func get(c *http.Client, url string) result {
	resp, err := c.Get(url)
	if err != nil {
		return result{at: time.Now(), err: err.Error()}
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	r := result{at: time.Now(), host: resp.Header.Get("X-Fleet-Host")}
	fields := strings.Fields(string(b))
	switch {
	case err != nil:
		r.err = err.Error()
	case resp.StatusCode != 200 || len(fields) < 2 || fields[0] != "fleetserver":
		r.err = resp.Status + ": " + strings.TrimSpace(string(b))
	default:
		r.ok, r.release = true, fields[1]
	}
	return r
}

func (l *load) add(r result) {
	l.mu.Lock()
	l.results = append(l.results, r)
	l.mu.Unlock()
}

// stop ends the load and waits for the requests in flight.
func (l *load) stop() {
	l.cancel()
	l.wg.Wait()
}

// snapshot is a copy of the results so far.
func (l *load) snapshot() []result {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]result(nil), l.results...)
}

// tally counts the results that ended in [from, to).
type tally struct {
	requests, failed int
	releases         map[string]int
	hosts            map[string]int
	errors           []string
}

func count(rs []result, from, to time.Time) tally {
	t := tally{releases: map[string]int{}, hosts: map[string]int{}}
	for _, r := range rs {
		if r.at.Before(from) || !r.at.Before(to) {
			continue
		}
		t.requests++
		if !r.ok {
			t.failed++
			if len(t.errors) < 10 {
				t.errors = append(t.errors, r.at.Format("15:04:05.000")+" "+r.err)
			}
			continue
		}
		t.releases[r.release]++
		t.hosts[r.host]++
	}
	return t
}
