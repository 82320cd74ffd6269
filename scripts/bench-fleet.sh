#!/usr/bin/env bash
# Tiny jobs through the market next to `gridbox serve` alone, side by side in one run:
# `gridbox load` against (a) `gridbox serve` with 2 workers and (b) a gateway (`serve --fleet`)
# on a local nats-server -js with 1, 2 and 4 `gridbox provide` processes (1 worker each).
# Throughput: --jobs JOBS --concurrency 64; latency unloaded: --jobs LATENCY_JOBS --concurrency 1.
# Rounds alternate the setups; medians are printed with the ratio to `serve` alone.
#
#   scripts/bench-fleet.sh [GRIDBOX_BINARY] [ROUNDS] [JOBS] [LATENCY_JOBS]
#
# Needs nats-server (Debian: apt-get install nats-server) and a release build
# (cargo build --release -p gridbox-cli).
set -euo pipefail
cd "$(dirname "$0")/.."
gridbox=$(realpath "${1:-target/release/gridbox}")
rounds=${2:-3}
jobs=${3:-2000}
latency_jobs=${4:-300}
nats_server=$(command -v nats-server || echo /usr/sbin/nats-server)
[ -x "$nats_server" ] || { echo "bench-fleet: nats-server is not installed: apt-get install nats-server" >&2; exit 1; }
[ -x "$gridbox" ] || { echo "bench-fleet: no $gridbox: cargo build --release -p gridbox-cli" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
token=bench-token-0123456789
cat > "$work/policy.toml" <<EOF
[[tenants]]
name = "bench"
token = "$token"
[serve]
workers = 2
max_running_per_tenant = 4096
[fleet]
in_flight = 4096
EOF
export GRIDBOX_CACHE_DIR="$work/cache"

wait_line() { # FILE TEXT
    for _ in $(seq 600); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
    echo "bench-fleet: no '$2' in $1:" >&2; cat "$1" >&2; exit 1
}

# Starts the setup named $1 (serve, or fleetN); sets $url.
start() {
    local setup=$1 dir="$work/run-$RANDOM$RANDOM"
    mkdir -p "$dir"
    pids=()
    if [ "$setup" = serve ]; then
        "$gridbox" serve --addr 127.0.0.1:0 --data "$dir/data" --policy "$work/policy.toml" --device cpu 2> "$dir/serve.log" &
        pids+=($!)
    else
        local providers=${setup#fleet} port
        port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
        monitor=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
        "$nats_server" -js -a 127.0.0.1 -p "$port" -m "$monitor" -sd "$dir/js" 2> "$dir/nats.log" &
        pids+=($!)
        for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
        "$gridbox" serve --addr 127.0.0.1:0 --data "$dir/data" --policy "$work/policy.toml" --fleet "nats://127.0.0.1:$port" 2> "$dir/serve.log" &
        pids+=($!)
        wait_line "$dir/serve.log" "serving on"
        for i in $(seq "$providers"); do
            [ -f "$work/p$i.key" ] || "$gridbox" keygen "$work/p$i.key" > /dev/null
            "$gridbox" provide --nats "nats://127.0.0.1:$port" --key "$work/p$i.key" --device cpu --workers 1 2> "$dir/p$i.log" &
            pids+=($!)
            wait_line "$dir/p$i.log" "providing to"
        done
    fi
    wait_line "$dir/serve.log" "serving on"
    url=$(grep -o 'http://[0-9.:]*' "$dir/serve.log" | head -n 1)
}
stop() { for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done; pids=(); }

# "N jobs (...) in S s: R jobs/s; latency submit->end p50 A ms, p99 B ms; ..."
field() { sed -n "s/.*$1 \([0-9.]*\).*/\1/p"; }

# The NATS server's message and byte counters (its monitoring endpoint /varz).
varz() { python3 -c "import json,urllib.request; v=json.load(urllib.request.urlopen('http://127.0.0.1:$monitor/varz')); print(v['in_msgs'], v['out_msgs'], v['in_bytes'], v['out_bytes'])"; }

setups=(serve fleet1 fleet2 fleet4)
declare -A rate p50 p99
traffic=""
for round in $(seq "$rounds"); do
    for setup in "${setups[@]}"; do
        start "$setup"
        "$gridbox" load --server "$url" --token "$token" --jobs 200 --concurrency 16 > /dev/null # warm up
        [ "$setup" = serve ] || before=$(varz)
        out=$("$gridbox" load --server "$url" --token "$token" --jobs "$jobs" --concurrency 64)
        if [ "$setup" = fleet1 ] && [ -z "$traffic" ]; then
            traffic=$(echo "$before $(varz)" | awk -v jobs="$jobs" '{printf "%.1f messages in and %.1f out, %.0f bytes in and %.0f out", ($5-$1)/jobs, ($6-$2)/jobs, ($7-$3)/jobs, ($8-$4)/jobs}')
        fi
        rate[$setup]+="$(echo "$out" | sed -n 's/.* \([0-9.]*\) jobs\/s.*/\1/p') "
        out=$("$gridbox" load --server "$url" --token "$token" --jobs "$latency_jobs" --concurrency 1)
        p50[$setup]+="$(echo "$out" | field p50) "
        p99[$setup]+="$(echo "$out" | field p99) "
        stop
        echo "round $round: $setup done" >&2
    done
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo "tiny jobs, $(nproc) cores, medians of $rounds rounds; throughput: $jobs jobs from 64 clients; latency: $latency_jobs jobs from 1 client"
printf '%-34s %10s %8s %12s %12s %8s\n' setup "jobs/s" ratio "p50 ms" "p99 ms" "p50 x"
base_rate=$(echo "${rate[serve]}" | median); base_p50=$(echo "${p50[serve]}" | median)
for setup in "${setups[@]}"; do
    r=$(echo "${rate[$setup]}" | median); a=$(echo "${p50[$setup]}" | median); b=$(echo "${p99[$setup]}" | median)
    name=$setup; [ "$setup" = serve ] && name="serve alone (2 workers)" || name="gateway + ${setup#fleet} provider(s), 1 worker each"
    printf '%-34s %10.0f %7.2fx %12.2f %12.2f %7.2fx\n' "$name" "$r" "$(echo "$r / $base_rate" | bc -l)" "$a" "$b" "$(echo "$a / $base_p50" | bc -l)"
done
echo "per job through the market (NATS server counters, fleet with 1 provider): $traffic"
