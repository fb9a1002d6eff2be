//go:build linux

package supervisor

import (
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// processStarted is when rpwrap started, near enough: when this package
// was initialised.
var processStarted = time.Now()

// Process describes rpwrap itself, for `rpwrap ctl status`.
type Process struct {
	Pid        int       `json:"pid"`
	Version    string    `json:"version"`
	Executable string    `json:"executable"` // os.Executable; "(deleted)" when upgraded in place
	Started    time.Time `json:"started"`
	Uptime     string    `json:"uptime"`
	Binary     string    `json:"binary"` // the file this binary was executed from
	Since      time.Time `json:"since"`  // when this binary took over: the start, or the last upgrade
	// Upgrades are the last in-place upgrades (ctl upgrade), oldest first.
	Upgrades []UpgradeResult `json:"upgrades,omitempty"`
}

// ConfigStatus is the configuration rpwrap runs with, as the flags name it.
type ConfigStatus struct {
	Command          []string `json:"command"`
	Path             string   `json:"path"` // the server binary, resolved
	Route            string   `json:"pass"`
	Ready            string   `json:"ready"`
	Selector         string   `json:"selector"` // as asked for (auto, ebpf, cbpf); Status.Selector is what runs
	Backlog          int      `json:"backlog"`
	StopSignal       string   `json:"stop_signal"`
	ReadyTimeout     string   `json:"ready_timeout"`
	StopTimeout      string   `json:"stop_timeout"`
	DrainTimeout     string   `json:"drain_timeout"`
	DrainStall       string   `json:"drain_stall"`
	DrainDelay       string   `json:"drain_delay"`
	ShutdownAtFlip   bool     `json:"shutdown_at_flip"`
	MaxDraining      int      `json:"max_draining"`
	RestartOnFailure bool     `json:"restart_on_failure"`
	Control          string   `json:"control,omitempty"`
	StopDelay        string   `json:"stop_delay"`
	Health           string   `json:"health,omitempty"`  // the health server's address, port resolved
	Metrics          string   `json:"metrics,omitempty"` // the metrics endpoint's address, port resolved
	Watch            string   `json:"watch"`
	WatchCheck       string   `json:"watch_check,omitempty"`
	Canary           string   `json:"canary,omitempty"` // PCT:DURATION,...
}

// Binary identifies the server's executable as it was when a generation
// was spawned: a new device, inode or mtime means the file was replaced
// (an upgrade took). Error says why it could not be read.
type Binary struct {
	Path    string     `json:"path"`
	Device  string     `json:"device,omitempty"` // major:minor
	Inode   uint64     `json:"inode,omitempty"`
	ModTime *time.Time `json:"mtime,omitempty"`
	Error   string     `json:"error,omitempty"`
}

// binaryOf stats path now.
func binaryOf(path string) Binary {
	b := Binary{Path: path}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		b.Error = os.NewSyscallError("stat", err).Error()
		return b
	}
	mtime := time.Unix(st.Mtim.Unix()).Local()
	b.Device = fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev))
	b.Inode, b.ModTime = st.Ino, &mtime
	return b
}

func (b Binary) String() string {
	switch {
	case b.Path == "":
		return "unknown"
	case b.Error != "" || b.ModTime == nil:
		return b.Path + " (" + b.Error + ")"
	}
	return fmt.Sprintf("%s (dev %s, inode %d, mtime %s)", b.Path, b.Device, b.Inode, b.ModTime.Format(time.RFC3339))
}

// about describes rpwrap and its configuration.
func (s *Supervisor) about(now time.Time) (*Process, *ConfigStatus) {
	exe, err := os.Executable()
	if err != nil {
		exe = "unknown: " + err.Error()
	}
	s.up.mu.Lock()
	p := &Process{Pid: os.Getpid(), Version: s.cfg.Version, Executable: exe,
		Started: processStarted, Uptime: age(now, processStarted),
		Binary: s.up.binary, Since: s.up.since, Upgrades: append([]UpgradeResult(nil), s.up.history...)}
	s.up.mu.Unlock()
	c := s.cfg
	return p, &ConfigStatus{
		Command: c.Argv, Path: c.Path, Route: string(c.Route), Ready: c.Ready.String(), Selector: string(c.Selector),
		Backlog: c.Backlog, StopSignal: signalName(c), ReadyTimeout: c.ReadyTimeout.String(),
		StopTimeout: c.StopTimeout.String(), DrainTimeout: c.DrainTimeout.String(), DrainStall: c.DrainStall.String(),
		DrainDelay: c.DrainDelay.String(), ShutdownAtFlip: c.ShutdownAtFlip, MaxDraining: c.MaxDraining,
		RestartOnFailure: c.RestartOnFailure, Control: c.ControlPath,
		StopDelay: c.StopDelay.String(), Health: s.HealthAddr(), Metrics: s.MetricsAddr(),
		Watch: c.Watch.String(), WatchCheck: c.WatchCheck.String(), Canary: canaryString(c.Canary),
	}
}

func signalName(c Config) string {
	if n := unix.SignalName(c.StopSignal); n != "" {
		return strings.TrimPrefix(n, "SIG")
	}
	return fmt.Sprint(int(c.StopSignal))
}

// age is how long ago t was, rounded for a reader: tenths of a second
// under a minute, seconds above.
func age(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	if d < time.Minute {
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}
