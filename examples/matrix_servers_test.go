//go:build linux

package examples

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/rpwrap/rpwrap/internal/testutil"
)

// matrixServer is a server as a matrix row runs it.
type matrixServer struct {
	name  string
	bin   string   // must be installed; "" for programs this test builds
	flags []string // rpwrap's --pass and --stop-signal for it
	// setup prepares dir for the server on listen (rpwrap's --listen
	// values, ports resolved) and returns its argv and the environment it
	// needs beyond rpwrap's.
	setup func(t *testing.T, dir string, listen []string) (argv, env []string)
}

var (
	// demo is the built-in demo server on socket activation; demoBind is
	// the same server binding its first address itself.
	demo     = matrixServer{"demo", "", nil, demoSetup}
	demoBind = matrixServer{"demo -bind", "", []string{"--pass", "bind"}, demoBindSetup}

	httpEcho = matrixServer{"httpecho", "", nil, goProgramSetup("httpecho", 0)}
	udpBind  = matrixServer{"httpecho ADDR", "", []string{"--pass", "bind"}, goProgramSetup("httpecho", 1)}
	// Go's Server.Shutdown closes, unanswered, a keep-alive connection
	// whose request it reads after Shutdown began: --drain-delay lets the
	// requests of connections made before the flip arrive first.
	goServer     = matrixServer{"goserver", "", []string{"--pass", "bind", "--drain-delay", "1s"}, goProgramSetup("goserver", 1)}
	apacheServer = matrixServer{"apache", "/usr/sbin/apache2", []string{"--pass", "bind", "--stop-signal", "WINCH"}, matrixApacheSetup}
	apacheTLS    = matrixServer{"apache (mod_ssl)", "/usr/sbin/apache2", []string{"--pass", "bind", "--stop-signal", "WINCH"}, apacheTLSSetup}
	nginxServer  = matrixServer{"nginx", "/usr/sbin/nginx", []string{"--pass", "nginx", "--stop-signal", "QUIT"}, matrixNginxSetup}
	// dnsmasq exits on SIGTERM at once, closing the TCP connections it
	// accepted: --drain-delay gives their queries time to be answered.
	dnsmasq = matrixServer{"dnsmasq", "/usr/sbin/dnsmasq", []string{"--pass", "bind", "--drain-delay", "1s"}, dnsmasqSetup}
	node    = matrixServer{"node", "/usr/bin/node", []string{"--pass", "bind"}, nodeSetup}
	java    = matrixServer{"java", "/usr/bin/java", []string{"--pass", "bind"}, javaSetup}
)

// requireMatrixServer skips the test (fails it under CI) without root or
// the server's binary.
func requireMatrixServer(t *testing.T, s matrixServer) {
	t.Helper()
	testutil.RequireRoot(t)
	if s.bin == "" {
		return
	}
	if _, err := os.Stat(s.bin); err != nil {
		testutil.SkipOrFail(t, s.bin+" not installed (apt-get install apache2 nginx dnsmasq-base nodejs default-jdk-headless ssl-cert curl)")
	}
}

func demoSetup(*testing.T, string, []string) ([]string, []string) {
	return []string{rpwrapBin, "serve-demo"}, nil
}

func demoBindSetup(t *testing.T, _ string, listen []string) ([]string, []string) {
	return []string{rpwrapBin, "serve-demo", "-bind", hostPort(t, listen[0])}, nil
}

// goProgramSetup runs testdata/matrix/NAME, built once per test run, with
// the first args addresses as its arguments.
func goProgramSetup(name string, args int) func(*testing.T, string, []string) ([]string, []string) {
	return func(t *testing.T, _ string, listen []string) ([]string, []string) {
		argv := []string{buildTestdata(t, name)}
		for _, a := range listen[:args] {
			argv = append(argv, hostPort(t, a))
		}
		return argv, nil
	}
}

var built sync.Map // name → func() (string, error)

// buildTestdata builds ./testdata/matrix/NAME next to rpwrapBin, once.
func buildTestdata(t *testing.T, name string) string {
	t.Helper()
	f, _ := built.LoadOrStore(name, sync.OnceValues(func() (string, error) {
		out := filepath.Join(filepath.Dir(rpwrapBin), name)
		if err := testutil.GoBuild(out, "./testdata/matrix/"+name); err != nil {
			return "", err
		}
		return out, nil
	}))
	path, err := f.(func() (string, error))()
	must(t, err)
	return path
}

// matrixApacheSetup runs examples/apache/apache2.conf as is: Debian's
// default AcceptFilter (http data: TCP_DEFER_ACCEPT) stays on.
func matrixApacheSetup(t *testing.T, dir string, listen []string) ([]string, []string) {
	return apacheSetup(t, dir, hostPort(t, listen[0]))
}

