//go:build linux

package docker

import (
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/internal/testutil"
)

// debianRestarts is how many times each example is restarted: few, the
// rows are slow.
const debianRestarts = 3

// exampleRow is one of the repository's example Dockerfiles.
type exampleRow struct {
	name string
	dir  string   // examples/DIR
	caps []string // --cap-add on top of Docker's defaults
	path string   // a path that answers 200
	// prepare edits the example's files in ctx (a copy) for a server on
	// addr and returns the docker run flags it needs.
	prepare func(t *testing.T, ctx, addr string) []string
}

var exampleRows = []exampleRow{
	{"apache", "apache", nil, "/", apacheRun},
	// Bind interception reads the server's socket with pidfd_getfd, which
	// Docker's default seccomp profile allows with CAP_SYS_PTRACE only.
	{"apache/sys_ptrace", "apache", []string{"SYS_PTRACE"}, "/", apacheRun},
	{"nginx", "nginx", nil, "/index.nginx-debian.html", func(t *testing.T, ctx, addr string) []string {
		edit(t, filepath.Join(ctx, "examples/nginx/nginx.conf"), "listen 0.0.0.0:80;", "listen "+addr+";")
		return nil
	}},
	{"haproxy", "haproxy", nil, "/", func(t *testing.T, ctx, addr string) []string {
		edit(t, filepath.Join(ctx, "examples/haproxy/haproxy.cfg"), "server app1 127.0.0.1:8081", "server app1 "+startBackend(t))
		return nil
	}},
}

func apacheRun(t *testing.T, ctx, addr string) []string {
	return []string{"-e", "APACHE_LISTEN=" + addr}
}

// The example Dockerfiles (Apache, nginx, HAProxy on Debian bookworm) run
// with rpwrap as PID 1, Docker's default capabilities and seccomp profile
// and the host's network: each server is restarted with `docker exec ...
// rpwrap ctl restart` under light load without one failed request, and
// `docker stop` ends it with the server's status and leaves nothing behind.
//
// There is no registry here: the base image is a debootstrap rootfs
// imported as debian:bookworm-slim, and the Dockerfiles' first stage (go
// build in golang:1.26-bookworm) is replaced by the static rpwrap this run
// built; their final stage runs as written, apt-get included.
func TestExampleDockerfilesRestartUnderLoadInDefaultContainer(t *testing.T) {
	requireSlow(t)
	d := requireDocker(t)
	begin := time.Now()
	t.Cleanup(func() { d.pruneImages(t) })
	baseImage(t, d)
	t.Logf("base image ready after %v", time.Since(begin).Round(time.Millisecond))
	for _, row := range exampleRows {
		t.Run(row.name, func(t *testing.T) { testExampleRow(t, d, row) })
	}
	t.Logf("whole test: %v", time.Since(begin).Round(time.Millisecond))
}

// requireSlow skips a slow test unless RPWRAP_TEST_SLOW=1, CI=true or
// RPWRAP_TEST_STRICT=1 asks for it.
func requireSlow(t *testing.T) {
	t.Helper()
	if os.Getenv("RPWRAP_TEST_SLOW") == "1" || os.Getenv("CI") == "true" || testutil.Strict() {
		return
	}
	t.Skip("slow (debootstrap, apt-get in docker build, a few minutes): set RPWRAP_TEST_SLOW=1 to run it; CI runs it")
}

func testExampleRow(t *testing.T, d *daemon, row exampleRow) {
	begin := time.Now()
	addr := freeAddr(t)
	ctx := exampleContext(t, row.dir)
	extra := append([]string{"-e", "RPWRAP_LISTEN=" + addr}, row.prepare(t, ctx, addr)...)
	for _, c := range row.caps {
		extra = append(extra, "--cap-add", c)
	}
	image := "rpwrap-test-" + row.dir + ":latest"
	d.build(t, ctx, image)
	c := startContainer(t, d, runSpec{image: image, rpwrap: "/usr/local/bin/rpwrap", addr: addr, path: row.path, extra: extra})
	c.requireSelector("cbpf")
	r := c.restartUnderLoad(debianRestarts, 2)
	c.stop(-1)
	t.Logf("row %s: %d restarts, %d requests sent, %d failed, %v", row.name, r.restarts, r.res.Sent, r.res.Failed(), time.Since(begin).Round(time.Millisecond))
}

// exampleContext makes a build context for examples/NAME/Dockerfile: the
// example's files at their repository paths, the static rpwrap, and the
// Dockerfile's final stage with rpwrap copied from the context instead of
// from the build stage.
func exampleContext(t *testing.T, name string) string {
	t.Helper()
	ctx := t.TempDir()
	src := filepath.Join("..", name)
	dst := filepath.Join(ctx, "examples", name)
	must(t, os.MkdirAll(dst, 0o755))
	ents, err := os.ReadDir(src)
	must(t, err)
	for _, e := range ents {
		if e.Type().IsRegular() {
			must(t, copyFile(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name()), 0o644))
		}
	}
	must(t, copyFile(rpwrapBin, filepath.Join(ctx, "rpwrap"), 0o755))
	text := string(readFile(t, filepath.Join(src, "Dockerfile")))
	const build, final = "RUN CGO_ENABLED=0 go build -o /rpwrap ./cmd/rpwrap\n", "\nFROM debian:bookworm-slim\n"
	i := strings.Index(text, final)
	if !strings.Contains(text, build) || i < 0 {
		t.Fatalf("examples/%s/Dockerfile no longer builds rpwrap with %q in a stage before %q: update the test", name, build, final)
	}
	must(t, os.WriteFile(filepath.Join(ctx, "Dockerfile"), []byte(text[i+1:]), 0o644))
	edit(t, filepath.Join(ctx, "Dockerfile"), "COPY --from=build /rpwrap /usr/local/bin/rpwrap", "COPY rpwrap /usr/local/bin/rpwrap")
	return ctx
}

// edit replaces old by new in the file path; old must occur, so that the
// test runs the example and not a stale copy of it.
func edit(t *testing.T, path, old, new string) {
	t.Helper()
	text := string(readFile(t, path))
	if !strings.Contains(text, old) {
		t.Fatalf("%s no longer contains %q: update the test", path, old)
	}
	must(t, os.WriteFile(path, []byte(strings.ReplaceAll(text, old, new)), 0o644))
}

// startBackend serves "ok\n" on a free port of 127.0.0.1 until the test
// ends: HAProxy's backend, reached from the container over the host's
// network.
func startBackend(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	must(t, err)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	must(t, err)
	return b
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
