//go:build linux

package kubernetes

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The parts of the API objects that the checks read, from the JSON that
// validate/ prints after decoding the manifest into k8s.io/api's types.
type object struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels"`
	} `json:"metadata"`
	Data map[string]string `json:"data"`
	Spec struct {
		Selector struct {
			MatchLabels map[string]string `json:"matchLabels"`
		} `json:"selector"`
		Template struct {
			Metadata struct {
				Labels map[string]string `json:"labels"`
			} `json:"metadata"`
			Spec podSpec `json:"spec"`
		} `json:"template"`
		Ports []struct {
			TargetPort any `json:"targetPort"`
		} `json:"ports"`
	} `json:"spec"`
}

type podSpec struct {
	TerminationGracePeriodSeconds int64 `json:"terminationGracePeriodSeconds"`
	Containers                    []struct {
		Image   string   `json:"image"`
		Command []string `json:"command"`
		Args    []string `json:"args"`
		Ports   []struct {
			Name          string `json:"name"`
			ContainerPort int    `json:"containerPort"`
		} `json:"ports"`
		ReadinessProbe probe `json:"readinessProbe"`
		LivenessProbe  probe `json:"livenessProbe"`
		StartupProbe   probe `json:"startupProbe"`
		VolumeMounts   []struct {
			Name      string `json:"name"`
			MountPath string `json:"mountPath"`
			SubPath   string `json:"subPath"`
		} `json:"volumeMounts"`
	} `json:"containers"`
	Volumes []struct {
		Name      string `json:"name"`
		ConfigMap struct {
			Name string `json:"name"`
		} `json:"configMap"`
	} `json:"volumes"`
}

type probe struct {
	HTTPGet struct {
		Path string `json:"path"`
		Port any    `json:"port"`
	} `json:"httpGet"`
	PeriodSeconds    int `json:"periodSeconds"`
	FailureThreshold int `json:"failureThreshold"`
}

// manifest decodes web.yaml strictly with the module in validate/ (a
// misspelt field or a wrong type fails here) and returns its objects by
// kind.
func manifest(t *testing.T) map[string]*object {
	t.Helper()
	cmd := exec.Command("go", "run", ".", "../web.yaml")
	cmd.Dir = "validate"
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("validate web.yaml against k8s.io/api: %v\n%s", err, stderr.String())
	}
	objs := map[string]*object{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		o := &object{}
		if err := json.Unmarshal(sc.Bytes(), o); err != nil {
			t.Fatalf("validate's output: %v", err)
		}
		objs[o.Kind] = o
	}
	for _, kind := range []string{"ConfigMap", "Deployment", "Service"} {
		if objs[kind] == nil {
			t.Fatalf("web.yaml has no %s", kind)
		}
	}
	return objs
}

// The validator itself refuses what the API server would: an unknown
// field, a value of the wrong type.
func TestValidateRefusesWhatTheAPIWould(t *testing.T) {
	dir := t.TempDir()
	good, err := os.ReadFile("web.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct{ from, to, want string }{
		"misspelt field": {"terminationGracePeriodSeconds:", "terminationGracePeriodSecond:", `unknown field "terminationGracePeriodSecond"`},
		"wrong type":     {"replicas: 3", "replicas: three", "replicas"},
	} {
		bad := strings.Replace(string(good), c.from, c.to, 1)
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".yaml")
		os.WriteFile(path, []byte(bad), 0o600)
		cmd := exec.Command("go", "run", ".", path)
		cmd.Dir = "validate"
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly")
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), c.want) {
			t.Errorf("%s: validate exit %v, output %q; want a failure naming %q", name, err, out, c.want)
		}
	}
}

// rpwrapFlag is the value of --name in args, or def.
func rpwrapFlag(args []string, name, def string) string {
	for i, a := range args {
		if a == "--" {
			break
		}
		if a == "--"+name && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v
		}
	}
	return def
}

func duration(t *testing.T, args []string, name, def string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(rpwrapFlag(args, name, def))
	if err != nil {
		t.Fatalf("--%s: %v", name, err)
	}
	return d
}

// graceMargin is what the grace period must leave beyond rpwrap's own
// bound, for the kubelet and the container runtime.
const graceMargin = 5 * time.Second

