//go:build linux

package fdpass

import "github.com/rpwrap/rpwrap/fdpass/intercept"

// BindSocketFd is the descriptor at which a Bind-route shim receives its end
// of the socket pair over which it sends rpwrap the seccomp listener. The
// server itself never sees it: the shim closes it before execve(2).
const BindSocketFd = 3

func init() {
	installBindFilter = func() error { return intercept.InstallAndSend(BindSocketFd) }
}
