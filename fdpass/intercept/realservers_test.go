//go:build linux

package intercept

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/rpwrap/rpwrap/internal/testutil"
)

// realServer is how one Debian server is run for a test: its binary, and
// the argv and environment for a config listening on port, in dir.
type realServer struct {
	bin   string
	setup func(t testing.TB, dir string, port uint16) (argv, env []string)
}

var (
	apache = realServer{"/usr/sbin/apache2", apacheSetup}
	nginx  = realServer{"/usr/sbin/nginx", nginxSetup}
	hapx   = realServer{"/usr/sbin/haproxy", haproxySetup}
)

func TestApacheServesOnRpwrapsSocket(t *testing.T) { testRealServer(t, apache, true) }
func TestNginxServesOnRpwrapsSocket(t *testing.T)  { testRealServer(t, nginx, true) }
func TestHAProxyServesOnRpwrapsSocket(t *testing.T) {
	testRealServer(t, hapx, false) // HAProxy forks no workers
}

// testRealServer runs the server under the filter with one managed socket
// and checks: requests are served, the server's process tree holds rpwrap's
// socket, and exactly one socket listens on the port.
func testRealServer(t *testing.T, s realServer, workers bool) {
	testutil.RequireRoot(t)
	if _, err := os.Stat(s.bin); err != nil {
		testutil.SkipOrFail(t, s.bin+" not installed (apt-get install apache2 nginx haproxy)")
	}
	m, ino := newManagedTCP(t)
	dir := serverDir(t)
	argv, env := s.setup(t, dir, m.Addr.Port())
	stderr, err := os.Create(filepath.Join(dir, "stderr"))
	must(t, err)
	defer stderr.Close()
	c := startFilteredEnv(t, env, "", stderr, argv...)
	c.serve(m)
	defer func() {
		if t.Failed() {
			dumpLogs(t, dir)
			t.Logf("interceptor log: %q", c.logs.lines)
		}
	}()
	const requests = 50
	if ok := getOK(t, fmt.Sprintf("http://%s/index.html", m.Addr), requests); ok != requests {
		t.Errorf("%d of %d requests answered 200, want all", ok, requests)
	}
	pid := c.cmd.Process.Pid
	// Without CAP_SYS_PTRACE, /proc/PID/fd of a worker running as another
	// user cannot be read: the requests above are what shows they serve.
	checkHolders(t, pid, ino, workers && !pidfdGetfdDenied)
	if got := tcpListeners(t, m.Addr.Port()); len(got) != 1 || got[0] != ino {
		t.Errorf("listening sockets on port %d: inodes %v, want only rpwrap's %d", m.Addr.Port(), got, ino)
	}
	if got := c.icpt.Injected(); got != 1 {
		t.Errorf("Injected() = %d, want 1", got)
	}
	if os.Getenv("RPWRAP_TEST_SHOWLOG") != "" {
		t.Logf("interceptor log: %q", c.logs.lines)
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	c.wait()
	checkOptionsWarning(t, c)
}

// checkHolders checks that pid, and with workers its children, hold ino.
func checkHolders(t *testing.T, pid int, ino uint64, workers bool) {
	t.Helper()
	pids := []int{pid}
	if workers {
		kids := testutil.Children(pid)
		if len(kids) == 0 {
			t.Errorf("server %d has no worker processes", pid)
		}
		pids = append(pids, kids...)
	}
	for _, p := range pids {
		if !holdsInode(p, ino) {
			t.Errorf("process %d (%s) does not hold rpwrap's socket %d", p, comm(p), ino)
		}
	}
}

func holdsInode(pid int, ino uint64) bool {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, e := range ents {
		var fd int
		fmt.Sscan(e.Name(), &fd)
		if fdInode(pid, fd) == ino {
			return true
		}
	}
	return false
}

func comm(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

// getOK sends n requests, each on a new connection, and counts 200s. It
// stops at the first failed request: the next would wait as long.
func getOK(t testing.TB, url string, n int) int {
	client := &http.Client{Timeout: eventTimeout, Transport: &http.Transport{DisableKeepAlives: true}}
	ok := 0
	for range n {
		resp, err := client.Get(url)
		if err != nil {
			t.Logf("GET %s: %v", url, err)
			return ok
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			ok++
		}
	}
	return ok
}

// tcpListeners lists the inodes of sockets listening on port, any address,
// from /proc/net/tcp and /proc/net/tcp6.
func tcpListeners(t *testing.T, port uint16) []uint64 {
	var inodes []uint64
	for _, name := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(name)
		must(t, err)
		s := bufio.NewScanner(f)
		s.Scan() // header
		for s.Scan() {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			fl := strings.Fields(s.Text())
			var p uint16
			var ino uint64
			fmt.Sscanf(fl[1][strings.IndexByte(fl[1], ':')+1:], "%X", &p)
			fmt.Sscan(fl[9], &ino)
			if fl[3] == "0A" && p == port {
				inodes = append(inodes, ino)
			}
		}
		f.Close()
	}
	return inodes
}

// serverDir is a directory that a server's unprivileged workers can read.
func serverDir(t testing.TB) string {
	dir := t.TempDir()
	must(t, os.Chmod(filepath.Dir(dir), 0o755))
	must(t, os.Chmod(dir, 0o755))
	must(t, os.Mkdir(filepath.Join(dir, "htdocs"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "htdocs", "index.html"), []byte("ok\n"), 0o644))
	return dir
}

func dumpLogs(t *testing.T, dir string) {
	for _, name := range []string{"stderr", "error.log"} {
		if b, err := os.ReadFile(filepath.Join(dir, name)); err == nil {
			t.Logf("%s:\n%s", name, b)
		}
	}
}

func writeConf(t testing.TB, path, text string) {
	t.Helper()
	must(t, os.WriteFile(path, []byte(text), 0o644))
}

// apacheSetup: Debian's apache2 without /etc/apache2/envvars; the
// APACHE_* variables are set here and the config uses them.
func apacheSetup(t testing.TB, dir string, port uint16) ([]string, []string) {
	conf := filepath.Join(dir, "apache2.conf")
	writeConf(t, conf, fmt.Sprintf(`ServerRoot ${APACHE_RUN_DIR}
ServerName localhost
Listen 127.0.0.1:%d
PidFile ${APACHE_PID_FILE}
ErrorLog ${APACHE_LOG_DIR}/error.log
LogLevel warn
DefaultRuntimeDir ${APACHE_RUN_DIR}
Mutex file:${APACHE_LOCK_DIR} default
User ${APACHE_RUN_USER}
Group ${APACHE_RUN_GROUP}
LoadModule mpm_event_module /usr/lib/apache2/modules/mod_mpm_event.so
LoadModule authz_core_module /usr/lib/apache2/modules/mod_authz_core.so
StartServers 1
DocumentRoot %s/htdocs
<Directory %s/htdocs>
  Require all granted
</Directory>
`, port, dir, dir))
	env := []string{
		"APACHE_RUN_DIR=" + dir, "APACHE_PID_FILE=" + dir + "/apache2.pid", "APACHE_LOG_DIR=" + dir,
		"APACHE_LOCK_DIR=" + dir, "APACHE_RUN_USER=www-data", "APACHE_RUN_GROUP=www-data",
	}
	return []string{"/usr/sbin/apache2", "-DFOREGROUND", "-d", dir, "-f", conf}, env
}

func nginxSetup(t testing.TB, dir string, port uint16) ([]string, []string) {
	conf := filepath.Join(dir, "nginx.conf")
	writeConf(t, conf, fmt.Sprintf(`worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  server {
    listen 127.0.0.1:%[2]d;
    location / { return 200 "ok\n"; }
  }
}
`, dir, port))
	return []string{"/usr/sbin/nginx", "-e", dir + "/error.log", "-p", dir, "-c", conf, "-g", "daemon off;"}, nil
}

func haproxySetup(t testing.TB, dir string, port uint16) ([]string, []string) {
	conf := filepath.Join(dir, "haproxy.cfg")
	writeConf(t, conf, fmt.Sprintf(`global
  maxconn 256
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend fe
  bind 127.0.0.1:%d
  http-request return status 200 content-type text/plain string ok
`, port))
	return []string{"/usr/sbin/haproxy", "-db", "-f", conf}, nil
}

// lookPath is exec.LookPath for a benchmark's optional tool.
func lookPath(name string) bool { _, err := exec.LookPath(name); return err == nil }
