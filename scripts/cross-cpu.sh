#!/usr/bin/env bash
# Same bits on every CPU: runs a fixed set of jobs with one gridbox binary natively and under
# qemu-user as older x86 CPUs (Haswell: AVX2 and FMA, no AVX-512; Nehalem: no AVX, no FMA, so the
# portable kernels and Cranelift's SSE code), and optionally an aarch64 build under
# qemu-aarch64, and requires byte-identical receipts (one fixed key signs them all). On a
# difference it names the job, the mode and the receipt fields that differ, and fails.
#
# Usage: scripts/cross-cpu.sh [BINARY]          x86 modes (default BINARY: target/release/gridbox)
#        GRIDBOX_CROSS_ARM=1 scripts/cross-cpu.sh [BINARY]
#                                               also cross-builds gridbox for aarch64 (release)
#                                               and runs the jobs under qemu-aarch64
# Needs: qemu-user (`apt-get install qemu-user`), the wasm32-wasip1 target (the jobs are built
# once, here), python3; for aarch64 also gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and
# `rustup target add aarch64-unknown-linux-gnu`.
set -euo pipefail
cd "$(dirname "$0")/.."
binary=$(realpath "${1:-target/release/gridbox}")
[ -x "$binary" ] || { echo "cross-cpu: no gridbox binary at $binary (cargo build --release -p gridbox-cli)" >&2; exit 1; }
command -v qemu-x86_64 >/dev/null || { echo "cross-cpu: qemu-x86_64 is missing: apt-get install qemu-user" >&2; exit 1; }

echo "== building the jobs (wasm32-wasip1)"
(cd tests/programs && cargo build --release --target wasm32-wasip1 --quiet)
(cd examples && cargo build --release --target wasm32-wasip1 --quiet)
programs=tests/programs/target/wasm32-wasip1/release
examples=examples/target/wasm32-wasip1/release

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# A fixed key: receipts of the same run are then byte-identical, signature included.
printf 'gridbox-ed25519-secret-key-v1\n%s\n' "$(printf '07%.0s' $(seq 32))" > "$work/key"
mkdir -p "$work/report-data/sub"
printf 'alpha\n' > "$work/report-data/a.txt"
printf 'bravo\n' > "$work/report-data/sub/b.txt"
# A small Llama model with random weights (bf16: the cast, rope's sin and cos, attention and the
# tokenizer all run), made by the same script the tests use.
python3 scripts/llama/make_model.py "$work/llama" --layers 2 --dtype bf16 --seed 3 2> /dev/null \
    || { echo "cross-cpu: scripts/llama/make_model.py failed: python3 -m pip install numpy tokenizers" >&2; exit 1; }

# name | module | gridbox run flags (before --) | job arguments (after --)
jobs=(
    "probe-report|$programs/probe.wasm|--dir $work/report-data::/input|report"
    "probe-fs-ops|$programs/probe.wasm||fs-ops"
    "probe-floats|$programs/probe.wasm||floats 3000"
    "probe-nan-bits|$programs/probe.wasm||nan-bits"
    "tensor-ops|$programs/tensor-probe.wasm|--capability tensor|ops"
    "tensor-edges|$programs/tensor-probe.wasm|--capability tensor|edges"
    "tensor-chain|$programs/tensor-probe.wasm|--capability tensor|chain 300"
    "model-ops|$programs/model-probe.wasm|--capability tensor|ops"
    "model-edges|$programs/model-probe.wasm|--capability tensor|edges"
    "llama|$examples/llama.wasm|--capability tensor --ro-dir $work/llama::/model|--prompt Once_upon_a_time --tokens 12"
    "llama-sampled|$examples/llama.wasm|--capability tensor --ro-dir $work/llama::/model|--prompt 42 --tokens 12 --temperature 0.9 --top-p 0.9 --seed 5"
    "wordfreq|$examples/wordfreq.wasm|--dir examples/wordfreq/data::/input|--top 5"
    "mlp|$examples/mlp.wasm|--capability tensor --dir examples/mlp/data::/input|"
    "transformer|$examples/transformer.wasm|--capability tensor --dir examples/transformer/data::/input|"
)

# run MODE RUNNER... : every job under RUNNER (empty for native), receipts into $work/MODE/NAME.
run_mode() {
    local mode=$1
    shift
    mkdir -p "$work/$mode"
    local started
    started=$(date +%s)
    for job in "${jobs[@]}"; do
        IFS='|' read -r name module flags job_args <<< "$job"
        # shellcheck disable=SC2086 # flags and job arguments are word lists
        if ! "$@" run "$module" $flags --device cpu --key "$work/key" --out "$work/$mode/$name" --quiet -- $job_args \
            > "$work/$mode/$name.log" 2>&1; then
            # A job's own non-zero exit is fine (its receipt says so); no receipt is not.
            [ -f "$work/$mode/$name/receipt.json" ] || { cat "$work/$mode/$name.log" >&2; echo "cross-cpu: $mode: $name made no receipt" >&2; exit 1; }
        fi
    done
    echo "== $mode: ${#jobs[@]} jobs in $(($(date +%s) - started)) s"
}

# compare MODE: every receipt of MODE against the native one.
failed=0
compare() {
    local mode=$1
    for job in "${jobs[@]}"; do
        local name=${job%%|*}
        if ! cmp -s "$work/native/$name/receipt.json" "$work/$mode/$name/receipt.json"; then
            failed=1
            python3 - "$work/native/$name/receipt.json" "$work/$mode/$name/receipt.json" "$name" "$mode" <<'PY'
import json, sys
native, other = (json.load(open(p)) for p in sys.argv[1:3])
def flat(value, prefix=""):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from flat(item, f"{prefix}.{key}" if prefix else key)
    else:
        yield prefix, value
a, b = dict(flat(native)), dict(flat(other))
fields = [key for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key) and key != "signature"]
print(f"cross-cpu: {sys.argv[4]}: job {sys.argv[3]} differs from native in: {', '.join(fields)}", file=sys.stderr)
for key in fields[:8]:
    print(f"    {key}: native {a.get(key)!r}, {sys.argv[4]} {b.get(key)!r}", file=sys.stderr)
PY
        fi
    done
    [ "$failed" = 0 ] && echo "== $mode: every receipt is byte-identical to native"
    return 0
}

run_mode native "$binary"
run_mode haswell qemu-x86_64 -cpu Haswell "$binary"
compare haswell
run_mode nehalem qemu-x86_64 -cpu Nehalem "$binary"
compare nehalem

if [ "${GRIDBOX_CROSS_ARM:-0}" = 1 ]; then
    command -v qemu-aarch64 >/dev/null || { echo "cross-cpu: qemu-aarch64 is missing: apt-get install qemu-user" >&2; exit 1; }
    command -v aarch64-linux-gnu-gcc >/dev/null \
        || { echo "cross-cpu: the aarch64 linker is missing: apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross" >&2; exit 1; }
    echo "== building gridbox for aarch64-unknown-linux-gnu"
    rustup target add aarch64-unknown-linux-gnu >/dev/null
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
        cargo build --release --locked --quiet -p gridbox-cli --target aarch64-unknown-linux-gnu
    run_mode aarch64 qemu-aarch64 -L /usr/aarch64-linux-gnu "$(realpath target/aarch64-unknown-linux-gnu/release/gridbox)"
    compare aarch64
fi

if [ "$failed" != 0 ]; then
    echo "cross-cpu: receipts differ between CPUs (above): a determinism bug" >&2
    exit 1
fi
