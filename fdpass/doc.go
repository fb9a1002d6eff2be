// Package fdpass creates the listening sockets rpwrap owns and hands them to
// a server. It implements both sides of systemd's socket activation protocol,
// sd_listen_fds(3): sockets passed to rpwrap (FromSystemd), and sockets passed
// by rpwrap to a child at fds 3, 4, ... with LISTEN_FDS, LISTEN_FDNAMES and a
// LISTEN_PID that is right because an exec shim (RunShim) sets it to its own
// pid before execve(2)ing the server. Every socket is a SO_REUSEPORT member
// of its group, as socket(7) describes, plain TCP (never MPTCP) or UDP.
//
// A --listen value is "[NAME=][tcp://|udp://]HOST:PORT"; NAME defaults to the
// network and port, "tcp-8080". A program that starts servers looks like:
//
//	func main() {
//		fdpass.RunShim() // first: in the shim it execs the server
//		spec, err := fdpass.ParseSpec("http=127.0.0.1:8080")
//		...
//		l, err := fdpass.Listen(spec, 0)
//		...
//		path, err := fdpass.LookPath("httpd") // *CommandError: exit 127 or 126
//		exe, args, env := fdpass.ShimCommand(path, []string{"httpd"}, os.Environ(),
//			[]string{l.Spec().Name}, fdpass.ListenFDs)
//		cmd := &exec.Cmd{Path: exe, Args: args, Env: env, ExtraFiles: []*os.File{l.File()}}
//		err = cmd.Start()
//		runtime.KeepAlive(l)
//	}
package fdpass
