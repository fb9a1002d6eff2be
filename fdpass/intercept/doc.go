// Package intercept implements bind interception with seccomp user
// notification (seccomp_unotify(2), seccomp(2)): a server that binds its own
// listening socket gets rpwrap's socket instead, with no change to the
// server, no cgo and no LD_PRELOAD, so static binaries work too.
//
// The exec shim, on its main thread (runtime.LockOSThread in init), calls
// InstallAndSend right before execve(2). It installs a filter that answers
// bind(2) with SECCOMP_RET_USER_NOTIF and everything else with
// SECCOMP_RET_ALLOW (flag SECCOMP_FILTER_FLAG_NEW_LISTENER, plus
// WAIT_KILLABLE_RECV where the kernel has it), and sends the listener fd to
// rpwrap over a unix socket. The filter is inherited by every descendant of
// the server and cannot be removed.
//
// rpwrap receives that fd with Receive and serves it with an Interceptor.
// For each bind it reads the sockaddr from /proc/TID/mem (at most
// sizeof(struct sockaddr_storage)), checks SECCOMP_IOCTL_NOTIF_ID_VALID, and
// only then acts:
//
//   - A bind whose family, address and port, and whose socket's SO_TYPE and
//     SO_PROTOCOL, are exactly those of a Managed socket, the first such bind
//     in this generation's process tree: rpwrap copies O_NONBLOCK (from the
//     server's socket) and FD_CLOEXEC (from /proc/TID/fdinfo) and the socket
//     options a server sets before bind that still matter (SO_KEEPALIVE,
//     SO_RCVBUF, SO_SNDBUF, TCP_NODELAY, TCP_DEFER_ACCEPT, TCP_FASTOPEN),
//     puts its socket at the server's fd number with
//     SECCOMP_IOCTL_NOTIF_ADDFD (SECCOMP_ADDFD_FLAG_SETFD; the server's own
//     socket is closed by it), then answers the bind with 0 in a separate
//     SECCOMP_IOCTL_NOTIF_SEND. The server's listen(2) then sets the backlog.
//     O_NONBLOCK and the options belong to the socket, so every holder sees
//     them, rpwrap too: each generation gets its own socket.
//   - Every later bind of that address by any process of the tree, a worker
//     or a CGI, fails with EADDRINUSE and a log line: no second socket of the
//     server can join the reuseport group, and nobody but the first binder
//     gets the production listener.
//   - Any other bind goes on unchanged (SECCOMP_USER_NOTIF_FLAG_CONTINUE). A
//     bind of the managed port on a wildcard address (0.0.0.0:P or [::]:P
//     while 127.0.0.1:P is managed, or the reverse) also goes on unchanged,
//     and logf gets a line naming both addresses.
//
// Serve returns when the notify fd reports POLLHUP (no task is left under
// the filter) or when its context is done. Once the notify fd is closed,
// every bind under the filter fails with ENOSYS: the server must not outlive
// rpwrap. Binds of other ABIs (x32, 32-bit compat) are not intercepted.
//
// Example, parent side (the child runs the shim with the other end as fd 3):
//
//	notify, err := intercept.Receive(parentEnd)
//	if err != nil {
//		return err
//	}
//	defer notify.Close()
//	icpt := intercept.New(notify, []intercept.Managed{{Network: "tcp", Addr: addr, File: ln}}, slog.Info)
//	err = icpt.Serve(ctx) // returns nil when the server's process tree is gone
//
// and in the shim:
//
//	func init() { runtime.LockOSThread() }
//	...
//	if err := intercept.InstallAndSend(3); err != nil {
//		os.Exit(126)
//	}
//	syscall.Exec(path, argv, env)
package intercept
