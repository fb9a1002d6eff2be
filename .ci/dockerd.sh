#!/usr/bin/env bash
# A private dockerd for the container tests (examples/docker), apart from
# any system docker: its own data root, exec root, pid file and socket, no
# bridge and no iptables rules (containers run with --network host).
#
#   .ci/dockerd.sh start    start it unless it answers already; prints
#                           DOCKER_HOST=unix:///... on stdout
#   .ci/dockerd.sh host     print DOCKER_HOST=... if it answers, else exit 1
#   .ci/dockerd.sh stop     stop it (containers are stopped with it)
#
# Use it as:
#   export RPWRAP_TEST_DOCKER_HOST=$(.ci/dockerd.sh start | sed -n 's/^DOCKER_HOST=//p')
#
# RPWRAP_DOCKERD_ROOT (default /var/lib/rpwrap-dockerd) holds images and
# the daemon's log; RPWRAP_DOCKERD_RUN (default /run/rpwrap-dockerd) its
# socket, pid file and runtime state. Runs as root.
set -euo pipefail

root=${RPWRAP_DOCKERD_ROOT:-/var/lib/rpwrap-dockerd}
run=${RPWRAP_DOCKERD_RUN:-/run/rpwrap-dockerd}
sock=$run/docker.sock
pidfile=$run/dockerd.pid
log=$root/dockerd.log
host=unix://$sock

answers() {
	[ -S "$sock" ] && timeout 10 docker -H "$host" version >/dev/null 2>&1
}

running_pid() {
	local pid
	pid=$(cat "$pidfile" 2>/dev/null) || return 1
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

start() {
	if answers; then
		echo "DOCKER_HOST=$host"
		return 0
	fi
	if [ "$(id -u)" != 0 ]; then
		echo "dockerd.sh: dockerd needs root; run me as root" >&2
		exit 1
	fi
	if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null; then
		echo "dockerd.sh: dockerd or docker not found; apt-get install docker.io" >&2
		exit 1
	fi
	if pid=$(running_pid); then
		echo "dockerd.sh: dockerd pid $pid is running but does not answer on $sock; waiting for it" >&2
	else
		mkdir -p "$root" "$run"
		rm -f "$pidfile" "$sock"
		# setsid: the daemon outlives this script and ignores its terminal.
		setsid dockerd \
			--data-root "$root/data" --exec-root "$run/exec" --pidfile "$pidfile" \
			-H "$host" --bridge=none --iptables=false --ip-masq=false \
			--cgroup-parent rpwrap-dockerd \
			>>"$log" 2>&1 </dev/null &
	fi
	for _ in $(seq 1 120); do
		if answers; then
			echo "DOCKER_HOST=$host"
			return 0
		fi
		sleep 0.5
	done
	echo "dockerd.sh: dockerd did not answer on $sock within 60s; its log, $log, ends with:" >&2
	tail -n 20 "$log" >&2 || true
	exit 1
}

# cleanup removes what a stopped dockerd leaves: the mount of the host's
# network namespace and its (empty) cgroups.
cleanup() {
	rm -f "$pidfile"
	if mountpoint -q "$run/exec/netns/default" 2>/dev/null; then
		umount "$run/exec/netns/default" || true
	fi
	for d in /sys/fs/cgroup/rpwrap-dockerd /sys/fs/cgroup/*/rpwrap-dockerd; do
		[ -d "$d" ] && rmdir "$d" 2>/dev/null || true
	done
}

stop() {
	local pid
	if ! pid=$(running_pid); then
		cleanup
		return 0
	fi
	kill -TERM "$pid"
	# dockerd stops its containers first (10 s each at most), then exits.
	for _ in $(seq 1 120); do
		kill -0 "$pid" 2>/dev/null || { cleanup; return 0; }
		sleep 0.5
	done
	echo "dockerd.sh: dockerd pid $pid still running 60s after SIGTERM; killing it" >&2
	kill -KILL "$pid" 2>/dev/null || true
	sleep 1
	cleanup
}

case "${1:-start}" in
start) start ;;
stop) stop ;;
host)
	answers || { echo "dockerd.sh: no dockerd answers on $sock; run .ci/dockerd.sh start" >&2; exit 1; }
	echo "DOCKER_HOST=$host"
	;;
*)
	echo "usage: $0 start|host|stop" >&2
	exit 2
	;;
esac
