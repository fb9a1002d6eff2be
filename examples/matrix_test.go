//go:build linux

package examples

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/supervisor"
)

// matrixRow is one configuration an operator can write: the addresses
// rpwrap listens on, the server and its route, the readiness check, and
// what clients ask of it. "$N" in listen, ready and clients stands for the
// N-th free port picked for the row (free for TCP and UDP, IPv4 and IPv6).
type matrixRow struct {
	name    string
	listen  []string // rpwrap's --listen, one flag each
	server  matrixServer
	ready   string   // rpwrap's --ready
	clients []string // http://ADDR/PATH, https://ADDR/PATH, udp://ADDR (echo), dns+udp://ADDR, dns+tcp://ADDR
	slow    bool     // runs only with CI=true, RPWRAP_TEST_SLOW=1 or RPWRAP_TEST_STRICT=1
}

// matrix is every configuration that must restart under load without
// losing a request. Add a configuration by adding a line.
var matrix = []matrixRow{
	// Listeners, with the demo server on socket activation.
	{name: "ipv4", listen: l("127.0.0.1:$0"), server: demo, ready: "accept", clients: l("http://127.0.0.1:$0/")},
	{name: "ipv6", listen: l("[::1]:$0"), server: demo, ready: "accept", clients: l("http://[::1]:$0/")},
	{name: "dual-stack", listen: l("[::]:$0"), server: demo, ready: "accept", clients: l("http://127.0.0.1:$0/", "http://[::1]:$0/")},
	{name: "ipv4-mapped", listen: l("[::ffff:127.0.0.1]:$0"), server: demo, ready: "accept", clients: l("http://127.0.0.1:$0/")},
	{name: "several", listen: l("127.0.0.1:$0", "[::1]:$1", "[::]:$2"), server: demo, ready: "accept",
		clients: l("http://127.0.0.1:$0/", "http://[::1]:$1/", "http://127.0.0.1:$2/", "http://[::1]:$2/")},
	{name: "tcp+udp", listen: l("127.0.0.1:$0", "udp://127.0.0.1:$0", "udp://[::1]:$1"), server: httpEcho, ready: "accept",
		clients: l("http://127.0.0.1:$0/", "udp://127.0.0.1:$0", "udp://[::1]:$1")},

	// Each route with each readiness check that applies to it (listen-fds
	// with accept is the ipv4 row above).
	{name: "listen-fds/http", listen: l("127.0.0.1:$0"), server: demo, ready: "http:/", clients: l("http://127.0.0.1:$0/")},
	{name: "listen-fds/notify", listen: l("127.0.0.1:$0"), server: demo, ready: "notify", clients: l("http://127.0.0.1:$0/")},
	{name: "listen-fds/exec", listen: l("127.0.0.1:$0"), server: demo, ready: "exec:curl -fsS -o /dev/null http://127.0.0.1:$0/", clients: l("http://127.0.0.1:$0/")},
	{name: "listen-fds/delay", listen: l("127.0.0.1:$0"), server: demo, ready: "delay:300ms", clients: l("http://127.0.0.1:$0/")},
	{name: "listen-fds/none", listen: l("127.0.0.1:$0"), server: demo, ready: "none", clients: l("http://127.0.0.1:$0/")},
	{name: "bind/accept", listen: l("127.0.0.1:$0"), server: demoBind, ready: "accept", clients: l("http://127.0.0.1:$0/")},
	{name: "bind/http", listen: l("127.0.0.1:$0"), server: demoBind, ready: "http:/", clients: l("http://127.0.0.1:$0/")},
	{name: "bind/notify", listen: l("127.0.0.1:$0"), server: demoBind, ready: "notify", clients: l("http://127.0.0.1:$0/")},
	{name: "bind/exec", listen: l("127.0.0.1:$0"), server: demoBind, ready: "exec:curl -fsS -o /dev/null http://127.0.0.1:$0/", clients: l("http://127.0.0.1:$0/")},
	{name: "bind/delay", listen: l("127.0.0.1:$0"), server: demoBind, ready: "delay:300ms", clients: l("http://127.0.0.1:$0/")},
	{name: "bind/udp-only", listen: l("udp://127.0.0.1:$0"), server: udpBind, ready: "", clients: l("udp://127.0.0.1:$0")}, // the default: none for UDP alone, the guard waits for the bind
	{name: "bind/udp-only-delay", listen: l("udp://127.0.0.1:$0"), server: udpBind, ready: "delay:300ms", clients: l("udp://127.0.0.1:$0")},
	{name: "bind/none", listen: l("127.0.0.1:$0"), server: demoBind, ready: "none", clients: l("http://127.0.0.1:$0/")},
	{name: "nginx/accept", listen: l("127.0.0.1:$0"), server: nginxServer, ready: "accept", clients: l("http://127.0.0.1:$0/")},
	{name: "nginx/http", listen: l("127.0.0.1:$0"), server: nginxServer, ready: "http:/", clients: l("http://127.0.0.1:$0/")},
	{name: "nginx/exec", listen: l("127.0.0.1:$0"), server: nginxServer, ready: "exec:curl -fsS -o /dev/null http://127.0.0.1:$0/", clients: l("http://127.0.0.1:$0/")},
	{name: "nginx/delay", listen: l("127.0.0.1:$0"), server: nginxServer, ready: "delay:300ms", clients: l("http://127.0.0.1:$0/")},
	{name: "nginx/none", listen: l("127.0.0.1:$0"), server: nginxServer, ready: "none", clients: l("http://127.0.0.1:$0/")},

	// Real servers as Debian ships them, each on the route it needs.
	{name: "apache", listen: l("127.0.0.1:$0"), server: apacheServer, ready: "accept", clients: l("http://127.0.0.1:$0/")},
	{name: "apache-tls", listen: l("127.0.0.1:$0"), server: apacheTLS, ready: "accept", clients: l("https://127.0.0.1:$0/")},
	{name: "nginx-two-ports", listen: l("127.0.0.1:$0", "127.0.0.1:$1"), server: nginxServer, ready: "accept", clients: l("http://127.0.0.1:$0/", "http://127.0.0.1:$1/")},
	{name: "nginx-ipv6", listen: l("[::1]:$0"), server: nginxServer, ready: "accept", clients: l("http://[::1]:$0/")},
	{name: "dnsmasq", listen: l("127.0.0.1:$0", "udp://127.0.0.1:$0"), server: dnsmasq, ready: "accept", clients: l("dns+udp://127.0.0.1:$0", "dns+tcp://127.0.0.1:$0")},
	{name: "node", listen: l("[::]:$0"), server: node, ready: "accept", clients: l("http://127.0.0.1:$0/", "http://[::1]:$0/")},
	{name: "java-ipv4", listen: l("127.0.0.1:$0"), server: java, ready: "accept", clients: l("http://127.0.0.1:$0/"), slow: true},
	{name: "java-wildcard", listen: l("[::]:$0"), server: java, ready: "accept", clients: l("http://127.0.0.1:$0/", "http://[::1]:$0/"), slow: true},
	{name: "go", listen: l("127.0.0.1:$0"), server: goServer, ready: "accept", clients: l("http://127.0.0.1:$0/")},
}

