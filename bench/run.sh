#!/usr/bin/env bash
# Runs the benchmark suite: edgeproxy, nginx and HAProxy one at a time in
# front of the same origin (bench/origin), the same loads through each, the
# results in bench/results/latest.csv and docs/performance.md.
#
#   bench/run.sh            full run (3 repeats of 10 s per scenario and proxy)
#   bench/run.sh -quick     smoke test (3 s, 1 repeat; docs untouched)
#   bench/run.sh -h         every flag of the driver (bench/cmd/bench)
#
# `make bench BENCH_ARGS=...` calls this. Linux only, as root (or with the
# packages already installed); loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

export GOTOOLCHAIN="${GOTOOLCHAIN:-go1.27.3}"
export PATH="/usr/local/go/bin:$PATH"

# The peers and the load generators, from Debian.
need=()
command -v nginx >/dev/null || need+=(nginx)
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || need+=(libnginx-mod-stream)
command -v haproxy >/dev/null || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v taskset >/dev/null || need+=(util-linux)
command -v getconf >/dev/null || need+=(libc-bin)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "bench: missing ${need[*]}; run as root or install them: apt-get install ${need[*]}" >&2
    exit 1
  fi
  echo "bench: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # The packages' own services must not start (nginx would take port 80):
  # policy-rc.d answers 101 ("not allowed") while we install, unless the
  # machine already has one.
  own_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    own_policy=1
  fi
  trap '[ -n "$own_policy" ] && rm -f /usr/sbin/policy-rc.d' EXIT
  apt-get install -y -q --no-install-recommends "${need[@]}"
  [ -n "$own_policy" ] && rm -f /usr/sbin/policy-rc.d
  trap - EXIT
fi

export BENCH_INVOCATION="${BENCH_INVOCATION:-bench/run.sh${*:+ $*}}"
bin="$(mktemp -d /tmp/edgeproxy-bench-driver.XXXXXX)"
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/bench" ./bench/cmd/bench
# Not exec: the trap removes the driver's binary afterwards. The driver
# stops every process it started, on Ctrl-C too.
"$bin/bench" "$@"
