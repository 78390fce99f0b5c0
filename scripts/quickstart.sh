#!/usr/bin/env bash
# Runs the quick start: two demo machines and edgeproxy on
# examples/quickstart.toml, until Ctrl-C, which stops all three.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=./bin/edgeproxy
cfg=examples/quickstart.toml

pids=()
cleanup() {
  trap - INT TERM EXIT
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "stopped."
}
trap cleanup INT TERM EXIT

$bin validate -config "$cfg"
# The demo machine speaks HTTP and raw TCP echo on one port.
$bin demo-machine -listen 127.0.0.1:18081 -id machine-1 2>bin/machine-1.log & pids+=($!)
$bin demo-machine -listen 127.0.0.1:18082 -id machine-2 2>bin/machine-2.log & pids+=($!)
$bin run -config "$cfg" 2> >(tee bin/edgeproxy.log >&2) & pids+=($!)
sleep 1

cat <<'MSG'

edgeproxy is running (logs in bin/). Try, from another terminal:

  curl -s http://127.0.0.1:18080/                     # HTTP/1.1; repeat it to see both machines answer
  curl -sk https://hello.localhost:18443/ --resolve hello.localhost:18443:127.0.0.1
  curl -sk --http2 https://127.0.0.1:18443/ -o /dev/null -w '%{http_version}\n'
  curl -sk https://127.0.0.1:18443/stream?n=5        # a streamed response, flushed as it comes
  echo hello | curl -s --max-time 1 telnet://127.0.0.1:15000   # raw TCP echo through the proxy

The JSON answers show the machine id and the headers edgeproxy added
(Fly-Client-IP, X-Forwarded-For, Fly-Region, Via, Fly-Request-Id, ...).
Press Ctrl-C to stop everything.
MSG
wait -n "${pids[@]}"
