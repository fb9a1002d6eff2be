//go:build linux

// Command rpwrap gives any Linux network server zero-downtime restarts: it
// owns the listening sockets, passes them to the server with systemd socket
// activation, and on restart steers new connections from the old process to
// the new one with an eBPF program on the SO_REUSEPORT group. Run
// `rpwrap --help` for the three ways to run it.
package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"

	"github.com/rpwrap/rpwrap/fdpass"
	"github.com/rpwrap/rpwrap/supervisor"
)

// version is set at build time: go build -ldflags "-X main.version=v1.2.3";
// without it main takes it from the binary's build information
// (resolveVersion), so a build from a git clone names its commit.
var version = "devel"

// env is the outside world of one run: the process environment and the
// standard streams, so the CLI is testable as a function.
type env struct {
	getenv func(string) string
	stdout io.Writer
	stderr io.Writer
}

// init keeps the main goroutine on the main thread: main serves
// supervisor.ServeMainThread on it, the thread that forks the servers and
// execs an in-place upgrade.
func init() { runtime.LockOSThread() }

func main() {
	fdpass.RunShim() // in the exec shim this execs the server and never returns
	version = resolveVersion(version)
	go func() {
		supervisor.WaitMainThread()
		os.Exit(run(env{getenv: os.Getenv, stdout: os.Stdout, stderr: os.Stderr}, os.Args[1:]))
	}()
	supervisor.ServeMainThread()
}

// run dispatches to a subcommand and returns the exit status.
func run(e env, args []string) int {
	if len(args) > 0 {
		switch args[0] {
		case "ctl":
			return runCtl(e, args[1:])
		case "demo":
			return runDemo(e, args[1:])
		case "serve-demo": // hidden: the built-in server that demo wraps
			return runServeDemo(args[1:])
		case "--help-man": // hidden: rpwrap(1), for packaging/build-deb.sh
			return writeOrFail(e, writeManPage(e.stdout, version, manDate(e)))
		case "--help-completion": // hidden: the bash completion script
			return writeOrFail(e, writeBashCompletion(e.stdout))
		case "version":
			return printVersion(e)
		case supervisor.CheckCommand: // hidden: asked by an rpwrap about to upgrade onto this binary
			return runUpgradeCheck(e, args[1:])
		}
	}
	return runWrap(e, args)
}

// writeOrFail is the exit status of a command that only writes to stdout.
func writeOrFail(e env, err error) int {
	if err != nil {
		printError(e.stderr, "rpwrap", "write to stdout: "+err.Error())
		return 1
	}
	return 0
}

// printError writes "PREFIX: MSG" to w, once: a message that already
// starts with "rpwrap: " (fdpass.CommandError carries it, for the exec
// shim, which prints it alone) does not get a second one.
func printError(w io.Writer, prefix, msg string) {
	fmt.Fprintf(w, "%s: %s\n", prefix, strings.TrimPrefix(msg, "rpwrap: "))
}
