//go:build linux

package intercept

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/rpwrap/rpwrap/internal/testutil"
)

// The JVM binds an IPv4 address as its IPv4-mapped form on an AF_INET6
// socket (IPV6_V6ONLY off), and the wildcard as a dual-stack [::]:P, unless
// -Djava.net.preferIPv4Stack=true. testdata/Server.java runs under the
// filter in both of its modes: HttpServer (NIO ServerSocketChannel) and
// java.net.ServerSocket.

func TestJVMServesOnRpwrapsIPv4SocketAfterAnIPv4MappedBind(t *testing.T) {
	for _, mode := range []string{"http", "socket"} {
		t.Run(mode, func(t *testing.T) {
			testutil.RequireRoot(t)
			m, ino := newManagedTCP(t)
			c := startJava(t, mode, "127.0.0.1", m.Addr.Port())
			c.serve(m)
			if l, want := c.line("listening "), fmt.Sprintf("listening /%s", m.Addr); l != want {
				t.Errorf("the JVM reads back its address as %q, want %q", l, want)
			}
			const requests = 200
			if ok := getOK(t, fmt.Sprintf("http://%s/", m.Addr), requests); ok != requests {
				t.Errorf("%d of %d requests answered 200, want all", ok, requests)
			}
			if !holdsInode(c.cmd.Process.Pid, ino) {
				t.Errorf("the JVM does not hold rpwrap's socket %d", ino)
			}
			if got := tcpListeners(t, m.Addr.Port()); len(got) != 1 || got[0] != ino {
				t.Errorf("listening sockets on port %d: inodes %v, want only rpwrap's %d", m.Addr.Port(), got, ino)
			}
			stopJava(t, c, requests)
			checkOptionsWarning(t, c)
			if got := c.icpt.Injected(); got != 1 {
				t.Errorf("Injected() = %d, want 1", got)
			}
			if got := c.logs.containing("server got rpwrap's socket", "ipv4_mapped"); len(got) != 1 {
				t.Errorf("injection log lines naming the IPv4-mapped bind: %q, want 1 (all: %q)", got, c.logs.lines)
			}
		})
	}
}

// TestJVMWildcardBindIsLoggedWithTheListenThatServesIt: rpwrap manages
// 0.0.0.0:P; the JVM's dual-stack [::]:P is another socket, so the bind is
// the kernel's (EADDRINUSE) and the log names --listen [::]:P. With that
// --listen the JVM serves IPv4 and IPv6 clients on rpwrap's socket.
func TestJVMWildcardBindIsLoggedWithTheListenThatServesIt(t *testing.T) {
	testutil.RequireRoot(t)
	m4, _ := newManagedTCPOn(t, netip.IPv4Unspecified())
	var stderr testutil.SyncBuffer
	c := startJavaErr(t, &stderr, "socket", "*", m4.Addr.Port())
	c.serve(m4)
	if err := c.wait(); err == nil {
		t.Errorf("the JVM's bind of [::]:%d with rpwrap on 0.0.0.0:%d: JVM exited 0, want a BindException", m4.Addr.Port(), m4.Addr.Port())
	}
	use := fmt.Sprintf("use=--listen [::]:%d instead of %s", m4.Addr.Port(), m4.Addr)
	if got := c.logs.containing(fmt.Sprintf("bind=[::]:%d", m4.Addr.Port()), "dual-stack", use); len(got) != 1 {
		t.Errorf("log lines naming %q: %q, want 1 (all: %q; JVM stderr: %s)", use, got, c.logs.lines, stderr.String())
	}
	if got := c.icpt.Injected(); got != 0 {
		t.Errorf("Injected() = %d, want 0", got)
	}

	m6, ino := newManagedTCPOn(t, netip.IPv6Unspecified())
	port := m6.Addr.Port()
	c = startJava(t, "socket", "*", port)
	c.serve(m6)
	c.line("listening ")
	const requests = 100
	for _, host := range []string{"127.0.0.1", "[::1]"} {
		if ok := getOK(t, fmt.Sprintf("http://%s:%d/", host, port), requests/2); ok != requests/2 {
			t.Errorf("%s: %d of %d requests answered 200, want all", host, ok, requests/2)
		}
	}
	if got := tcpListeners(t, port); len(got) != 1 || got[0] != ino {
		t.Errorf("listening sockets on port %d: inodes %v, want only rpwrap's %d", port, got, ino)
	}
	stopJava(t, c, requests)
	if got := c.icpt.Injected(); got != 1 {
		t.Errorf("Injected() = %d, want 1", got)
	}
}

// startJava runs testdata/Server.java under the filter.
func startJava(t *testing.T, mode, host string, port uint16) *filtered {
	return startJavaErr(t, os.Stderr, mode, host, port)
}

func startJavaErr(t *testing.T, stderr interface{ Write([]byte) (int, error) }, mode, host string, port uint16) *filtered {
	t.Helper()
	const java = "/usr/bin/java"
	if _, err := os.Stat(java); err != nil {
		testutil.SkipOrFail(t, java+" not installed (apt-get install default-jdk-headless)")
	}
	src, err := filepath.Abs(filepath.Join("testdata", "Server.java"))
	must(t, err)
	// No hsperfdata file in /tmp; the quickest start on a busy machine.
	return startFiltered(t, "", stderr, java, "-XX:-UsePerfData", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
		src, mode, host, strconv.Itoa(int(port)))
}

// stopJava asks the server to stop and checks how many requests it served.
func stopJava(t *testing.T, c *filtered, requests int) {
	t.Helper()
	fmt.Fprintln(c.stdin, "stop")
	if l, want := c.line("served "), fmt.Sprintf("served %d", requests); l != want {
		t.Errorf("the JVM reports %q, want %q", l, want)
	}
	if err := c.wait(); err != nil {
		t.Errorf("JVM: %v", err)
	}
}
