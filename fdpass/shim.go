//go:build linux

package fdpass

import (
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Route says how a server receives its sockets.
type Route string

// The routes of DESIGN.md.
const (
	ListenFDs Route = "listen-fds" // fds 3.. with LISTEN_FDS, LISTEN_FDNAMES, LISTEN_PID (sd_listen_fds(3))
	Nginx     Route = "nginx"      // the same plus NGINX="3;4;", which nginx reads
	Bind      Route = "bind"       // the server binds by itself; a seccomp filter hands it rpwrap's socket
)

// The shim's private marker variables: the command to exec, and the route.
const (
	shimExecEnv  = "RPWRAP_SHIM_EXEC"
	shimRouteEnv = "RPWRAP_SHIM_ROUTE"
	shimPrefix   = "RPWRAP_SHIM_"
	shimArg0     = "rpwrap-shim"
	selfExe      = "/proc/self/exe"
)

// installBindFilter is called by the shim, on the thread that will execve the
// server, when the route is Bind: it installs the seccomp filter that hands
// the server's bind(2) calls to rpwrap. nil (the default) makes a Bind shim
// fail with exit 126 rather than let the server bind a socket of its own.
var installBindFilter func() error

func init() {
	if _, ok := os.LookupEnv(shimExecEnv); ok {
		// Keep main, and so RunShim, on the main thread: a seccomp filter
		// installed without TSYNC holds for the installing thread only, and
		// execve(2) must happen on that thread.
		runtime.LockOSThread()
	}
}

// ShimCommand returns how to start path with argv through the exec shim:
// exe is /proc/self/exe (this program, whose main calls RunShim first), args
// the shim's argv, env is base without any LISTEN_* variable (LISTEN_PIDFDID
// included), NGINX or shim marker left there, plus LISTEN_FDS=len(names) and
// LISTEN_FDNAMES=names joined by ':' (for the Nginx route also
// NGINX="3;4;..."), and the shim's markers. The shim adds LISTEN_PID itself.
// For the Bind route the server gets no LISTEN_* variable: the caller passes
// no listeners at fds 3.., the bind filter delivers them.
//
// The caller starts exe with args and env, the listeners' files at fds 3, 4,
// ... in names' order (exec.Cmd.ExtraFiles), and the process attributes it
// needs. If argv is empty, path is the server's argv[0]. It cannot fail.
func ShimCommand(path string, argv []string, base []string, names []string, route Route) (exe string, args []string, env []string) {
	if len(argv) == 0 {
		argv = []string{path}
	}
	env = cleanEnv(base)
	if route != Bind {
		env = append(env, "LISTEN_FDS="+strconv.Itoa(len(names)), "LISTEN_FDNAMES="+strings.Join(names, ":"))
	}
	if route == Nginx {
		env = append(env, "NGINX="+nginxFDs(len(names)))
	}
	env = append(env, shimExecEnv+"="+path, shimRouteEnv+"="+string(route))
	return selfExe, append([]string{shimArg0}, argv...), env
}

// cleanEnv drops what a server must not inherit from rpwrap's environment.
func cleanEnv(base []string) []string {
	env := make([]string, 0, len(base)+4)
	for _, kv := range base {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "LISTEN_") || strings.HasPrefix(name, shimPrefix) || name == "NGINX" {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// nginxFDs is nginx's list of inherited sockets: "3;4;".
func nginxFDs(n int) string {
	var b strings.Builder
	for fd := listenFdsStart; fd < listenFdsStart+n; fd++ {
		b.WriteString(strconv.Itoa(fd) + ";")
	}
	return b.String()
}

// RunShim must be the first thing main (and TestMain of a package whose tests
// start servers through ShimCommand) calls. In a process that ShimCommand
// started, it sets LISTEN_PID to its own pid, removes its markers, marks every
// fd above the listeners close-on-exec, and execve(2)s the command on the
// same thread: it never returns. If the exec fails it writes "rpwrap: PATH:
// ..." on stderr and exits 127 when the command is not found, 126 when it
// cannot be executed. In any other process it returns at once.
func RunShim() {
	path, ok := os.LookupEnv(shimExecEnv)
	if !ok {
		return
	}
	os.Exit(runShim(path))
}

func runShim(path string) int {
	route := Route(os.Getenv(shimRouteEnv))
	os.Unsetenv(shimExecEnv)
	os.Unsetenv(shimRouteEnv)
	n := 0
	if route == Bind {
		if err := bindFilter(); err != nil {
			fmt.Fprintf(os.Stderr, "rpwrap: %s: %v\n", path, err)
			return 126
		}
	} else {
		n, _ = strconv.Atoi(os.Getenv("LISTEN_FDS"))
		os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	}
	for fd := listenFdsStart; route == Nginx && fd < listenFdsStart+n; fd++ {
		// nginx takes inherited sockets as its old master left them, which
		// was non-blocking; a blocking one parks a worker in accept(2). Each
		// generation has a socket of its own, so no other holder is affected.
		if err := unix.SetNonblock(fd, true); err != nil {
			fmt.Fprintf(os.Stderr, "rpwrap: %s: make inherited socket %d non-blocking for nginx: %v\n", path, fd, err)
			return 126
		}
	}
	if err := closeOnExecFrom(listenFdsStart + n); err != nil {
		// The server would inherit descriptors of rpwrap's that are not its own.
		fmt.Fprintf(os.Stderr, "rpwrap: %s: mark descriptors close-on-exec: %v\n", path, err)
		return 126
	}
	err := syscall.Exec(path, os.Args[1:], os.Environ())
	return execFailure(path, err)
}

// closeOnExecFrom marks every descriptor from first on close-on-exec: with
// close_range(2) (Linux 5.11), else one by one from /proc/self/fd.
func closeOnExecFrom(first int) error {
	err := unix.CloseRange(uint(first), math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC)
	if err == nil {
		return nil
	}
	ents, rerr := os.ReadDir("/proc/self/fd")
	if rerr != nil {
		return fmt.Errorf("close_range: %v; list /proc/self/fd: %w", err, rerr)
	}
	for _, e := range ents {
		fd, perr := strconv.Atoi(e.Name())
		if perr != nil || fd < first {
			continue
		}
		if _, ferr := unix.FcntlInt(uintptr(fd), unix.F_SETFD, unix.FD_CLOEXEC); ferr != nil && ferr != unix.EBADF {
			return fmt.Errorf("fcntl F_SETFD on fd %d: %w", fd, ferr)
		}
	}
	return nil
}

func bindFilter() error {
	if installBindFilter == nil {
		return errors.New("the bind route needs bind interception, which this rpwrap binary lacks: use --pass listen-fds or nginx")
	}
	if err := installBindFilter(); err != nil {
		return fmt.Errorf("install bind filter: %w", err)
	}
	return nil
}

// execFailure reports a failed execve(2) as the shell would, and returns the
// exit code.
func execFailure(path string, err error) int {
	code, what := 126, ErrNotExecutable
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		code, what = 127, ErrNotFound
	}
	fmt.Fprintf(os.Stderr, "%v\n", &CommandError{Cmd: path, Err: what, Detail: fmt.Sprintf("(execve: %v)", err)})
	return code
}
