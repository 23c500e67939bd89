#!/usr/bin/env bash
# The quickstart demo: a daemon on 127.0.0.1:PORT, one job driven through the
# client CLI from start to stop, then the daemon shut down with SIGTERM.
# PORT: $RUND_DEMO_PORT (`just demo 9000` sets it), default 8000. Installs
# nothing: `just setup` made .venv and tls/.
set -euo pipefail
cd "$(dirname "$0")/.."
rund=.venv/bin/rund-trio
port=${RUND_DEMO_PORT:-8000}
export RUND_ADDR=localhost:$port

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

log=$(mktemp)
$rund serve --addr "127.0.0.1:$port" --temp-state-dir 2>"$log" &
daemon=$!
trap 'kill $daemon 2>/dev/null || true; rm -f "$log"' EXIT
until grep -q "listening on" "$log"; do
  kill -0 $daemon 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.1
done
echo "daemon $daemon listening on 127.0.0.1:$port"

say rund-trio client start -- sh -c 'for i in 1 2 3; do echo "tick $i"; sleep 0.3; done; echo done >&2; sleep 600'
id=$($rund client start -- sh -c 'for i in 1 2 3; do echo "tick $i"; sleep 0.3; done; echo done >&2; sleep 600')
echo "$id"

say rund-trio client status "$id"
$rund client status "$id"

say "rund-trio client log $id   # follows live output; stopped by the demo after 4 s"
timeout -s INT 4 $rund client log "$id" || true

say rund-trio client stop --grace 1 "$id"
$rund client stop --grace 1 "$id"

say "rund-trio client log --no-follow --tail 2 --timestamps $id   # the last two lines, with the time each was recorded"
$rund client log --no-follow --tail 2 --timestamps "$id"

say rund-trio client run -- uname -sr
$rund client run -- uname -sr

say "rund-trio client ps -a   # your jobs, newest first"
$rund client ps -a

say "kill -TERM $daemon   # the daemon kills every job and exits 0 (--temp-state-dir: its records go too)"
kill -TERM $daemon
wait $daemon
echo "daemon exited with status $?"
trap 'rm -f "$log"' EXIT
