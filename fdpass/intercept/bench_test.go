//go:build linux

package intercept

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/internal/testutil"
)

// BenchmarkNginx compares nginx binding its own socket (plain) with nginx
// under the filter serving on rpwrap's socket (intercepted), 16 keep-alive
// clients, in the same run.
func BenchmarkNginx(b *testing.B) {
	for _, mode := range []string{"plain", "intercepted"} {
		b.Run(mode, func(b *testing.B) {
			url := startBenchNginx(b, mode == "intercepted")
			b.ResetTimer()
			load(b, url, b.N, 16)
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
		})
	}
}

// BenchmarkNginxWrk is BenchmarkNginx with `wrk -t2 -c16 -d5s` as the
// client; run it with -benchtime=1x.
func BenchmarkNginxWrk(b *testing.B) {
	if !lookPath("wrk") {
		testutil.SkipOrFail(b, "wrk not installed (apt-get install wrk)")
	}
	for _, mode := range []string{"plain", "intercepted"} {
		b.Run(mode, func(b *testing.B) {
			url := startBenchNginx(b, mode == "intercepted")
			var sum float64
			for range b.N {
				sum += wrk(b, url)
			}
			b.ReportMetric(sum/float64(b.N), "req/s")
		})
	}
}

func startBenchNginx(b *testing.B, intercepted bool) string {
	testutil.RequireRoot(b)
	if _, err := os.Stat(nginx.bin); err != nil {
		testutil.SkipOrFail(b, "nginx not installed")
	}
	dir := serverDir(b)
	if intercepted {
		m, _ := newManagedTCP(b)
		argv, env := nginx.setup(b, dir, m.Addr.Port())
		c := startFilteredEnv(b, env, "", io.Discard, argv...)
		c.serve(m)
		b.Cleanup(func() { c.cmd.Process.Signal(syscall.SIGTERM); c.wait() })
		url := fmt.Sprintf("http://%s/", m.Addr)
		if getOK(b, url, 1) != 1 {
			b.Fatal("intercepted nginx does not answer")
		}
		return url
	}
	port := freePort(b)
	argv, _ := nginx.setup(b, dir, port)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	must(b, cmd.Start())
	b.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	waitListening(b, port)
	return url
}

// freePort returns a port the kernel had free a moment ago.
func freePort(b testing.TB) uint16 {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	must(b, err)
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

// waitListening polls until something accepts on port: a server that binds
// its own socket gives no event to wait for (bounded: 20 s).
func waitListening(b testing.TB, port uint16) {
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		if c, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.Fatalf("nothing listens on port %d after 20s", port)
}

// load sends n GETs over conc keep-alive connections.
func load(b *testing.B, url string, n, conc int) {
	tr := &http.Transport{MaxIdleConnsPerHost: conc}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: eventTimeout}
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				resp, err := client.Get(url)
				if err != nil {
					failed.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if f := failed.Load(); f != 0 {
		b.Errorf("%d of %d requests failed", f, n)
	}
}

// wrk runs wrk -t2 -c16 -d5s against url and returns its Requests/sec.
func wrk(b *testing.B, url string) float64 {
	out, err := exec.Command("wrk", "-t2", "-c16", "-d5s", url).CombinedOutput()
	if err != nil {
		b.Fatalf("wrk: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "Non-2xx") || strings.Contains(string(out), "Socket errors") {
		b.Errorf("wrk saw errors:\n%s", out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "Requests/sec:"); ok {
			r, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			must(b, err)
			return r
		}
	}
	b.Fatalf("no Requests/sec in wrk's output:\n%s", out)
	return 0
}
