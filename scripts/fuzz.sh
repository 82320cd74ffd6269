#!/usr/bin/env bash
# Fuzzes every target in fuzz/ for SECONDS each (default 60): the tensor bridge ABI and the WASI
# layer through the real host functions, manifest/policy/receipt parsing, and the HTTP request
# path. A crash, a panic or a hang fails the run and leaves the input in fuzz/artifacts/.
#
# cargo-fuzz needs nightly compiler flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain accept
# them (no sanitizer is used: the targets check what matters themselves, and Rust is memory
# safe outside the few unsafe modules).
# Needs: cargo-fuzz (`cargo install cargo-fuzz --locked`) and a C++ compiler for libFuzzer.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-60}
command -v cargo-fuzz >/dev/null || { echo "fuzz: cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2; exit 1; }
export RUSTC_BOOTSTRAP=1
cargo fuzz build -s none -O
for target in bridge_abi wasi_calls parse http_request; do
    echo "== fuzz $target for ${seconds}s"
    log=$(mktemp)
    # -timeout: one input running longer than 10 s is a hang.
    status=0
    cargo fuzz run -s none -O "$target" -- -max_total_time="$seconds" -timeout=10 -print_final_stats=1 > "$log" 2>&1 || status=$?
    grep -E '^(stat::number_of_executed_units|stat::average_exec_per_sec)|DONE|ERROR|panicked|SUMMARY' "$log" || true
    if [ "$status" -ne 0 ]; then
        tail -n 60 "$log"
        echo "fuzz: $target failed (exit $status); the input is in fuzz/artifacts/$target/" >&2
        exit "$status"
    fi
    rm -f "$log"
done
