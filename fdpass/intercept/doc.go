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
// only then acts. Binds of a port no Managed socket has go on unchanged
// (SECCOMP_USER_NOTIF_FLAG_CONTINUE) without a look at the socket. For a
// managed port it reads the server's socket from /proc/TID: its inode
// (/proc/TID/fd/N), its protocol (the system.sockprotoname attribute:
// "TCP", "TCPv6", "UDP", "UDPv6"; anything else, MPTCP included, never
// matches) and O_NONBLOCK and FD_CLOEXEC (/proc/TID/fdinfo/N), and takes a
// copy of it with pidfd_getfd(2) for its options and IPV6_V6ONLY.
//
//   - A bind of a Managed address, on a socket of its family, SO_TYPE and
//     SO_PROTOCOL, the first such bind in this generation's process tree:
//     rpwrap gives its socket the server's O_NONBLOCK and the socket options
//     a server sets before bind that still matter (SO_KEEPALIVE, SO_RCVBUF,
//     SO_SNDBUF, TCP_NODELAY, TCP_DEFER_ACCEPT, TCP_FASTOPEN), puts it at
//     the server's fd number with SECCOMP_IOCTL_NOTIF_ADDFD
//     (SECCOMP_ADDFD_FLAG_SETFD, the server's FD_CLOEXEC; the server's own
//     socket is closed by it), then answers the bind with 0 in a separate
//     SECCOMP_IOCTL_NOTIF_SEND. The server's listen(2) then sets the
//     backlog. O_NONBLOCK and the options belong to the socket, so every
//     holder sees them, rpwrap too: each generation gets its own socket.
//   - The IPv4-mapped form of a managed IPv4 address on an AF_INET6 socket
//     ([::ffff:127.0.0.1]:P, [::ffff:0.0.0.0]:P for 0.0.0.0:P), which is how
//     the JVM binds an IPv4 address, is that address: the server's AF_INET6
//     socket is replaced by rpwrap's AF_INET one, which the kernel would
//     have made of it anyway (IPv4 only). The JVM reads the AF_INET
//     getsockname and accept addresses back as IPv4 and serves (tested with
//     HttpServer and ServerSocket). With IPV6_V6ONLY on, the kernel refuses
//     such a bind (EINVAL) and so does rpwrap.
//   - Every later bind of that address by any process of the tree, a worker
//     or a CGI, fails with EADDRINUSE and a log line: no second socket of the
//     server can join the reuseport group, and nobody but the first binder
//     gets the production listener.
//   - Any other bind of a managed port goes on unchanged, and logf gets one
//     line per managed socket on that port with the reason and the --listen
//     that would match: another address or family ([::1]:P against
//     127.0.0.1:P), a wildcard against one address or the reverse, another
//     protocol (udp://), an IPv6 wildcard against the IPv4 one. The dual-stack
//     [::]:P of the JVM's and Node's default wildcard bind is not 0.0.0.0:P:
//     substituting an IPv4 socket would silently drop its IPv6 clients, so
//     the bind is the kernel's (EADDRINUSE next to rpwrap's socket) and the
//     line says to use --listen [::]:P (one dual-stack socket) or make the
//     server bind 0.0.0.0:P (-Djava.net.preferIPv4Stack=true). An
//     IPV6_V6ONLY difference between the server's [::]:P and rpwrap's is
//     noted in the injection's log line; the server gets rpwrap's socket.
//
// Docker's default seccomp profile denies pidfd_getfd (EPERM) without
// CAP_SYS_PTRACE. Then rpwrap still substitutes, with O_NONBLOCK and
// FD_CLOEXEC from /proc, but cannot copy the server's socket options nor
// read its IPV6_V6ONLY (taken as off, the JVM's setting); logf gets one line
// per generation naming the options and the fix (--cap-add SYS_PTRACE).
// Everything else the interceptor and the shim need is in that profile:
// seccomp(2) (the shim sets PR_SET_NO_NEW_PRIVS itself when it lacks
// CAP_SYS_ADMIN, as container root does), ioctl, pidfd_open, getxattr,
// readlink, pread64 on /proc/TID/mem (a ptrace access check: same user, no
// capability needed, as long as the server has not changed user before its
// bind).
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
