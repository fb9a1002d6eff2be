//go:build linux

package examples

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/internal/loadgen"
	"github.com/rpwrap/rpwrap/internal/loadtest"
)

// target is one address clients ask, in one protocol.
type target struct {
	scheme string // http, https, udp (echo), dns+udp, dns+tcp
	addr   string // host:port
	path   string // http and https
}

func (tg target) String() string { return tg.scheme + "://" + tg.addr + tg.path }

func parseTargets(t *testing.T, clients []string) []target {
	t.Helper()
	var tgs []target
	for _, c := range clients {
		u, err := url.Parse(c)
		must(t, err)
		switch u.Scheme {
		case "http", "https", "udp", "dns+udp", "dns+tcp":
		default:
			t.Fatalf("client %q: unknown scheme %q", c, u.Scheme)
		}
		tgs = append(tgs, target{scheme: u.Scheme, addr: u.Host, path: u.Path})
	}
	return tgs
}

func (tg target) network() string {
	if tg.scheme == "udp" || tg.scheme == "dns+udp" {
		return "udp"
	}
	return "tcp"
}

// dial opens the request's connection (or UDP socket) to tg.
func (tg target) dial(deadline time.Time) (net.Conn, error) {
	d := net.Dialer{Deadline: deadline}
	return d.Dial(tg.network(), tg.addr)
}

// exchange sends one request on c and reads its whole answer, all before
// deadline; nil means a complete, correct answer.
func (tg target) exchange(c net.Conn, deadline time.Time) error {
	c.SetDeadline(deadline)
	switch tg.scheme {
	case "http":
		return httpExchange(c, tg)
	case "https":
		tc := tls.Client(c, snakeoilTLS())
		if err := tc.Handshake(); err != nil {
			return fmt.Errorf("tls handshake: %w", err)
		}
		return httpExchange(tc, tg)
	case "udp":
		return echoExchange(c)
	case "dns+udp":
		return dnsExchange(c, false)
	default: // dns+tcp
		return dnsExchange(c, true)
	}
}

// request is one whole request on a connection of its own.
func (tg target) request(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	c, err := tg.dial(deadline)
	if err != nil {
		return err
	}
	defer c.Close()
	return tg.exchange(c, deadline)
}

