//go:build linux

package supervisor

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// peerPid is the pid of the process at the other end of conn, the rpwrap
// that listens on the control socket (SO_PEERCRED); 0 when unknown.
func peerPid(conn *net.UnixConn) int {
	rc, err := conn.SyscallConn()
	if err != nil {
		return 0
	}
	pid := 0
	rc.Control(func(fd uintptr) {
		if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
			pid = int(cred.Pid)
		}
	})
	return pid
}

// stoppedError says that pid is stopped (SIGSTOP, Ctrl-Z, a debugger) and
// so cannot answer on path, or returns nil when it runs or is unknown.
func stoppedError(path string, pid int) error {
	if pid <= 0 {
		return nil
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) == 0 || (f[0] != "T" && f[0] != "t") {
		return nil
	}
	return fmt.Errorf("rpwrap at %s (pid %d) is stopped (state %s: SIGSTOP, Ctrl-Z or a debugger) and cannot answer: resume it with kill -CONT %d; a request it already received runs then",
		path, pid, f[0], pid)
}

// exchange writes req on conn and reads the response.
func exchange(conn *net.UnixConn, req Request) (Response, error) {
	var resp Response
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		return resp, fmt.Errorf("send request: %w", err)
	}
	if err := json.NewDecoder(conn).Decode(&resp); err != nil {
		return resp, fmt.Errorf("read answer: %w", err)
	}
	return resp, nil
}
