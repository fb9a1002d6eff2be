//go:build linux

package examples

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/internal/testutil"
)

// server is one Debian server as the tests run it under rpwrap.
type server struct {
	name  string
	bin   string
	flags []string // rpwrap's --pass and --stop-signal for it
	// setup prepares dir for a server listening on addr and returns its
	// argv and the environment it needs.
	setup func(t *testing.T, dir, addr string) (argv, env []string)
}

// slowSize is the size of the file the slow download fetches: 768 KiB at
// the example configurations' 256 KiB/s is about 3 s.
const slowSize = 768 << 10

// slowPath is the slow download's path on every server.
const slowPath = "/slow/big.bin"

var (
	apache = server{"apache", "/usr/sbin/apache2", []string{"--pass", "bind", "--stop-signal", "WINCH"}, apacheSetup}
	nginx  = server{"nginx", "/usr/sbin/nginx", []string{"--pass", "nginx", "--stop-signal", "QUIT"}, nginxSetup}
	hapx   = server{"haproxy", "/usr/sbin/haproxy", []string{"--pass", "listen-fds", "--stop-signal", "USR1"}, haproxySetup}
)

// requireServer skips the test (fails it under CI) without root or s.
func requireServer(t *testing.T, s server) {
	t.Helper()
	testutil.RequireRoot(t)
	if _, err := os.Stat(s.bin); err != nil {
		testutil.SkipOrFail(t, s.bin+" not installed (apt-get install apache2 nginx haproxy)")
	}
}

// docroot writes dir/htdocs with index.html ("ok\n") and the slow file,
// readable by unprivileged workers.
func docroot(t *testing.T, dir string) {
	slow := randomBytes(slowSize)
	must(t, os.MkdirAll(filepath.Join(dir, "htdocs", "slow"), 0o755))
	must(t, os.Chmod(filepath.Join(dir, "htdocs"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "htdocs", "index.html"), []byte("ok\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "htdocs", "slow", "big.bin"), slow, 0o644))
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{'r', 'p', 'w'})
	r.Read(b)
	return b
}

// exampleFile reads a file of this directory's examples.
func exampleFile(t *testing.T, name string) string {
	b, err := os.ReadFile(name)
	must(t, err)
	return string(b)
}

// fromExample writes the example file name to dir, with each pair of
// replacements applied; each must occur, so the test runs the example.
func fromExample(t *testing.T, dir, name string, repl ...string) string {
	text := exampleFile(t, name)
	for i := 0; i < len(repl); i += 2 {
		if !strings.Contains(text, repl[i]) {
			t.Fatalf("%s no longer contains %q: update the test", name, repl[i])
		}
		text = strings.ReplaceAll(text, repl[i], repl[i+1])
	}
	out := filepath.Join(dir, filepath.Base(name))
	must(t, os.WriteFile(out, []byte(text), 0o644))
	return out
}

// apacheSetup runs examples/apache/apache2.conf as is, with the APACHE_*
// variables that /etc/apache2/envvars would set pointing into dir.
func apacheSetup(t *testing.T, dir, addr string) ([]string, []string) {
	docroot(t, dir)
	conf, err := filepath.Abs("apache/apache2.conf")
	must(t, err)
	return []string{"/usr/sbin/apache2", "-DFOREGROUND", "-f", conf}, apacheEnv(dir, addr)
}

func apacheEnv(dir, addr string) []string {
	return []string{
		"APACHE_RUN_USER=www-data", "APACHE_RUN_GROUP=www-data",
		"APACHE_RUN_DIR=" + dir, "APACHE_LOCK_DIR=" + dir, "APACHE_LOG_DIR=" + dir,
		"APACHE_LISTEN=" + addr, "APACHE_DOCUMENT_ROOT=" + filepath.Join(dir, "htdocs"),
	}
}

// nginxSetup runs examples/nginx/nginx.conf with its address, paths and
// worker count made the test's.
func nginxSetup(t *testing.T, dir, addr string) ([]string, []string) {
	docroot(t, dir)
	conf := fromExample(t, dir, "nginx/nginx.conf",
		"listen 0.0.0.0:80;", "listen "+addr+";",
		"/run/nginx-rpwrap.pid", filepath.Join(dir, "nginx.pid"),
		"/var/log/nginx/error.log", filepath.Join(dir, "error.log"),
		"/var/www/html", filepath.Join(dir, "htdocs"),
		"worker_processes auto;", "worker_processes 2;")
	return []string{"/usr/sbin/nginx", "-e", filepath.Join(dir, "error.log"), "-c", conf, "-g", "daemon off;"}, nil
}

// haproxySetup runs examples/haproxy/haproxy.cfg in front of a backend in
// this process that serves "ok\n" and the slow file at 256 KiB/s.
func haproxySetup(t *testing.T, dir, addr string) ([]string, []string) {
	backend := startBackend(t, randomBytes(slowSize))
	conf := fromExample(t, dir, "haproxy/haproxy.cfg", "server app1 127.0.0.1:8081", "server app1 "+backend)
	return []string{"/usr/sbin/haproxy", "-db", "-f", conf}, nil
}

// startBackend serves / and slowPath on a free port of 127.0.0.1 until
// the test ends.
func startBackend(t *testing.T, slow []byte) string {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	must(t, err)
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc(slowPath, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(len(slow)))
		const chunk = 32 << 10
		for rest := slow; len(rest) > 0; rest = rest[min(chunk, len(rest)):] {
			if _, err := w.Write(rest[:min(chunk, len(rest))]); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			time.Sleep(125 * time.Millisecond) // the rate limit: 256 KiB/s
		}
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// sameBytes says how got differs from want, or "".
func sameBytes(got, want []byte) string {
	if len(got) != len(want) {
		return fmt.Sprintf("%d bytes, want %d", len(got), len(want))
	}
	if !bytes.Equal(got, want) {
		return "the bytes differ"
	}
	return ""
}
