//go:build linux

package examples

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/internal/testutil"
)

// TestJVMRestartsUnderLoadLoseNoRequest runs a Java server (the bind
// interception tests' testdata/Server.java, java.net.ServerSocket) under
// `rpwrap --pass bind` on 127.0.0.1:P. The JVM binds [::ffff:127.0.0.1]:P
// on an AF_INET6 socket and gets rpwrap's AF_INET socket in its place; it is
// restarted under a load of 4 clients, a new connection per request, and
// every request gets a whole 200.
func TestJVMRestartsUnderLoadLoseNoRequest(t *testing.T) {
	testutil.RequireRoot(t)
	for _, bin := range []string{"/usr/bin/java", "/usr/bin/javac"} {
		if _, err := os.Stat(bin); err != nil {
			testutil.SkipOrFail(t, bin+" not installed (apt-get install default-jdk-headless)")
		}
	}
	dir, addr := workDir(t), freeAddr(t)
	classes := filepath.Join(dir, "classes")
	javac := exec.Command("/usr/bin/javac", "-d", classes, "../fdpass/intercept/testdata/Server.java")
	if out, err := javac.CombinedOutput(); err != nil {
		t.Fatalf("javac Server.java: %v\n%s", err, out)
	}
	host, port, _ := net.SplitHostPort(addr)
	w := startRpwrap(t, dir, nil, "--listen", addr, "--ready", "accept", "--pass", "bind", "--",
		"/usr/bin/java", "-XX:-UsePerfData", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
		"-cp", classes, "Server", "socket", host, port)

	load := startLoad(t, addr, "/", 4)
	waitRequests(t, load, 200)
	for i := range restarts {
		r := w.restart()
		if r.Generation != i+2 {
			t.Fatalf("restart %d made generation %d, want %d", i+1, r.Generation, i+2)
		}
		t.Logf("restart %d: generation %d ready in %v, flip %v, drain %v",
			i+1, r.Generation, r.Ready.Round(time.Millisecond), r.Flip, r.Drain.Round(time.Millisecond))
		waitRequests(t, load, load.Progress().Sent+200) // some load on every generation
	}
	load.Stop()
	requireNoLoss(t, load.Wait(), 2000)
	if st := w.status(); st.Restarts != restarts || st.RolledBack != 0 {
		t.Errorf("status: %d restarts, %d rolled back; want %d and 0", st.Restarts, st.RolledBack, restarts)
	}
	if got := strings.Count(w.out.String(), "ipv4_mapped="); got != restarts+1 {
		t.Errorf("rpwrap logged %d IPv4-mapped injections, want one per generation (%d); output:\n%s", got, restarts+1, w.out)
	}
}
