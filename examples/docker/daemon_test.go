//go:build linux

package docker

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rpwrap/rpwrap/internal/testutil"
)

// HostEnv names the variable that tells the tests which dockerd to use:
// a DOCKER_HOST value such as unix:///run/rpwrap-dockerd/docker.sock.
const HostEnv = "RPWRAP_TEST_DOCKER_HOST"

// dockerdScript starts and stops the private dockerd.
const dockerdScript = "../../.ci/dockerd.sh"

// daemon is the dockerd the tests talk to, through the docker CLI.
type daemon struct {
	host string // DOCKER_HOST
}

var (
	daemonOnce sync.Once
	theDaemon  *daemon
	daemonErr  string // why there is no daemon
	started    bool   // this run started the private dockerd, and stops it
)

// requireDocker returns the daemon to use, or skips the test (fails it
// under RPWRAP_TEST_STRICT=1) without root or a daemon that answers.
func requireDocker(t *testing.T) *daemon {
	t.Helper()
	testutil.RequireRoot(t)
	daemonOnce.Do(findDaemon)
	if theDaemon == nil {
		testutil.SkipOrFail(t, daemonErr)
	}
	return theDaemon
}

// findDaemon takes the daemon from HostEnv. Without it, under CI it gives
// up; otherwise it uses the private dockerd of .ci/dockerd.sh, starting it
// when it is not running (stopStartedDaemon stops it again).
func findDaemon() {
	hint := fmt.Sprintf("start a private dockerd with `%s start` (as root) and export %s=unix:///run/rpwrap-dockerd/docker.sock", ".ci/dockerd.sh", HostEnv)
	if _, err := exec.LookPath("docker"); err != nil {
		daemonErr = "docker CLI not found (apt-get install docker.io); then " + hint
		return
	}
	host := os.Getenv(HostEnv)
	if host == "" && testutil.Strict() {
		daemonErr = HostEnv + " is not set: " + hint
		return
	}
	if host == "" {
		var err error
		if host, err = privateDaemon(); err != nil {
			daemonErr = fmt.Sprintf("no dockerd for the container tests: %v; %s", err, hint)
			return
		}
	}
	d := &daemon{host: host}
	if out, err := d.try(30*time.Second, "version", "--format", "{{.Server.Version}}"); err != nil {
		daemonErr = fmt.Sprintf("dockerd at %s=%s does not answer: %v (%s); %s", HostEnv, host, err, out, hint)
		return
	}
	theDaemon = d
}

// privateDaemon returns the DOCKER_HOST of .ci/dockerd.sh's daemon,
// starting it when it does not answer.
func privateDaemon() (string, error) {
	if out, err := exec.Command(dockerdScript, "host").Output(); err == nil {
		return parseHost(out)
	}
	out, err := exec.Command(dockerdScript, "start").Output()
	if err != nil {
		return "", fmt.Errorf("%s start: %w", dockerdScript, err)
	}
	started = true
	return parseHost(out)
}

func parseHost(out []byte) (string, error) {
	for _, line := range strings.Split(string(out), "\n") {
		if h, ok := strings.CutPrefix(line, "DOCKER_HOST="); ok {
			return h, nil
		}
	}
	return "", fmt.Errorf("%s printed no DOCKER_HOST= line: %q", dockerdScript, out)
}

// stopStartedDaemon stops the private dockerd if this run started it.
func stopStartedDaemon() {
	if !started {
		return
	}
	if out, err := exec.Command(dockerdScript, "stop").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "%s stop: %v\n%s", dockerdScript, err, out)
	}
}

// try runs the docker CLI against d and returns its stdout, or an error
// with its stderr.
func (d *daemon) try(timeout time.Duration, args ...string) (string, error) {
	return d.tryIn("", timeout, args...)
}

// tryIn is try with the working directory dir ("" for this one).
func (d *daemon) tryIn(dir string, timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c := exec.CommandContext(ctx, "docker", args...)
	c.Dir = dir
	c.Env = append(os.Environ(), "DOCKER_HOST="+d.host, "DOCKER_BUILDKIT=0") // no registry: the legacy builder
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		return stdout.String(), fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// tryCombined runs the docker CLI and returns its stdout and stderr as
// one stream, as `docker logs` needs.
func (d *daemon) tryCombined(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c := exec.CommandContext(ctx, "docker", args...)
	c.Env = append(os.Environ(), "DOCKER_HOST="+d.host)
	out, err := c.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("docker %s: %w", strings.Join(args, " "), err)
	}
	return string(out), nil
}

// run runs the docker CLI and fails the test when it fails.
func (d *daemon) run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := d.try(2*time.Minute, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// build builds the image tag from the Dockerfile in dir, with the host's
// network (for apt-get), and fails the test when the build fails.
func (d *daemon) build(t *testing.T, dir, tag string) {
	t.Helper()
	start := time.Now()
	if out, err := d.tryIn(dir, 10*time.Minute, "build", "--network", "host", "-q", "--label", imageLabel, "-t", tag, "."); err != nil {
		t.Fatalf("build image %s: %v\n%s", tag, err, out)
	}
	t.Logf("built image %s in %v", tag, time.Since(start).Round(time.Millisecond))
}

// imageLabel marks the images the tests build, so that pruneImages
// removes theirs only.
const imageLabel = "rpwrap-test=1"

// pruneImages removes the tests' images that a rebuild left untagged.
func (d *daemon) pruneImages(t *testing.T) {
	if out, err := d.try(2*time.Minute, "image", "prune", "-f", "--filter", "label="+imageLabel); err != nil {
		t.Errorf("remove the tests' untagged images: %v\n%s", err, out)
	}
}

// hasImage reports whether the daemon has the image ref.
func (d *daemon) hasImage(ref string) bool {
	_, err := d.try(30*time.Second, "image", "inspect", "--format", "{{.Id}}", ref)
	return err == nil
}
