#!/usr/bin/env bash
# What cheap verification costs next to a full replay, measured side by side in one run with
# the release binary (medians of ROUNDS alternating runs; the machine's noise hits both sides):
#   1. a spot check of K = 30 ops of the transformer example through `gridbox serve`, against
#      `gridbox verify` replaying the whole job on the CPU;
#   2. `trace = "full"` against `trace = "readback"` for running the transformer on the CPU.
#   3. the same spot check against a full replay for jobs dominated by matmuls
#      (tensor-probe `matmuls L 256`: L layers of tanh(x @ w), 256 x 256; 2L + 3 bridge calls),
#      with 500 and 2,000 layers: a spot check's cost grows with K, a replay's with the job.
# Bytes: a spot check's are the response bytes it received; a replay's are the module and the
# job's input files the verifier must have.
# Usage: scripts/bench-verification.sh [BINARY] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
binary=$(realpath "${1:-target/release/gridbox}")
rounds=${2:-5}
(cd examples && cargo build --release --target wasm32-wasip1 --quiet)
(cd tests/programs && cargo build --release --target wasm32-wasip1 --quiet)
probe=tests/programs/target/wasm32-wasip1/release/tensor-probe.wasm
job=examples/target/wasm32-wasip1/release/transformer.wasm
data=examples/transformer/data
work=$(mktemp -d)
server=
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT

ms() { echo $(($(date +%s%N) / 1000000)); }
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

cat > "$work/policy.toml" <<POLICY
[[tenants]]
name = "bench"
token = "bench-token-0123456789"
[serve]
workers = 2
keep_tensors = true
POLICY
"$binary" serve --addr 127.0.0.1:0 --data "$work/serve" --policy "$work/policy.toml" --device cpu 2> "$work/serve.log" &
server=$!
for _ in $(seq 300); do grep -q "serving on" "$work/serve.log" && break; sleep 0.1; done
url=$(grep -o 'http://[0-9.:]*' "$work/serve.log" | head -n 1)
export GRIDBOX_SERVER=$url GRIDBOX_TOKEN=bench-token-0123456789
# compare NAME OUT MODULE [run flags...] -- [job args...]: a spot check of 30 ops of the job run
# on the server against a full replay of it.
compare() {
    local name=$1 out=$2 module=$3
    shift 3
    "$binary" submit "$module" --out "$work/$out" --quiet "$@" 2> "$work/$out.log"
    local id entries
    id=$(grep -o 'job [0-9a-f]\{32\}' "$work/$out.log" | head -n 1 | cut -d' ' -f2)
    entries=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["trace"]["length"])' "$work/$out/receipt.json")
    echo "== $name: $entries traced bridge calls"
    local spot=() replay=() start
    local replay_args=()
    # verify takes the job's files, not its flags: keep the --dir and --input pairs.
    local previous=
    for arg in "$@"; do
        [ "$arg" = "--" ] && break
        case "$previous" in --dir | --input) replay_args+=("$previous" "$arg") ;; esac
        previous=$arg
    done
    local replay_bytes
    replay_bytes=$(stat -c %s "$module")
    local previous_arg=
    for arg in "${replay_args[@]+"${replay_args[@]}"}"; do
        if [ "$previous_arg" = "--dir" ]; then
            replay_bytes=$((replay_bytes + $(find "${arg%%::*}" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')))
        fi
        previous_arg=$arg
    done
    for round in $(seq "$rounds"); do
        start=$(ms)
        "$binary" spot-check "$work/$out/receipt.json" --job "$id" --samples 30 --seed "$round" --json > "$work/$out.spot.json"
        spot+=($(($(ms) - start)))
        start=$(ms)
        "$binary" verify "$work/$out/receipt.json" --module "$module" ${replay_args[@]+"${replay_args[@]}"} --device cpu --json > /dev/null
        replay+=($(($(ms) - start)))
    done
    local spot_ms replay_ms
    spot_ms=$(printf '%s\n' "${spot[@]}" | median)
    replay_ms=$(printf '%s\n' "${replay[@]}" | median)
    echo "spot check, K = 30:     ${spot_ms} ms (median of $rounds, whole process)"
    echo "full replay on the CPU: ${replay_ms} ms (median of $rounds, whole process)"
    echo "full replay / spot check: $(awk -v a="$replay_ms" -v b="$spot_ms" 'BEGIN { printf "%.2f", a / b }')x"
    echo "per sample: $(awk -v a="$spot_ms" 'BEGIN { printf "%.2f", a / 30 }') ms; replay per traced call: $(awk -v a="$replay_ms" -v n="$entries" 'BEGIN { printf "%.2f", a / n }') ms"
    echo "bytes: spot check received $(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["bytes_received"])' "$work/$out.spot.json"), a replay needs $replay_bytes (module and input files)"
    python3 - "$work/$out.spot.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
samples = report["samples"]
ops = sorted({s["op"] for s in samples})
print(f"spot check: {sum(s['ok'] for s in samples)} of {len(samples)} samples hold (ops: {', '.join(ops)})")
for e in report["escape"]:
    print(f"  a provider falsifying {e['f']:.0%} of the ops escapes with probability {e['probability']:.4f} (bound (1-f)^K {e['bound']:.4f})")
PY
}

compare "the transformer example" transformer "$job" --capability tensor --dir "$data::/input"
compare "a matmul-heavy job (500 x 256^3)" matmuls "$probe" --capability tensor -- matmuls 500 256
compare "a longer matmul-heavy job (2,000 x 256^3)" matmuls-long "$probe" --capability tensor --limit fuel=100000000000 -- matmuls 2000 256

full=() readback=()
for round in $(seq "$rounds"); do
    rm -rf "$work/full" "$work/readback"
    start=$(ms)
    "$binary" run "$job" --capability tensor --trace full --dir "$data::/input" --device cpu -q --out "$work/full" 2> /dev/null
    full+=($(($(ms) - start)))
    start=$(ms)
    "$binary" run "$job" --capability tensor --trace readback --dir "$data::/input" --device cpu -q --out "$work/readback" 2> /dev/null
    readback+=($(($(ms) - start)))
done
full_ms=$(printf '%s\n' "${full[@]}" | median)
readback_ms=$(printf '%s\n' "${readback[@]}" | median)
echo "== trace levels, the transformer on the CPU (whole process, median of $rounds)"
echo "full: ${full_ms} ms, readback: ${readback_ms} ms, full / readback: $(awk -v a="$full_ms" -v b="$readback_ms" 'BEGIN { printf "%.2f", a / b }')x"
