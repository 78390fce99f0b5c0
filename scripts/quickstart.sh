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
$bin run -config "$cfg" 2> >(tee bin/edgeproxy.log >&2) & proxy=$!; pids+=($proxy)

# Ready means the admin API (127.0.0.1:9901) says so; a proxy that exits
# or never gets there is a failed start, not a running one.
ready=""
for _ in $(seq 100); do
  if ! kill -0 "$proxy" 2>/dev/null; then break; fi
  if curl -sf http://127.0.0.1:9901/ready >/dev/null 2>&1; then ready=1; break; fi
  sleep 0.1
done
if [ -z "$ready" ]; then
  echo "edgeproxy did not start: see bin/edgeproxy.log" >&2
  exit 1
fi

cat <<'MSG'

edgeproxy is running (logs in bin/). Try, from another terminal:

  curl -s http://127.0.0.1:18080/                     # HTTP/1.1; repeat it to see both machines answer
  curl -sk https://hello.localhost:18443/ --resolve hello.localhost:18443:127.0.0.1
  curl -sk --http2 https://127.0.0.1:18443/ -o /dev/null -w '%{http_version}\n'
  curl -sk https://127.0.0.1:18443/stream?n=5        # a streamed response, flushed as it comes
  curl -sk --compressed -D - https://127.0.0.1:18443/stream?n=5   # the same, compressed event by event
  echo hello | curl -s --max-time 1 telnet://127.0.0.1:15000   # raw TCP echo through the proxy

The JSON answers show the machine id and the headers edgeproxy added
(Fly-Client-IP, X-Forwarded-For, Fly-Region, Via, Fly-Request-Id, ...).
Press Ctrl-C to stop everything.
MSG
wait -n "${pids[@]}"
