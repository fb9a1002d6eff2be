// Package docker tests rpwrap as a container's ENTRYPOINT (PID 1) under a
// real dockerd, with Docker's default capabilities and seccomp profile:
// restarts under load with `docker exec CONTAINER rpwrap ctl restart`, the
// container's exit status, and nothing left behind after `docker stop`.
//
// It has tests only. They need root and a dockerd; .ci/dockerd.sh starts a
// private one apart from any system docker:
//
//	$ export RPWRAP_TEST_DOCKER_HOST=$(.ci/dockerd.sh start | sed -n 's/^DOCKER_HOST=//p')
//	$ go test ./examples/docker
//
// Without RPWRAP_TEST_DOCKER_HOST the tests start that daemon themselves
// and stop it at the end, unless RPWRAP_TEST_STRICT=1 (CI), where a missing
// daemon fails them. Images are built offline (there is no registry): the
// scratch image from static binaries, and the Debian examples on a base
// image made with debootstrap and `docker import` (RPWRAP_TEST_SLOW=1 or
// CI=true runs those).
package docker
