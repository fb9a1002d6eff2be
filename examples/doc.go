// Package examples holds working setups of real, unmodified servers under
// rpwrap (Debian's Apache 2.4, nginx 1.22 and HAProxy 2.6: configuration,
// systemd unit, Dockerfile, a script) and the tests that run each one for
// real: restarts under load with every request counted, a slow download
// that crosses a restart, the seed's experiment (two Apaches in one
// SO_REUSEPORT group, one of them stopped with SIGSTOP, see socket(7)) and
// the guard that refuses a server given the wrong route. matrix_test.go holds
// one table of every configuration an operator can write (listeners, routes,
// readiness checks, and Apache, Apache with TLS, nginx, dnsmasq, Node, Java
// and Go servers), each restarted under load with both selectors.
//
// The package has no code of its own; its tests build the rpwrap binary and
// run it as an operator would:
//
//	rpwrap --listen 127.0.0.1:8080 --pass bind --stop-signal WINCH -- \
//		/usr/sbin/apache2 -DFOREGROUND -f examples/apache/apache2.conf
//	rpwrap ctl --control PATH restart
//
// Run them as root with the servers installed (apt-get install apache2
// nginx haproxy wrk dnsmasq-base nodejs default-jdk-headless ssl-cert
// curl); each test skips without its server, and fails instead
// under RPWRAP_TEST_STRICT=1, as in CI.
package examples
