//go:build linux

package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
)

// realServer is one of Debian's servers as the bench runs it: the same
// configuration for its own reload mechanisms and for rpwrap, except for
// how it gets its listening socket. The configurations are those of
// examples/apache, examples/nginx and examples/haproxy (see examples.go),
// with one addition: every response carries X-Rpb-Config, the number of
// the configuration the serving process read, so the bench sees whether a
// restart loaded the new configuration.
type realServer struct {
	Name string // apache, nginx, haproxy
	Comm string // its processes' comm
	Sbin string // Debian's binary
	// Pass and StopSignal are rpwrap's route and graceful stop for it.
	Pass, StopSignal string
}

var (
	apacheServer  = realServer{"apache", "apache2", "/usr/sbin/apache2", "bind", "WINCH"}
	nginxServer   = realServer{"nginx", "nginx", "/usr/sbin/nginx", "nginx", "QUIT"}
	haproxyServer = realServer{"haproxy", "haproxy", "/usr/sbin/haproxy", "listen-fds", "USR1"}
	realServers   = []realServer{apacheServer, nginxServer, haproxyServer}
)

// configHeader names the response header that carries the configuration
// number.
const configHeader = "X-Rpb-Config"

// site is one server's directory: its binary copy, configuration, pid
// files, logs and document root.
type site struct {
	srv     realServer
	dir     string
	addr    string // 127.0.0.1:port
	backend string // haproxy's backend, host:port
	bin     string // dir/bin/NAME, replaced by a fresh copy before each restart
	conf    string
	// variant options of the configuration.
	listen  string // what the configuration listens on: addr, or fd@3 for haproxy under rpwrap
	pidFile string // apache: the PidFile line's file
	extra   string // lines added to the main context (ListenCoresBucketsRatio, stats socket)
	daemon  bool   // nginx: daemon on
	serial  int    // the configuration number
}

// newSite prepares dir for srv on addr.
func newSite(srv realServer, dir, addr, backend string) (*site, error) {
	s := &site{srv: srv, dir: dir, addr: addr, backend: backend, listen: addr,
		bin: filepath.Join(dir, "bin", srv.Comm), conf: filepath.Join(dir, srv.Comm+".conf"),
		// each generation its own pid file, as examples/apache does
		pidFile: filepath.Join(dir, "apache2-${RPWRAP_GENERATION}.pid")}
	for _, d := range []string{"bin", "htdocs"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("create %s: %w", d, err)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, fmt.Errorf("open %s to the server's workers: %w", dir, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "htdocs", "index.html"), []byte("ok\n"), 0o644); err != nil {
		return nil, fmt.Errorf("write index.html: %w", err)
	}
	return s, s.newBinary()
}

// newBinary puts a fresh copy of the server's binary at s.bin (a new
// inode, so the bench can tell which processes run the new one).
func (s *site) newBinary() error {
	src, err := os.Open(s.srv.Sbin)
	if err != nil {
		return fmt.Errorf("copy %s (apt-get install apache2 nginx haproxy): %w", s.srv.Sbin, err)
	}
	defer src.Close()
	tmp := s.bin + ".new"
	dst, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o755)
	if err != nil {
		return fmt.Errorf("copy %s: %w", s.srv.Sbin, err)
	}
	_, err = io.Copy(dst, src)
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, s.bin)
	}
	if err != nil {
		return fmt.Errorf("copy %s to %s: %w", s.srv.Sbin, s.bin, err)
	}
	return nil
}

// binInode is the inode of the current binary copy.
func (s *site) binInode() uint64 {
	var st unixStat
	if statInode(s.bin, &st) != nil {
		return 0
	}
	return st.Ino
}