func httpExchange(c net.Conn, tg target) error {
	req := "GET " + tg.path + " HTTP/1.1\r\nHost: " + tg.addr + "\r\nUser-Agent: rpwrap-matrix\r\nConnection: close\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.ReadAll(resp.Body); err != nil {
		return fmt.Errorf("read body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	return nil
}

func echoExchange(c net.Conn) error {
	msg := fmt.Appendf(nil, "echo %016x", rand.Uint64())
	if _, err := c.Write(msg); err != nil {
		return err
	}
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	if !bytes.Equal(buf[:n], msg) {
		return fmt.Errorf("echo %q, want %q", buf[:n], msg)
	}
	return nil
}

// dnsName is the name every DNS request asks for; dnsmasq's --address
// answers it with dnsAnswer.
const dnsName = "matrix.test"

var dnsAnswer = net.IPv4(192, 0, 2, 1).To4()

// dnsExchange asks for dnsName's A record (RFC 1035 §4; over TCP with the
// two-byte length of §4.2.2) and checks the answer is dnsAnswer.
func dnsExchange(c net.Conn, overTCP bool) error {
	id := uint16(rand.Uint32())
	q := binary.BigEndian.AppendUint16(nil, id)
	q = append(q, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0) // RD; one question
	for _, label := range strings.Split(dnsName, ".") {
		q = append(append(q, byte(len(label))), label...)
	}
	q = append(q, 0, 0, 1, 0, 1) // root; type A, class IN
	if overTCP {
		q = append(binary.BigEndian.AppendUint16(nil, uint16(len(q))), q...)
	}
	if _, err := c.Write(q); err != nil {
		return err
	}
	var ans []byte
	if overTCP {
		var n [2]byte
		if _, err := io.ReadFull(c, n[:]); err != nil {
			return err
		}
		ans = make([]byte, binary.BigEndian.Uint16(n[:]))
		if _, err := io.ReadFull(c, ans); err != nil {
			return err
		}
	} else {
		ans = make([]byte, 512)
		n, err := c.Read(ans)
		if err != nil {
			return err
		}
		ans = ans[:n]
	}
	switch {
	case len(ans) < 12 || binary.BigEndian.Uint16(ans) != id || ans[2]&0x80 == 0:
		return fmt.Errorf("dns: not an answer to query %#04x: % x", id, ans)
	case ans[3]&0x0f != 0 || binary.BigEndian.Uint16(ans[6:]) != 1 || !bytes.HasSuffix(ans, dnsAnswer):
		return fmt.Errorf("dns: answer to %s is not one A record %v: % x", dnsName, dnsAnswer, ans)
	}
	return nil
}

// snakeoilTLS trusts Debian's self-signed snakeoil certificate (ssl-cert),
// issued to localhost.
var snakeoilTLS = sync.OnceValue(func() *tls.Config {
	pool := x509.NewCertPool()
	if b, err := os.ReadFile(snakeoilCert); err == nil {
		pool.AppendCertsFromPEM(b)
	}
	return &tls.Config{RootCAs: pool, ServerName: "localhost"}
})

const (
	snakeoilCert = "/etc/ssl/certs/ssl-cert-snakeoil.pem"
	snakeoilKey  = "/etc/ssl/private/ssl-cert-snakeoil.key"
)

// targetLoad is a light load on one target, counting every request once.
type targetLoad struct {
	tg   target
	http *loadgen.Load // plain HTTP goes through loadgen
	own  *probeLoad    // every other protocol
}

// startTargetLoads starts a load on each target, each stopped by the
// test's cleanup at the latest.
func startTargetLoads(t *testing.T, tgs []target) []*targetLoad {
	t.Helper()
	loads := make([]*targetLoad, len(tgs))
	for i, tg := range tgs {
		loads[i] = &targetLoad{tg: tg}
		if tg.scheme == "http" {
			ld, err := loadgen.Start(context.Background(), loadgen.Config{Target: tg.addr, Path: tg.path,
				Clients: matrixWorkers, Rate: matrixRate, Duration: loadDuration, Timeout: requestTimeout})
			must(t, err)
			loads[i].http = ld
		} else {
			loads[i].own = startProbeLoad(tg)
		}
		t.Cleanup(func() { loads[i].finish() })
	}
	return loads
}

func (ld *targetLoad) sent() int64 {
	if ld.http != nil {
		return ld.http.Progress().Sent
	}
	return ld.own.sent.Load()
}

// finish stops the load and returns its counts once every request ended.
func (ld *targetLoad) finish() loadgen.Result {
	if ld.http != nil {
		ld.http.Stop()
		return ld.http.Wait()
	}
	return ld.own.finish()
}

// waitEachSent waits until every load has sent n more requests.
func waitEachSent(t *testing.T, loads []*targetLoad, n int64) {
	t.Helper()
	for _, ld := range loads {
		want, deadline := ld.sent()+n, time.Now().Add(eventTimeout)
		for ld.sent() < want {
			if time.Now().After(deadline) {
				t.Fatalf("load on %s stalled at %d requests", ld.tg, ld.sent())
			}
			time.Sleep(5 * time.Millisecond) // polling a counter; bounded above
		}
	}
}

// requireEveryAnswer stops every load and requires that each request sent
// got its whole answer.
func requireEveryAnswer(t *testing.T, loads []*targetLoad) {
	t.Helper()
	for _, ld := range loads {
		res := ld.finish()
		t.Logf("%s: %d requests sent", ld.tg, res.Sent)
		loadtest.RequireNoLoss(t, res, int64(matrixPerGen*(matrixRestarts+1)))
	}
}

// probeLoad sends requests to a target at matrixRate from matrixWorkers
// workers, each request on a connection (or UDP socket) of its own.
type probeLoad struct {
	tg    target
	stop  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
	sent  atomic.Int64
	mu    sync.Mutex
	res   loadgen.Result
	fails map[string]int64
}

func startProbeLoad(tg target) *probeLoad {
	p := &probeLoad{tg: tg, stop: make(chan struct{}), fails: map[string]int64{}}
	end := time.Now().Add(loadDuration)
	p.wg.Add(matrixWorkers)
	for range matrixWorkers {
		go p.work(end)
	}
	return p
}

func (p *probeLoad) work(end time.Time) {
	defer p.wg.Done()
	tick := time.NewTicker(time.Second * matrixWorkers / matrixRate)
	defer tick.Stop()
	for time.Now().Before(end) {
		select {
		case <-p.stop:
			return
		case <-tick.C:
		}
		p.sent.Add(1)
		start := time.Now()
		err := p.tg.request(requestTimeout)
		p.record(time.Since(start), err)
	}
}

func (p *probeLoad) record(latency time.Duration, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.res.Sent++
	switch {
	case err == nil:
		p.res.OK++
		p.res.Latency.Record(latency)
		return
	case errors.Is(err, syscall.ECONNREFUSED):
		p.res.Refused++
	case errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE):
		p.res.Reset++
	case errors.Is(err, os.ErrDeadlineExceeded):
		p.res.Timeout++
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		p.res.ShortRead++
	default:
		p.res.Other++
	}
	p.fails[err.Error()]++
}