func l(s ...string) []string { return s }

// Every row runs this way, with each selector.
const (
	matrixRestarts = 3                  // `rpwrap ctl restart`s per row
	matrixRate     = 150                // requests per second per client address: a light load
	matrixWorkers  = 3                  // requests in flight at most per client address
	matrixPerGen   = 30                 // requests each client address sends to every generation at least
	lateBound      = 5 * time.Second    // a late request not answered by then failed
	requestTimeout = 5 * time.Second    // any other request not answered by then failed
	loadDuration   = 2 * time.Minute    // bounds every load, should a row hang
	slowRowEnv     = "RPWRAP_TEST_SLOW" // =1 runs the slow rows
	slowRowHint    = "CI=true or " + slowRowEnv + "=1"
)

// TestEveryConfigurationRestartsUnderLoadLosingNoRequest runs every row of
// matrix through the rpwrap binary, with the eBPF and the classic-BPF
// selector: a light load on every client address, a new connection (or UDP
// socket) per request, and three `rpwrap ctl restart`s. Every request sent
// must get its whole answer. Before each restart, one more client per
// address connects (or opens its UDP socket) and sends its request only once
// the restart has flipped: it must be answered, within 5 s, by whichever
// generation holds its connection (a server that defers accept until data
// comes, as Apache does, must not leave it to a socket nobody accepts from).
// At the end every listening TCP socket must still have rpwrap's backlog.
//
// Rows marked slow (the JVM takes seconds to start, four times per row)
// run only with CI=true, RPWRAP_TEST_SLOW=1 or RPWRAP_TEST_STRICT=1, and
// say so when they skip.
func TestEveryConfigurationRestartsUnderLoadLosingNoRequest(t *testing.T) {
	for _, row := range matrix {
		for _, sel := range []string{"ebpf", "cbpf"} {
			t.Run(row.name+"/"+sel, func(t *testing.T) { runMatrixRow(t, row, sel) })
		}
	}
}

