#!/usr/bin/env bash
# The main job (make run): start the agent on loopback, run commands through
# the CLI over TCP, WebSocket and a unix socket, then stop the agent.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(mktemp -d)
sock="$dir/agent.sock"
./build/fractal-agent --listen tcp://127.0.0.1:0 --listen ws://127.0.0.1:0 --listen "unix://$sock" 2>"$dir/agent.log" &
agent=$!
trap 'kill $agent 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do
  [ "$(grep -c 'listening on' "$dir/agent.log")" -ge 3 ] && break
  sleep 0.05
done
tcp=$(grep -o 'listening on tcp://[^ ]*' "$dir/agent.log" | cut -d' ' -f3)
ws=$(grep -o 'listening on ws://[^ ]*' "$dir/agent.log" | cut -d' ' -f3)
echo "== agent listening on $tcp, $ws and unix://$sock"
./build/fractal-host --connect "$tcp" version
./build/fractal-host --connect "$tcp" ping
echo "== exec over TCP"
./build/fractal-host --connect "$tcp" exec -- uname -a
echo "== exec over WebSocket, with stdin"
echo "hello through fractal" | ./build/fractal-host --connect "$ws" exec -i -- tr a-z A-Z
echo "== exec over the unix socket, exit status propagates"
set +e
./build/fractal-host --connect "unix://$sock" exec -- sh -c 'echo "exiting with 3"; exit 3'
echo "exit status: $?"