func (p *probeLoad) finish() loadgen.Result {
	p.once.Do(func() { close(p.stop) })
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	res := p.res
	res.Errors = nil
	for msg, n := range p.fails {
		res.Errors = append(res.Errors, fmt.Sprintf("%dx %s", n, msg))
	}
	sort.Strings(res.Errors)
	return res
}

// lateClient connected (or opened its UDP socket) before a restart and
// sends its request after the flip.
type lateClient struct {
	tg   target
	conn net.Conn
	err  error
}

// lateAnswer is how a late client's request ended.
type lateAnswer struct {
	tg      target
	restart int
	latency time.Duration // from sending the request to the whole answer
	err     error
}

// dialLate connects one late client to each load's target.
func dialLate(loads []*targetLoad) []lateClient {
	lcs := make([]lateClient, len(loads))
	for i, ld := range loads {
		lcs[i].tg = ld.tg
		lcs[i].conn, lcs[i].err = ld.tg.dial(time.Now().Add(requestTimeout))
	}
	return lcs
}

// answerLate sends each late client's request, all at once, and waits for
// their answers, at most lateBound each.
func answerLate(lcs []lateClient, restart int) []lateAnswer {
	out := make([]lateAnswer, len(lcs))
	var wg sync.WaitGroup
	for i, lc := range lcs {
		out[i] = lateAnswer{tg: lc.tg, restart: restart, err: lc.err}
		if lc.err != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer lc.conn.Close()
			start := time.Now()
			out[i].err = lc.tg.exchange(lc.conn, start.Add(lateBound))
			out[i].latency = time.Since(start)
		}()
	}
	wg.Wait()
	return out
}

// requireLateAnswers logs the slowest late answer per target and fails for
// every late request not answered within lateBound.
func requireLateAnswers(t *testing.T, answers []lateAnswer) {
	t.Helper()
	slowest := map[string]time.Duration{}
	var order []string
	for _, a := range answers {
		key := a.tg.String()
		if _, ok := slowest[key]; !ok {
			order = append(order, key)
			slowest[key] = -1 // none answered yet
		}
		if a.err != nil {
			t.Errorf("%s: request sent just after restart %d's flip, on a connection made before it: not answered (%v after sending): %v",
				key, a.restart, a.latency.Round(time.Millisecond), a.err)
			continue
		}
		slowest[key] = max(slowest[key], a.latency)
	}
	for _, key := range order {
		if slowest[key] < 0 {
			t.Logf("%s: no request sent just after a flip was answered", key)
			continue
		}
		t.Logf("%s: slowest answer to a request sent just after a flip on a connection made before it: %v", key, slowest[key].Round(time.Microsecond))
	}
}