// apacheTLSSetup is the example configuration with mod_ssl serving HTTPS
// with Debian's snakeoil certificate (ssl-cert), a session cache per
// generation, and AcceptFilter left at its default (https data).
func apacheTLSSetup(t *testing.T, dir string, listen []string) ([]string, []string) {
	docroot(t, dir)
	conf := fromExample(t, dir, "apache/apache2.conf",
		"Listen ${APACHE_LISTEN}", "Listen ${APACHE_LISTEN} https",
		"LoadModule env_module /usr/lib/apache2/modules/mod_env.so", strings.Join([]string{
			"LoadModule env_module /usr/lib/apache2/modules/mod_env.so",
			"LoadModule socache_shmcb_module /usr/lib/apache2/modules/mod_socache_shmcb.so",
			"LoadModule ssl_module /usr/lib/apache2/modules/mod_ssl.so",
			"SSLSessionCache shmcb:${APACHE_RUN_DIR}/ssl_scache-${RPWRAP_GENERATION}(512000)",
			"SSLEngine on",
			"SSLCertificateFile " + snakeoilCert,
			"SSLCertificateKeyFile " + snakeoilKey,
		}, "\n"))
	return []string{"/usr/sbin/apache2", "-DFOREGROUND", "-f", conf}, apacheEnv(dir, hostPort(t, listen[0]))
}

// matrixNginxSetup runs examples/nginx/nginx.conf with a listen directive
// for each address.
func matrixNginxSetup(t *testing.T, dir string, listen []string) ([]string, []string) {
	docroot(t, dir)
	var directives []string
	for _, a := range listen {
		directives = append(directives, "listen "+hostPort(t, a)+";")
	}
	conf := fromExample(t, dir, "nginx/nginx.conf",
		"listen 0.0.0.0:80;", strings.Join(directives, "\n        "),
		"/run/nginx-rpwrap.pid", filepath.Join(dir, "nginx.pid"),
		"/var/log/nginx/error.log", filepath.Join(dir, "error.log"),
		"/var/www/html", filepath.Join(dir, "htdocs"),
		"worker_processes auto;", "worker_processes 2;")
	return []string{"/usr/sbin/nginx", "-e", filepath.Join(dir, "error.log"), "-c", conf, "-g", "daemon off;"}, nil
}

// dnsmasqSetup runs dnsmasq as a DNS server only, on the first address's
// host and port (it binds UDP and TCP there itself), answering dnsName.
func dnsmasqSetup(t *testing.T, _ string, listen []string) ([]string, []string) {
	host, port := splitHostPort(t, listen[0])
	return []string{"/usr/sbin/dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
		"--port=" + port, "--listen-address=" + host, "--bind-interfaces", "--pid-file=",
		"--user=root", "--group=root", "--log-facility=-", "--address=/" + dnsName + "/" + dnsAnswer.String()}, nil
}

// nodeSetup runs testdata/matrix/server.js: listen(PORT) without a host.
func nodeSetup(t *testing.T, _ string, listen []string) ([]string, []string) {
	_, port := splitHostPort(t, listen[0])
	return []string{"/usr/bin/node", testdataPath(t, "server.js"), port}, nil
}

// javaSetup runs testdata/matrix/Server.java as a single source file, on
// the first address ("*" for a wildcard).
func javaSetup(t *testing.T, _ string, listen []string) ([]string, []string) {
	host, port := splitHostPort(t, listen[0])
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "*"
	}
	return []string{"/usr/bin/java", testdataPath(t, "Server.java"), host, port}, nil
}

func testdataPath(t *testing.T, name string) string {
	p, err := filepath.Abs(filepath.Join("testdata", "matrix", name))
	must(t, err)
	return p
}

// hostPort is a listen address without its scheme.
func hostPort(t *testing.T, listen string) string {
	host, port := splitHostPort(t, listen)
	return net.JoinHostPort(host, port)
}

// splitHostPort splits a listen address, with or without its scheme.
func splitHostPort(t *testing.T, listen string) (host, port string) {
	addr := listen
	if _, after, found := strings.Cut(listen, "://"); found {
		addr = after
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("listen address %q: %v", listen, err)
	}
	return host, port
}

// freePorts picks n distinct ports, each free for TCP and UDP on IPv4 and
// IPv6 when picked.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var held []func() error
	defer func() {
		for _, c := range held {
			c()
		}
	}()
	var ports []int
	for len(ports) < n {
		tl, err := net.Listen("tcp", "[::]:0") // dual-stack: IPv4 too
		must(t, err)
		held = append(held, tl.Close)
		port := tl.Addr().(*net.TCPAddr).Port
		ul, err := net.ListenPacket("udp", net.JoinHostPort("::", strconv.Itoa(port)))
		if err != nil {
			continue // taken for UDP: try another
		}
		held = append(held, ul.Close)
		ports = append(ports, port)
	}
	return ports
}
