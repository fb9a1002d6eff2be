//go:build linux

package fleet

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// writeAnsibleSetup writes the inventory, known_hosts (from each host's
// own key: host keys are checked) and an ansible.cfg that keeps Ansible's
// state in the test's directory.
func (f *fleet) writeAnsibleSetup(t *testing.T) (cfg string) {
	t.Helper()
	var inv, known strings.Builder
	inv.WriteString("[fleet]\n")
	for _, h := range f.hosts {
		fmt.Fprintf(&inv, "%s ansible_host=%s server_path=%s control=%s\n", h.name, h.addr, h.serverPath(), h.controlPath())
		pub, err := os.ReadFile(filepath.Join(h.dir, "ssh_host_ed25519_key.pub"))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&known, "%s %s\n", h.addr, strings.TrimSpace(string(pub)))
	}
	fmt.Fprintf(&inv, "\n[fleet:vars]\nansible_user=root\nansible_ssh_private_key_file=%s\nrpwrap=%s\n", f.key, f.rpwrap)
	a := filepath.Join(f.dir, "ansible")
	cfg = filepath.Join(a, "ansible.cfg")
	files := map[string]string{
		filepath.Join(a, "inventory.ini"): inv.String(),
		filepath.Join(a, "known_hosts"):   known.String(),
		cfg: fmt.Sprintf(`[defaults]
inventory = %[1]s/inventory.ini
interpreter_python = /usr/bin/python3
host_key_checking = True
retry_files_enabled = False
forks = 1
callbacks_enabled = ansible.posix.profile_tasks
local_tmp = %[1]s/tmp
remote_tmp = %[1]s/remote
[ssh_connection]
pipelining = True
ssh_args = -F /dev/null -o ControlMaster=auto -o ControlPersist=60s -o ControlPath=%[1]s/cp/%%C -o IdentitiesOnly=yes -o UserKnownHostsFile=%[1]s/known_hosts -o StrictHostKeyChecking=yes -o ConnectTimeout=10
`, a),
	}
	if err := os.MkdirAll(filepath.Join(a, "cp"), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeMasters(t, filepath.Join(a, "cp")) })
	for path, text := range files {
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return cfg
}

// rollout is one run of the playbook, as the test saw it.
type rollout struct {
	exit   int
	output string
	// per host, from the header of its first task to its last result line:
	// with serial: 1 these windows follow each other
	start, end map[string]time.Time
	order      []string
}

var resultLine = regexp.MustCompile(`^(ok|changed|fatal|failed|skipping|rescued|ignored): \[([^\]]+)\]`)

// runPlaybook runs rollout.yml with release as the new server binary, its
// output (-v: the restart's own answer) in the test's log line by line,
// and times each host's part from when each line arrived.
func (f *fleet) runPlaybook(t *testing.T, cfg, release string) *rollout {
	t.Helper()
	cmd := exec.Command("ansible-playbook", "-v", "rollout.yml", "-e", "release="+release)
	cmd.Env = append(os.Environ(), "ANSIBLE_CONFIG="+cfg, "ANSIBLE_HOME="+filepath.Join(f.dir, "ansible", "home"),
		"ANSIBLE_NOCOLOR=1", "ANSIBLE_FORCE_COLOR=0", "PYTHONUNBUFFERED=1", "SSH_AUTH_SOCK=")
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	r := &rollout{start: map[string]time.Time{}, end: map[string]time.Time{}}
	if err := cmd.Start(); err != nil {
		t.Fatalf("ansible-playbook: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var out strings.Builder
		var task time.Time
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			now, line := time.Now(), sc.Text()
			out.WriteString(line + "\n")
			if strings.TrimSpace(line) != "" {
				t.Logf("ansible | %s", line)
			}
			if strings.HasPrefix(line, "TASK [") {
				task = now
			}
			if m := resultLine.FindStringSubmatch(line); m != nil {
				h := m[2]
				if _, ok := r.start[h]; !ok {
					r.start[h] = task
					r.order = append(r.order, h)
				}
				r.end[h] = now
			}
		}
		r.output = out.String()
	}()
	timer := time.AfterFunc(3*time.Minute, func() { cmd.Process.Kill() })
	err := cmd.Wait()
	timer.Stop()
	pw.Close()
	<-done
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("ansible-playbook: %v", err)
		}
		r.exit = ee.ExitCode()
	}
	return r
}

// closeMasters ends the ssh connections that Ansible keeps open to the
// hosts (ControlPersist), one per control socket in dir.
func closeMasters(t *testing.T, dir string) {
	socks, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, sock := range socks {
		if out, err := exec.Command("ssh", "-F", "/dev/null", "-o", "ControlPath="+sock, "-O", "exit", "fleet-host").CombinedOutput(); err != nil {
			t.Logf("cleanup: ssh -O exit %s: %v %s", sock, err, out)
		}
	}
}
