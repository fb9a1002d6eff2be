//go:build linux

package docker

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// scratchRestarts is how many times each scratch row restarts its server.
const scratchRestarts = 5

// scratchRow is one way to run the scratch image.
type scratchRow struct {
	name     string
	pass     string   // rpwrap's --pass
	caps     []string // --cap-add on top of Docker's defaults
	selector string   // the selector rpwrap must choose
	bind     bool     // the server binds its address itself (serve-demo -bind)
}

var scratchRows = []scratchRow{
	{name: "listen-fds", pass: "listen-fds", selector: "cbpf"},
	{name: "bind", pass: "bind", selector: "cbpf", bind: true},
	{name: "listen-fds/ebpf", pass: "listen-fds", caps: []string{"SYS_ADMIN", "NET_ADMIN"}, selector: "ebpf"},
	// bind interception reads the server's socket with pidfd_getfd, which
	// Docker's default seccomp profile allows with CAP_SYS_PTRACE only.
	{name: "bind/sys_ptrace", pass: "bind", caps: []string{"SYS_PTRACE"}, selector: "cbpf", bind: true},
}

// In a FROM scratch image, with rpwrap as ENTRYPOINT (PID 1), Docker's
// default capabilities and seccomp profile and the host's network, the
// server is restarted five times with `docker exec ... rpwrap ctl restart`
// under load from the host without one failed request; `docker stop` then
// ends the container with the server's exit status and leaves nothing
// behind. With the defaults rpwrap uses the classic-BPF selector; with
// SYS_ADMIN and NET_ADMIN it uses eBPF. Both routes run: sockets passed
// (listen-fds) and a server that binds its own (bind).
func TestScratchImageRestartsUnderLoadInDefaultContainer(t *testing.T) {
	d := requireDocker(t)
	begin := time.Now()
	t.Cleanup(func() { d.pruneImages(t) })
	image := buildScratchImage(t, d)
	for _, row := range scratchRows {
		t.Run(row.name, func(t *testing.T) { testScratchRow(t, d, image, row) })
	}
	t.Logf("whole test: %v", time.Since(begin).Round(time.Millisecond))
}

var (
	scratchOnce  sync.Once
	scratchImage string
	scratchErr   error
)

// buildScratchImage builds Dockerfile.scratch with the static rpwrap, once
// per run.
func buildScratchImage(t *testing.T, d *daemon) string {
	t.Helper()
	scratchOnce.Do(func() {
		dir := t.TempDir()
		if scratchErr = copyFile(rpwrapBin, filepath.Join(dir, "rpwrap"), 0o755); scratchErr != nil {
			return
		}
		if scratchErr = copyFile("Dockerfile.scratch", filepath.Join(dir, "Dockerfile"), 0o644); scratchErr != nil {
			return
		}
		scratchImage = "rpwrap-test-scratch:latest"
		if out, err := d.tryIn(dir, 5*time.Minute, "build", "-q", "--label", imageLabel, "-t", scratchImage, "."); err != nil {
			scratchErr = fmt.Errorf("build the scratch image: %w\n%s", err, out)
		}
	})
	if scratchErr != nil {
		t.Fatal(scratchErr)
	}
	return scratchImage
}

func testScratchRow(t *testing.T, d *daemon, image string, row scratchRow) {
	begin := time.Now()
	addr := freeAddr(t)
	extra := []string{"-e", "RPWRAP_LISTEN=" + addr, "-e", "RPWRAP_PASS=" + row.pass}
	for _, c := range row.caps {
		extra = append(extra, "--cap-add", c)
	}
	// A graceful stop gives requests in flight 2 s, then exits 1: the
	// status docker stop must end the container with.
	cmd := []string{"/rpwrap", "serve-demo", "-shutdown-timeout", "2s"}
	if row.bind {
		cmd = append(cmd, "-bind", addr)
	}
	c := startContainer(t, d, runSpec{image: image, rpwrap: "/rpwrap", addr: addr, path: "/", extra: extra, cmd: cmd})
	c.requireSelector(row.selector)
	r := c.restartUnderLoad(scratchRestarts, 4)

	held := holdDownload(t, addr)
	defer held.Close()
	c.stop(1)
	t.Logf("row %s: %d restarts, %d requests sent, %d failed, %v", row.name, r.restarts, r.res.Sent, r.res.Failed(), time.Since(begin).Round(time.Millisecond))
}

// holdDownload starts a 50 s download from the demo server and returns once
// its response headers came: the server has accepted it, and it stays in
// flight past any graceful stop's 2 s.
func holdDownload(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp4", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(eventTimeout))
	fmt.Fprintf(conn, "GET /download?bytes=500000&rate=10000 HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", addr)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		conn.Close()
		t.Fatalf("start a held download: %v (%v)", err, resp)
	}
	return conn
}

func copyFile(from, to string, mode os.FileMode) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, mode)
}
