//go:build linux

package main

import (
	"bufio"
	"os"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// machine is where and when a run happened, printed with every output.
type machine struct {
	Command string `json:"command"`
	Kernel  string `json:"kernel"`
	CPU     string `json:"cpu"`
	CPUs    int    `json:"cpus"`
	Go      string `json:"go"`
	Date    string `json:"date"`
}

func describeMachine(args []string) machine {
	m := machine{
		Command: strings.Join(append([]string{"go run ./bench"}, args...), " "),
		CPUs:    runtime.NumCPU(),
		Go:      runtime.Version(),
		Date:    time.Now().UTC().Format(time.RFC3339),
		CPU:     cpuModel(),
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Sysname[:]) + " " + unix.ByteSliceToString(u.Release[:])
	}
	return m
}

// cpuModel is the "model name" of /proc/cpuinfo, or "unknown".
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}
