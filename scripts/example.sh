#!/usr/bin/env bash
# Builds gridbox and the wordfreq example job, runs it, and verifies its receipt by replay.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1
cargo build --release -p gridbox-runtime --bin gridbox
cargo build --release --manifest-path examples/Cargo.toml --target wasm32-wasip1
gridbox=target/release/gridbox
job=examples/target/wasm32-wasip1/release/wordfreq.wasm

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$gridbox" keygen "$work/provider.key"

echo "== gridbox run"
"$gridbox" run "$job" --dir examples/wordfreq/data::/input --key "$work/provider.key" \
    --out "$work/out" -- --top 5
echo "== outputs: $(ls "$work/out" "$work/out/output" | tr '\n' ' ')"
head -n 4 "$work/out/output/freq.tsv"

echo "== gridbox verify"
"$gridbox" verify "$work/out/receipt.json" --module "$job" --dir examples/wordfreq/data::/input

echo "== the tensor bridge: an MLP classifier, run and verified"
mlp=examples/target/wasm32-wasip1/release/mlp.wasm
"$gridbox" run "$mlp" --capability tensor --dir examples/mlp/data::/input --key "$work/provider.key" \
    --out "$work/mlp"
"$gridbox" verify "$work/mlp/receipt.json" --module "$mlp" --dir examples/mlp/data::/input >/dev/null
