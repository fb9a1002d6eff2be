#!/bin/sh
# Restart Debian's Apache five times under load with rpwrap and count what
# every request got. Run as root from anywhere in the repository, with
# apache2 and curl installed:
#
#   examples/apache/restart-under-load.sh
#
# It builds rpwrap, runs Apache on 127.0.0.1:$PORT (default 18080) with
# examples/apache/apache2.conf, sends requests from 4 curl loops (a new
# connection each), restarts with `rpwrap ctl restart`, then prints the
# counts: every request should be a 200.
set -eu
repo=$(cd "$(dirname "$0")/../.." && pwd)
port=${PORT:-18080}
restarts=${RESTARTS:-5}
work=$(mktemp -d /tmp/rpwrap-apache.XXXXXX)
chmod 755 "$work"
rpwrap_pid=
cleanup() {
	touch "$work/stop"
	[ -n "$rpwrap_pid" ] && kill -TERM "$rpwrap_pid" 2>/dev/null && wait "$rpwrap_pid" || true
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

(cd "$repo" && go build -o "$work/rpwrap" ./cmd/rpwrap)
mkdir "$work/htdocs"
echo ok >"$work/htdocs/index.html"
chmod -R a+rX "$work/htdocs"

# What /etc/apache2/envvars would set, pointing into $work, and the two
# variables of examples/apache/apache2.conf.
export APACHE_RUN_USER=www-data APACHE_RUN_GROUP=www-data
export APACHE_RUN_DIR="$work" APACHE_LOCK_DIR="$work" APACHE_LOG_DIR="$work"
export APACHE_LISTEN=127.0.0.1:$port APACHE_DOCUMENT_ROOT="$work/htdocs"

"$work/rpwrap" --control "$work/ctl.sock" --listen "127.0.0.1:$port" --pass bind --stop-signal WINCH \
	-- /usr/sbin/apache2 -DFOREGROUND -f "$repo/examples/apache/apache2.conf" >"$work/rpwrap.log" 2>&1 &
rpwrap_pid=$!
i=0
until curl -fs -o /dev/null "http://127.0.0.1:$port/"; do
	i=$((i + 1))
	[ $i -lt 100 ] || { cat "$work/rpwrap.log"; echo "Apache did not answer" >&2; exit 1; }
	sleep 0.1
done
echo "Apache serves on 127.0.0.1:$port under rpwrap (pid $rpwrap_pid)"

loops=
for c in 1 2 3 4; do
	(while [ ! -e "$work/stop" ]; do
		curl -s -o /dev/null -w '%{http_code}\n' --max-time 5 "http://127.0.0.1:$port/" || true
	done >"$work/codes.$c") &
	loops="$loops $!"
done
sleep 1
for r in $(seq 1 "$restarts"); do
	printf 'restart %d: ' "$r"
	"$work/rpwrap" ctl --control "$work/ctl.sock" restart
done
sleep 1
touch "$work/stop"
wait $loops

total=$(cat "$work"/codes.* | wc -l)
ok=$(cat "$work"/codes.* | grep -c '^200$' || true)
echo "requests sent: $total  200 OK: $ok  failed: $((total - ok))"
[ "$ok" -eq "$total" ]
