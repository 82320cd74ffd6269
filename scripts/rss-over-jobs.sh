#!/usr/bin/env bash
# Measures `gridbox serve`'s resident memory and data folder over many tiny jobs: starts a server
# on loopback (2 workers, retention RETENTION_S seconds) in a temp folder, runs `gridbox load`
# ROUNDS times 10,000 jobs, and prints RSS, threads and data size after each round.
# Usage: scripts/rss-over-jobs.sh [BINARY] [ROUNDS] [RETENTION_S]   (Linux: reads /proc)
set -euo pipefail
binary=${1:-target/release/gridbox}
rounds=${2:-10}
retention=${3:-5}
work=$(mktemp -d)
server=
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT
cat > "$work/policy.toml" <<POLICY
[[tenants]]
name = "load"
token = "load-token-0123456789"
[serve]
workers = 2
retention_s = $retention
gc_interval_s = 2
POLICY
"$binary" serve --addr 127.0.0.1:0 --data "$work/data" --policy "$work/policy.toml" --device cpu 2> "$work/serve.log" &
server=$!
for _ in $(seq 300); do grep -q "serving on" "$work/serve.log" && break; sleep 0.1; done
url=$(grep -o 'http://[0-9.:]*' "$work/serve.log" | head -n 1)
report() { echo "$1 jobs: rss $(($(ps -o rss= -p "$server") / 1024)) MB, threads $(grep Threads "/proc/$server/status" | cut -f2), data $(($(du -sk "$work/data" 2>/dev/null | cut -f1) / 1024)) MB${2:+, $2}"; }
report 0
for round in $(seq "$rounds"); do
    rate=$("$binary" load --server "$url" --token load-token-0123456789 --jobs 10000 --concurrency 64 | grep -o "[0-9]* jobs/s")
    report "$((round * 10000))" "$rate"
done
