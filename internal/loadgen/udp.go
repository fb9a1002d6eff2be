package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// UDPConfig says what datagram load to send to an echo server. Target and
// at least one of Datagrams and Duration are required.
type UDPConfig struct {
	Target    string        // host:port on loopback
	Clients   int           // concurrent workers, each on its own socket; default 1
	Datagrams int           // total datagrams to send; 0: as many as Duration allows
	Duration  time.Duration // no datagram is sent after this; 0: until Datagrams
	Timeout   time.Duration // how long a datagram waits for its echo; default 2s
}

// UDPResult counts every datagram sent, each exactly once:
// Sent == Answered + Lost + Refused.
type UDPResult struct {
	Sent     int64
	Answered int64 // the echo came back within Timeout
	Lost     int64 // no echo within Timeout
	Refused  int64 // ICMP port unreachable (ECONNREFUSED): nothing was bound
	Late     int64 // echoes that came after their datagram was counted lost (not in Sent)
	Latency  Histogram
	Errors   []string // the first distinct errors other than a timeout
}

// Failed is the number of datagrams sent without an echo.
func (r UDPResult) Failed() int64 { return r.Lost + r.Refused }

// UDPLoad is a datagram load in progress, started by StartUDP. Its
// methods are safe for concurrent use.
type UDPLoad struct {
	cfg     UDPConfig
	start   time.Time
	ticket  atomic.Int64
	stopped chan struct{}
	stop    sync.Once
	done    chan struct{}

	mu  sync.Mutex
	res UDPResult
}

// StartUDP starts sending cfg's load in the background: each worker sends
// one datagram with a payload no other datagram has, and waits for that
// payload to come back before it sends the next (closed loop). It fails on
// a Config that cannot run, or when a worker's socket cannot be opened.
func StartUDP(ctx context.Context, cfg UDPConfig) (*UDPLoad, error) {
	if cfg.Clients == 0 {
		cfg.Clients = 1
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.Datagrams <= 0 && cfg.Duration <= 0 {
		return nil, errors.New("check udp load config: neither Datagrams nor Duration set: the load would never end; set one or both")
	}
	conns := make([]net.Conn, 0, cfg.Clients)
	for range cfg.Clients {
		c, err := net.Dial("udp", cfg.Target)
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return nil, fmt.Errorf("open udp load socket to %s: %w", cfg.Target, err)
		}
		conns = append(conns, c)
	}
	l := &UDPLoad{cfg: cfg, start: time.Now(), stopped: make(chan struct{}), done: make(chan struct{})}
	unwatch := context.AfterFunc(ctx, l.Stop)
	var workers sync.WaitGroup
	for i, c := range conns {
		workers.Add(1)
		go func() { defer workers.Done(); defer c.Close(); l.work(i, c) }()
	}
	go func() { workers.Wait(); unwatch(); close(l.done) }()
	return l, nil
}

// Stop stops the load from sending new datagrams; those in flight still
// get their Timeout.
func (l *UDPLoad) Stop() { l.stop.Do(func() { close(l.stopped) }) }

// Wait waits until every datagram has an outcome and returns the result.
func (l *UDPLoad) Wait() UDPResult {
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.res
}

// Progress returns the counts so far.
func (l *UDPLoad) Progress() Progress {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Progress{Sent: l.res.Sent, OK: l.res.Answered, Failed: l.res.Failed(), Elapsed: time.Since(l.start)}
}

// next reports whether another datagram may be sent.
func (l *UDPLoad) next() bool {
	select {
	case <-l.stopped:
		return false
	default:
	}
	if l.cfg.Duration > 0 && time.Since(l.start) >= l.cfg.Duration {
		return false
	}
	return l.cfg.Datagrams <= 0 || l.ticket.Add(1) <= int64(l.cfg.Datagrams)
}

func (l *UDPLoad) work(client int, c net.Conn) {
	buf := make([]byte, 2048)
	for seq := 0; l.next(); seq++ {
		payload := "rpwrap-udp-load " + strconv.Itoa(client) + " " + strconv.Itoa(seq)
		t0 := time.Now()
		_, err := c.Write([]byte(payload))
		if err == nil {
			err = l.awaitEcho(c, buf, payload, t0)
		}
		l.record(time.Since(t0), err)
	}
}

// awaitEcho reads until payload comes back or the timeout passes; earlier
// payloads that come back late are counted as Late and skipped.
func (l *UDPLoad) awaitEcho(c net.Conn, buf []byte, payload string, t0 time.Time) error {
	c.SetReadDeadline(t0.Add(l.cfg.Timeout))
	for {
		n, err := c.Read(buf)
		if err != nil {
			return err
		}
		if string(buf[:n]) == payload {
			return nil
		}
		l.mu.Lock()
		l.res.Late++
		l.mu.Unlock()
	}
}

func (l *UDPLoad) record(latency time.Duration, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.res.Sent++
	var ne net.Error
	switch {
	case err == nil:
		l.res.Answered++
		l.res.Latency.Record(latency)
		return
	case errors.Is(err, syscall.ECONNREFUSED):
		l.res.Refused++
	case errors.As(err, &ne) && ne.Timeout():
		l.res.Lost++
		return
	default:
		l.res.Lost++
	}
	if len(l.res.Errors) < maxErrors {
		l.res.Errors = append(l.res.Errors, err.Error())
	}
}