func runMatrixRow(t *testing.T, row matrixRow, selector string) {
	requireMatrixServer(t, row.server)
	if row.slow && !slowRowsEnabled() {
		t.Skipf("slow row (%s starts slowly): it runs with %s", row.server.name, slowRowHint)
	}
	ports := freePorts(t, portsUsed(row))
	listen, clients, ready := expandPorts(row.listen, ports), expandPorts(row.clients, ports), expandPorts(l(row.ready), ports)[0]
	dir := workDir(t)
	argv, env := row.server.setup(t, dir, listen)
	// Each request is a flow of its own: a short --udp-flow-idle lets the
	// old generation's flows move soon after the flip, so that a drain
	// (which ctl restart --wait waits for) takes no 2 s more per restart.
	args := []string{"--selector", selector, "--udp-flow-idle", "300ms"}
	if ready != "" {
		args = append(args, "--ready", ready)
	}
	for _, a := range listen {
		args = append(args, "--listen", a)
	}
	args = append(append(append(args, row.server.flags...), "--"), argv...)
	t.Logf("rpwrap %s", strings.Join(args, " "))
	w := startRpwrap(t, dir, env, args...)

	loads := startTargetLoads(t, parseTargets(t, clients))
	waitEachSent(t, loads, matrixPerGen)
	var late []lateAnswer
	for i := range matrixRestarts {
		pending := dialLate(loads)
		resp, answers := restartAnsweringAtFlip(t, w, i+2, pending)
		late = append(late, answers...)
		if !resp.OK || resp.Restart == nil {
			t.Errorf("restart %d: rpwrap ctl restart: %s", i+1, resp.Error)
			break
		}
		r := *resp.Restart
		t.Logf("restart %d: generation %d ready in %v, flip %v, drain %v",
			i+1, r.Generation, r.Ready.Round(time.Millisecond), r.Flip, r.Drain.Round(time.Millisecond))
		waitEachSent(t, loads, matrixPerGen)
	}
	requireEveryAnswer(t, loads)
	requireLateAnswers(t, late)
	requireBacklog(t, listen)
	if st := w.status(); st.Restarts != matrixRestarts || st.RolledBack != 0 {
		t.Errorf("status: %d restarts, %d rolled back; want %d and 0", st.Restarts, st.RolledBack, matrixRestarts)
	}
}

// requireBacklog checks that every listening TCP socket on the row's ports
// has rpwrap's backlog (--backlog, default 4096, capped by somaxconn)
// whatever listen(2) the server called on it.
func requireBacklog(t *testing.T, listen []string) {
	t.Helper()
	want := 4096
	if b, err := os.ReadFile("/proc/sys/net/core/somaxconn"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			want = min(want, n)
		}
	}
	for _, a := range listen {
		if strings.HasPrefix(a, "udp://") {
			continue
		}
		_, port := splitHostPort(t, a)
		out, err := exec.Command("ss", "-Hltn", "sport = :"+port).Output()
		if err != nil {
			t.Fatalf("ss -Hltn: %v", err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			f := strings.Fields(line) // State Recv-Q Send-Q Local Peer
			if len(f) < 4 {
				continue
			}
			if f[2] != strconv.Itoa(want) {
				t.Errorf("listening socket %s has backlog %s, want %d (rpwrap's --backlog for every generation): the server's listen(2) changed it", f[3], f[2], want)
			}
		}
	}
}

// slowRowsEnabled says whether rows marked slow run: in CI, on request, and
// whenever skipping is forbidden.
func slowRowsEnabled() bool {
	return os.Getenv("CI") == "true" || os.Getenv(slowRowEnv) == "1" || os.Getenv("RPWRAP_TEST_STRICT") == "1"
}

// portsUsed is one more than the highest $N in row.
func portsUsed(row matrixRow) int {
	n := 0
	for _, s := range append(append(l(row.ready), row.listen...), row.clients...) {
		for i := 0; i < 10; i++ {
			if strings.Contains(s, fmt.Sprintf("$%d", i)) {
				n = max(n, i+1)
			}
		}
	}
	return n
}

// expandPorts replaces each $N in ss by ports[N].
func expandPorts(ss []string, ports []int) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		for n := len(ports) - 1; n >= 0; n-- {
			s = strings.ReplaceAll(s, fmt.Sprintf("$%d", n), fmt.Sprint(ports[n]))
		}
		out[i] = s
	}
	return out
}

// restartAnsweringAtFlip runs `rpwrap ctl restart` and, as soon as
// generation gen is active (the flip is behind it; the predecessor drains),
// sends the late clients' requests. It returns ctl's answer and theirs.
func restartAnsweringAtFlip(t *testing.T, w *wrapped, gen int, pending []lateClient) (supervisor.Response, []lateAnswer) {
	t.Helper()
	done := make(chan supervisor.Response, 1)
	go func() { done <- w.ctl("restart") }()
	deadline := time.Now().Add(eventTimeout)
	for {
		select {
		case resp := <-done: // ended before the poll saw it active: rolled back, or quick
			return resp, answerLate(pending, gen-1)
		default:
		}
		if _, st := w.generation(gen); st == supervisor.StateActive {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("generation %d not active within %v", gen, eventTimeout)
		}
		time.Sleep(5 * time.Millisecond) // polling rpwrap's status; bounded above
	}
	answers := answerLate(pending, gen-1)
	return <-done, answers
}