// writeConfig writes configuration number serial; bad adds a line the
// server refuses.
func (s *site) writeConfig(serial int, bad bool) error {
	s.serial = serial
	var text string
	var err error
	switch s.srv.Name {
	case "apache":
		text, err = s.apacheConf()
	case "nginx":
		text, err = s.nginxConf()
	default:
		text, err = s.haproxyConf()
	}
	if err != nil {
		return err
	}
	if bad {
		text += map[string]string{"apache": "ThisIsNotADirective on\n", "nginx": "this_is_not_a_directive on;\n",
			"haproxy": "    this_is_not_a_keyword on\n"}[s.srv.Name]
	}
	if err := os.WriteFile(s.conf, []byte(text), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", s.conf, err)
	}
	return nil
}

// apacheConf is examples/apache/apache2.conf with the variables that
// /etc/apache2/envvars and its unit would set written in, the variant's
// lines after Listen, and the configuration header.
func (s *site) apacheConf() (string, error) {
	text, err := fromExample("apache/apache2.conf",
		"PidFile ${APACHE_RUN_DIR}/apache2-${RPWRAP_GENERATION}.pid", "PidFile "+s.pidFile,
		"${APACHE_RUN_DIR}", s.dir, "${APACHE_LOCK_DIR}", s.dir, "${APACHE_LOG_DIR}", s.dir,
		"${APACHE_RUN_USER}", "www-data", "${APACHE_RUN_GROUP}", "www-data",
		"Listen ${APACHE_LISTEN}", "Listen "+s.listen+"\n"+s.extra,
		"${APACHE_DOCUMENT_ROOT}", filepath.Join(s.dir, "htdocs"))
	if err != nil {
		return "", err
	}
	return text + fmt.Sprintf("\nLoadModule headers_module /usr/lib/apache2/modules/mod_headers.so\nHeader always set %s \"%d\"\n", configHeader, s.serial), nil
}

// nginxConf is examples/nginx/nginx.conf with the bench's address, paths,
// two workers, daemon on or off, and the configuration header.
func (s *site) nginxConf() (string, error) {
	daemon := "off"
	if s.daemon {
		daemon = "on"
	}
	return fromExample("nginx/nginx.conf",
		"listen 0.0.0.0:80;", fmt.Sprintf("listen %s;\n        add_header %s \"%d\" always;", s.listen, configHeader, s.serial),
		"/run/nginx-rpwrap.pid", filepath.Join(s.dir, "nginx.pid"),
		"/var/log/nginx/error.log", filepath.Join(s.dir, "error.log"),
		"/var/www/html", filepath.Join(s.dir, "htdocs"),
		"worker_processes auto;", "worker_processes 2;\ndaemon "+daemon+";")
}

// haproxyConf is examples/haproxy/haproxy.cfg with the bench's bind and
// backend, the variant's global lines, and the configuration header.
func (s *site) haproxyConf() (string, error) {
	return fromExample("haproxy/haproxy.cfg",
		"    maxconn 4096", "    maxconn 4096\n"+s.extra,
		"\n    bind fd@3\n", fmt.Sprintf("\n    bind %s\n    http-response set-header %s %d\n", s.listen, configHeader, s.serial),
		"server app1 127.0.0.1:8081", "server app1 "+s.backend)
}

// apacheEnv is what /etc/apache2/envvars would set, for -f configurations
// that do not use the variables; LANG keeps apache2 quiet.
func apacheEnv() []string { return []string{"LANG=C"} }

// servedConfig asks the server once for / and returns its configuration
// number, or -1 when the request failed.
func servedConfig(addr string) int {
	c := http.Client{Timeout: 2e9, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	var n int
	if _, err := fmt.Sscan(resp.Header.Get(configHeader), &n); err != nil {
		return -1
	}
	return n
}

// startBackend serves "ok\n" on a free port of 127.0.0.1 for HAProxy; the
// returned func stops it.
func startBackend() (string, func(), error) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("listen for the haproxy backend: %w", err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })}
	go srv.Serve(l)
	return l.Addr().String(), func() { srv.Close() }, nil
}

// freePort is a port of 127.0.0.1 that was free a moment ago.
func freePort() (string, error) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}
