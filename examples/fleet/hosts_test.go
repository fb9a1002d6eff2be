//go:build linux

package fleet

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Ports inside the fleet's own namespaces, where nothing else listens.
const (
	serverPort = "8080" // rpwrap --listen, the server's socket
	healthPort = "8081" // rpwrap --health, HAProxy's check
	lbPort     = "80"
)

// host is one machine of the fleet: a namespace with its own address, sshd,
// and rpwrap running the server from dir/server.
type host struct {
	name, ns, addr, dir string
	sshd, rpwrap        *proc
}

func (h *host) serverPath() string  { return filepath.Join(h.dir, "server") }
func (h *host) controlPath() string { return filepath.Join(h.dir, "rpwrap.sock") }

// fleet is the whole setup of one test.
type fleet struct {
	dir    string
	net    *network
	hosts  []*host
	rpwrap string // the rpwrap binary
	key    string // the controller's private key
	lb     *proc
}

// keygen writes an ed25519 key pair, path and path.pub, without passphrase.
func keygen(t *testing.T, path string) {
	t.Helper()
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen %s: %v\n%s", path, err, out)
	}
}

// startSSHD gives h its own host key and an sshd on h.addr:22 that lets
// root in with the controller's key only; the pid and log files are in
// h.dir.
func (f *fleet) startSSHD(t *testing.T, h *host) {
	t.Helper()
	keygen(t, filepath.Join(h.dir, "ssh_host_ed25519_key"))
	cfg := filepath.Join(h.dir, "sshd_config")
	conf := fmt.Sprintf(`ListenAddress %s:22
HostKey %s/ssh_host_ed25519_key
PidFile %s/sshd.pid
AuthorizedKeysFile %s.pub
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PrintMotd no
Subsystem sftp /usr/lib/openssh/sftp-server
`, h.addr, h.dir, h.dir, f.key)
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	h.sshd = startIn(t, h.ns, h.dir, "sshd", "/usr/sbin/sshd", "-D", "-e", "-f", cfg)
	if err := waitFor(h.sshd, 30*time.Second, h.name+" sshd listening", dialer(h.addr+":22")); err != nil {
		h.sshd.dump(t)
		t.Fatal(err)
	}
}

// startRpwrap runs the server under rpwrap in h's namespace, as a unit
// file's ExecStart would.
func (f *fleet) startRpwrap(t *testing.T, h *host, flags ...string) {
	t.Helper()
	args := append([]string{f.rpwrap,
		"--listen", ":" + serverPort, "--health", ":" + healthPort, "--control", h.controlPath(),
		"--ready", "http:/healthz", "--ready-timeout", "5s",
		"--drain-delay", "1s", "--drain-timeout", "10s", "--stop-timeout", "10s"}, flags...)
	h.rpwrap = startIn(t, h.ns, h.dir, "rpwrap", append(args, "--", h.serverPath())...)
	if err := waitFor(h.rpwrap, 30*time.Second, h.name+" ready", func() error {
		_, err := httpGet("http://" + h.addr + ":" + healthPort + "/readyz")
		return err
	}); err != nil {
		h.rpwrap.dump(t)
		t.Fatal(err)
	}
}

// startHAProxy runs Debian's HAProxy in the lb namespace, balancing over
// the hosts with a fresh backend connection for every request, no retries
// (a refused or reset backend connection reaches the client as an error)
// and rpwrap's /readyz as the health check.
func (f *fleet) startHAProxy(t *testing.T) {
	t.Helper()
	var servers strings.Builder
	for _, h := range f.hosts {
		fmt.Fprintf(&servers, "    server %s %s:%s check port %s inter 500ms fall 2 rise 1\n", h.name, h.addr, serverPort, healthPort)
	}
	cfg := filepath.Join(f.dir, "haproxy.cfg")
	conf := fmt.Sprintf(`global
    maxconn 2000
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    retries 0
    option http-server-close
frontend fleet
    bind %s:%s
    default_backend fleet
backend fleet
    balance roundrobin
    http-reuse never
    option httpchk GET /readyz
    http-check expect status 200
    http-response set-header X-Fleet-Host %%s
%s`, f.net.lbAddr(), lbPort, servers.String())
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	f.lb = startIn(t, f.net.lbNS(), f.dir, "haproxy", "haproxy", "-db", "-f", cfg)
	seen := map[string]bool{}
	if err := waitFor(f.lb, 30*time.Second, "HAProxy serving from every host", func() error {
		resp, err := http.Get(f.lbURL())
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		seen[resp.Header.Get("X-Fleet-Host")] = resp.StatusCode == 200
		for _, h := range f.hosts {
			if !seen[h.name] {
				return fmt.Errorf("no answer from %s yet (%v)", h.name, seen)
			}
		}
		return nil
	}); err != nil {
		f.lb.dump(t)
		t.Fatal(err)
	}
}

func (f *fleet) lbURL() string { return "http://" + f.net.lbAddr() + ":" + lbPort + "/" }

func dialer(addr string) func() error {
	return func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}
}

// httpGet fetches url on a new connection and returns the body of a 200.
func httpGet(url string) (string, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	return string(b), nil
}