// The Deployment's numbers agree with each other: the grace period covers
// --stop-delay plus the longer of --stop-timeout and --drain-timeout with a
// margin; the readiness probe notices the stop well inside --stop-delay;
// the startup probe waits at least --ready-timeout; the probes ask rpwrap's
// --health port and the ports are the ones rpwrap listens on; the config
// file nginx reads is a key of the ConfigMap, mounted as a directory.
func TestDeploymentNumbersAgree(t *testing.T) {
	objs := manifest(t)
	d, cm, svc := objs["Deployment"], objs["ConfigMap"], objs["Service"]
	pod := d.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers; want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	if len(c.Command) != 0 {
		t.Errorf("command %v overrides the image's ENTRYPOINT, rpwrap", c.Command)
	}
	for k, v := range d.Spec.Selector.MatchLabels {
		if d.Spec.Template.Metadata.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the pod's labels %v", k, v, d.Spec.Template.Metadata.Labels)
		}
	}

	stopDelay := duration(t, c.Args, "stop-delay", "0s")
	stopTimeout := duration(t, c.Args, "stop-timeout", "30s")
	drainTimeout := duration(t, c.Args, "drain-timeout", "30s")
	readyTimeout := duration(t, c.Args, "ready-timeout", "60s")
	grace := time.Duration(pod.TerminationGracePeriodSeconds) * time.Second
	need := stopDelay + max(stopTimeout, drainTimeout) + graceMargin
	t.Logf("terminationGracePeriodSeconds %v; --stop-delay %v + max(--stop-timeout %v, --drain-timeout %v) + margin %v = %v",
		grace, stopDelay, stopTimeout, drainTimeout, graceMargin, need)
	if grace < need {
		t.Errorf("terminationGracePeriodSeconds %v < %v: the kubelet would SIGKILL rpwrap before it is done", grace, need)
	}
	if stopDelay == 0 {
		t.Error("no --stop-delay: the pod stops serving before its endpoint is removed")
	}
	r := c.ReadinessProbe
	if notice := time.Duration(r.PeriodSeconds*r.FailureThreshold) * time.Second; notice*2 > stopDelay {
		t.Errorf("the readiness probe notices the stop after up to %v; --stop-delay %v should be at least twice that", notice, stopDelay)
	}
	s := c.StartupProbe
	if wait := time.Duration(s.PeriodSeconds*s.FailureThreshold) * time.Second; wait < readyTimeout {
		t.Errorf("the startup probe gives up after %v, before --ready-timeout %v", wait, readyTimeout)
	}

	ports := map[string]int{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if got, want := port(rpwrapFlag(c.Args, "health", "")), ports["health"]; got != want || want == 0 {
		t.Errorf("--health port %d, container port \"health\" %d", got, want)
	}
	if got, want := port(rpwrapFlag(c.Args, "listen", "")), ports["http"]; got != want || want == 0 {
		t.Errorf("--listen port %d, container port \"http\" %d", got, want)
	}
	for name, p := range map[string]probe{"readiness": r, "liveness": c.LivenessProbe, "startup": s} {
		want := map[string]string{"readiness": "/readyz"}[name]
		if want == "" {
			want = "/livez"
		}
		if p.HTTPGet.Port != "health" || p.HTTPGet.Path != want {
			t.Errorf("%s probe asks %v%s; want health%s", name, p.HTTPGet.Port, p.HTTPGet.Path, want)
		}
	}
	if len(svc.Spec.Ports) == 0 || svc.Spec.Ports[0].TargetPort != "http" {
		t.Errorf("the Service's targetPort is not the container's http port")
	}

	conf := nginxConf(c.Args)
	if len(pod.Volumes) != 1 || pod.Volumes[0].ConfigMap.Name != cm.Metadata.Name {
		t.Fatalf("volumes %+v; want the ConfigMap %s", pod.Volumes, cm.Metadata.Name)
	}
	if len(c.VolumeMounts) != 1 || c.VolumeMounts[0].SubPath != "" || c.VolumeMounts[0].Name != pod.Volumes[0].Name {
		t.Fatalf("volume mounts %+v; want the ConfigMap's volume as a directory (a subPath mount never sees an update)", c.VolumeMounts)
	}
	if dir, key := filepath.Split(conf); filepath.Clean(dir) != c.VolumeMounts[0].MountPath || cm.Data[key] == "" {
		t.Errorf("nginx -c %s: want a key of the ConfigMap under %s", conf, c.VolumeMounts[0].MountPath)
	}
}

// The image's ENTRYPOINT is rpwrap, so the Deployment's args are its flags.
func TestDockerfileEntrypointIsRpwrap(t *testing.T) {
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^ENTRYPOINT \["/usr/local/bin/rpwrap"\]$`).Match(b) {
		t.Error(`Dockerfile: want ENTRYPOINT ["/usr/local/bin/rpwrap"]`)
	}
}

// nginxConf is the path after nginx's -c in the command after "--".
func nginxConf(args []string) string {
	for i, a := range args {
		if a == "-c" && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// port is the port of [HOST]:PORT, or 0.
func port(addr string) int {
	i := strings.LastIndex(addr, ":")
	if i < 0 {
		return 0
	}
	n := 0
	for _, r := range addr[i+1:] {
		if r < '0' || r > '9' {
			return 0
		}
		n = n*10 + int(r-'0')
	}
	return n
}
