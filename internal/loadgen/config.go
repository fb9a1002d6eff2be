package loadgen

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// Config says what load to send. Target and at least one of Requests and
// Duration are required; the rest have defaults.
type Config struct {
	Target   string        // host:port on loopback, e.g. "127.0.0.1:8080"
	Path     string        // request path; default "/"
	Clients  int           // concurrent workers; default 1
	Requests int           // total requests to send; 0: as many as Duration allows
	Duration time.Duration // no request is started (or scheduled, with Rate) after this; 0: until Requests

	// Rate > 0 makes the load open-loop: request i is due at i/Rate seconds
	// after the start, whichever worker is free takes it, and its latency is
	// measured from when it was due, not from when it was sent, so a stall
	// shows in the latencies instead of hiding in fewer requests
	// (no coordinated omission). Clients bounds the requests in flight.
	// Rate == 0: closed loop, each worker sends its next request as soon as
	// the previous one is done.
	Rate float64

	KeepAlive bool          // false: a new TCP connection per request (what restarts stress)
	Timeout   time.Duration // per request, from connect to the last byte; default 5s
	Bucket    time.Duration // width of a Timeline bucket; default 100ms
}

// Defaults for the Config fields left zero.
const (
	DefaultTimeout = 5 * time.Second
	DefaultBucket  = 100 * time.Millisecond
)

// withDefaults fills in the defaults, or fails on a Config that cannot run.
func (c Config) withDefaults() (Config, error) {
	if c.Path == "" {
		c.Path = "/"
	}
	if c.Clients == 0 {
		c.Clients = 1
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Bucket == 0 {
		c.Bucket = DefaultBucket
	}
	return c, c.validate()
}

func (c Config) validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Target); err != nil {
		errs = append(errs, fmt.Errorf("target %q: want host:port: %w", c.Target, err))
	}
	if !strings.HasPrefix(c.Path, "/") || strings.ContainsAny(c.Path, " \r\n") {
		errs = append(errs, fmt.Errorf("path %q: want an absolute path without spaces or line breaks", c.Path))
	}
	if c.Requests <= 0 && c.Duration <= 0 {
		errs = append(errs, errors.New("neither Requests nor Duration set: the load would never end; set one or both"))
	}
	if c.Requests < 0 || c.Duration < 0 || c.Clients < 0 || c.Rate < 0 || c.Timeout < 0 || c.Bucket < 0 {
		errs = append(errs, errors.New("negative Requests, Duration, Clients, Rate, Timeout or Bucket"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("check load config: %w", err)
	}
	return nil
}
