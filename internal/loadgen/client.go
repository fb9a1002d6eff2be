package loadgen

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"
)

// client sends requests one at a time, over a new connection each or over
// one kept-alive connection.
type client struct {
	target    string
	request   []byte
	keepAlive bool
	conn      net.Conn // nil when no connection is open
	counter   countingReader
	r         *bufio.Reader // reads counter, which reads conn
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func newClient(cfg Config) *client {
	req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: rpwrap-loadgen\r\n", cfg.Path, cfg.Target)
	if !cfg.KeepAlive {
		req += "Connection: close\r\n"
	}
	return &client{
		target:    cfg.Target,
		request:   []byte(req + "\r\n"),
		keepAlive: cfg.KeepAlive,
		r:         bufio.NewReaderSize(nil, 4096),
	}
}

// do sends one request and reads the whole response, all before deadline.
// It returns nil for a whole 200 response, or the error that classify sorts.
func (c *client) do(deadline time.Time) error {
	reused, before := c.conn != nil, c.counter.n
	if !reused {
		if err := c.dial(deadline); err != nil {
			return err
		}
	}
	c.conn.SetDeadline(deadline)
	if _, err := c.conn.Write(c.request); err != nil {
		c.close()
		return &requestError{err: err, idleClosed: reused && idleClose(err)}
	}
	reusable, err := readResponse(c.r)
	if err != nil && !isStatus(err) || !reusable || !c.keepAlive {
		c.close()
	}
	if err != nil {
		nothing := c.counter.n == before
		return &requestError{err: err, idleClosed: reused && nothing && idleClose(err)}
	}
	return nil
}

func (c *client) dial(deadline time.Time) error {
	d := net.Dialer{Deadline: deadline}
	conn, err := d.Dial("tcp", c.target)
	if err != nil {
		return err
	}
	c.conn = conn
	c.counter.r = conn
	c.r.Reset(&c.counter)
	return nil
}

func (c *client) close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

// idleClose reports whether err, when not a byte of the response came, is
// the end of the connection: what a server closing an idle keep-alive
// connection looks like to the request that raced it.
func idleClose(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func isStatus(err error) bool {
	var se statusError
	return errors.As(err, &se)
}
