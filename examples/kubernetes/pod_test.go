//go:build linux

package kubernetes

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/internal/testutil"
)

// TestContainerCommandLine runs the Deployment's container as the kubelet
// would, short of a cluster: rpwrap with the manifest's own args, nginx
// with the ConfigMap's nginx.conf in a directory standing for the mount, in
// a network namespace of its own (the pod's). A change of the ConfigMap,
// written the way the kubelet writes it (a new file renamed over the old),
// is served after `rpwrap ctl restart`; a broken one is rolled back and the
// last good one serves on; SIGTERM turns /readyz to 503 at once while the
// server keeps answering for --stop-delay, and rpwrap exits with nginx's
// status 0 well inside terminationGracePeriodSeconds.
func TestContainerCommandLine(t *testing.T) {
	testutil.RequireRoot(t)
	for _, tool := range []string{"ip", "curl", "/usr/sbin/nginx"} {
		if _, err := exec.LookPath(tool); err != nil {
			testutil.SkipOrFail(t, tool+" not installed (apt-get install iproute2 curl nginx)")
		}
	}
	objs := manifest(t)
	cm, pod := objs["ConfigMap"], objs["Deployment"].Spec.Template.Spec
	c := pod.Containers[0]
	dir := t.TempDir()
	mount := filepath.Join(dir, "nginx-conf")
	os.Mkdir(mount, 0o755)
	pidLine := "pid " + filepath.Join(dir, "nginx.pid") + ";" // not the container's /tmp, shared here
	writeConfig := func(text string) {
		t.Helper()
		text = strings.Replace(text, "pid /tmp/nginx.pid;", pidLine, 1)
		tmp := filepath.Join(mount, "..data_tmp")
		if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(mount, "nginx.conf")); err != nil {
			t.Fatal(err)
		}
	}
	release1 := cm.Data["nginx.conf"]
	if !strings.Contains(release1, "pid /tmp/nginx.pid;") || !strings.Contains(release1, `"release 1\n"`) {
		t.Fatalf("the ConfigMap's nginx.conf changed: this test rewrites its pid line and its answer")
	}
	writeConfig(release1)
	args := append([]string(nil), c.Args...)
	for i, a := range args {
		args[i] = strings.Replace(a, c.VolumeMounts[0].MountPath, mount, 1)
	}

	rpwrap := filepath.Join(dir, "rpwrap")
	if err := testutil.GoBuild(rpwrap, "../../cmd/rpwrap", "CGO_ENABLED=0"); err != nil {
		t.Fatal(err)
	}
	ns := newPodNS(t)
	control := filepath.Join(dir, "rpwrap.sock")
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, rpwrap}, args...)...)
	logFile, _ := os.Create(filepath.Join(dir, "rpwrap.log"))
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(), "RPWRAP_CONTROL="+control)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var exitErr error
	go func() { exitErr = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(logFile.Name())
			t.Logf("rpwrap's log:\n%s", b)
		}
	})

	health := "http://127.0.0.1:" + strconv.Itoa(port(rpwrapFlag(c.Args, "health", ""))) + "/readyz"
	web := "http://127.0.0.1:" + strconv.Itoa(port(rpwrapFlag(c.Args, "listen", ""))) + "/"
	if err := poll(30*time.Second, func() bool { code, _ := curl(ns, health); return code == 200 }); err != nil {
		t.Fatalf("/readyz: %v", err)
	}
	expect(t, ns, web, 200, "release 1")

	ctl := func() (int, string) {
		out, err := exec.Command(rpwrap, "ctl", "--control", control, "restart").CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		}
		return 0, string(out)
	}
	writeConfig(strings.Replace(release1, `"release 1\n"`, `"release 2\n"`, 1))
	if code, out := ctl(); code != 0 {
		t.Fatalf("ctl restart after the ConfigMap changed: exit %d: %s", code, out)
	}
	expect(t, ns, web, 200, "release 2")

	writeConfig(strings.Replace(release1, "listen 0.0.0.0:8080;", "listen 0.0.0.0:8080; no_such_directive;", 1))
	code, out := ctl()
	if code != 1 || !strings.Contains(out, "generation") {
		t.Errorf("ctl restart on a broken nginx.conf: exit %d: %q; want exit 1 (rolled back)", code, out)
	}
	t.Logf("broken ConfigMap: ctl restart exit %d: %s", code, strings.TrimSpace(out))
	expect(t, ns, web, 200, "release 2")

	stopDelay := duration(t, c.Args, "stop-delay", "0s")
	grace := time.Duration(pod.TerminationGracePeriodSeconds) * time.Second
	sent := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	if err := poll(2*time.Second, func() bool { code, _ := curl(ns, health); return code == 503 }); err != nil {
		t.Errorf("/readyz after SIGTERM: not 503 %v", err)
	}
	turned := time.Since(sent)
	served := 0
	for time.Since(sent) < stopDelay-time.Second {
		expect(t, ns, web, 200, "release 2")
		served++
		time.Sleep(200 * time.Millisecond)
	}
	select {
	case <-done:
		err, took := exitErr, time.Since(sent)
		t.Logf("SIGTERM: /readyz 503 after %v, %d requests answered during --stop-delay %v, rpwrap exited after %.1fs (%v); grace period %v",
			turned.Round(time.Millisecond), served, stopDelay, took.Seconds(), err, grace)
		if err != nil || took < stopDelay {
			t.Errorf("rpwrap exited %v after SIGTERM with %v; want status 0 after --stop-delay %v", took, err, stopDelay)
		}
	case <-time.After(grace):
		t.Errorf("rpwrap still runs %v after SIGTERM: the kubelet would SIGKILL it", grace)
	}
}

// expect fetches url in ns and checks its status and body.
func expect(t *testing.T, ns, url string, code int, body string) {
	t.Helper()
	if c, b := curl(ns, url); c != code || strings.TrimSpace(b) != body {
		t.Errorf("GET %s: %d %q; want %d %q", url, c, b, code, body)
	}
}

// curl fetches url from inside namespace ns: the status (0 on no answer)
// and the body.
func curl(ns, url string) (int, string) {
	out, _ := exec.Command("ip", "netns", "exec", ns, "curl", "-s", "--max-time", "5", "-w", "\n%{http_code}", url).Output()
	s := string(out)
	i := strings.LastIndex(s, "\n")
	if i < 0 {
		return 0, s
	}
	code, _ := strconv.Atoi(s[i+1:])
	return code, s[:i]
}

func poll(timeout time.Duration, ok func() bool) error {
	for deadline := time.Now().Add(timeout); !ok(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("not after %v", timeout)
		}
	}
	return nil
}

// newPodNS creates a network namespace for the pod; cleanup kills what is
// left in it and deletes it.
func newPodNS(t *testing.T) string {
	t.Helper()
	b := make([]byte, 2)
	rand.Read(b)
	ns := "fl" + hex.EncodeToString(b) + "pod"
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v %s", ns, err, out)
	}
	t.Cleanup(func() {
		out, _ := exec.Command("ip", "netns", "pids", ns).Output()
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(100 * time.Millisecond)
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v %s", ns, err, out)
		}
	})
	if out, err := exec.Command("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up in %s: %v %s", ns, err, out)
	}
	return ns
}
