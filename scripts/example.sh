#!/usr/bin/env bash
# Builds gridbox and the example jobs, runs wordfreq and the MLP and verifies their receipts by
# replay, then serves jobs as a provider and submits wordfreq to it as a client.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target list --installed | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1
cargo build --release -p gridbox-cli --bin gridbox
cargo build --release --manifest-path examples/Cargo.toml --target wasm32-wasip1
gridbox=target/release/gridbox
job=examples/target/wasm32-wasip1/release/wordfreq.wasm

work=$(mktemp -d)
server=
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT
"$gridbox" keygen "$work/provider.key"

echo "== gridbox run"
"$gridbox" run "$job" --dir examples/wordfreq/data::/input --key "$work/provider.key" \
    --out "$work/out" -- --top 5
echo "== outputs: $(ls "$work/out" "$work/out/output" | tr '\n' ' ')"
head -n 4 "$work/out/output/freq.tsv"

echo "== gridbox verify"
# --trust pins the provider: a receipt signed by any other key would fail.
"$gridbox" verify "$work/out/receipt.json" --module "$job" --dir examples/wordfreq/data::/input \
    --trust "$work/provider.key.pub"

echo "== the tensor bridge: an MLP classifier, run and verified"
mlp=examples/target/wasm32-wasip1/release/mlp.wasm
"$gridbox" run "$mlp" --capability tensor --dir examples/mlp/data::/input --key "$work/provider.key" \
    --out "$work/mlp"
"$gridbox" verify "$work/mlp/receipt.json" --module "$mlp" --dir examples/mlp/data::/input \
    --trust "$work/provider.key.pub" >/dev/null

echo "== a provider: gridbox serve; a client: gridbox submit --verify"
cat > "$work/policy.toml" <<EOF
[[tenants]]
name = "demo"
token = "demo-token-0123456789"
[serve]
workers = 2
EOF
"$gridbox" serve --addr 127.0.0.1:0 --data "$work/serve" --policy "$work/policy.toml" --key "$work/provider.key" \
    2> "$work/serve.log" &
server=$!
for _ in $(seq 300); do grep -q "serving on" "$work/serve.log" && break; sleep 0.1; done
url=$(grep -o 'http://[0-9.:]*' "$work/serve.log" | head -n 1)
"$gridbox" submit "$job" --dir examples/wordfreq/data::/input --server "$url" --token demo-token-0123456789 \
    --out "$work/remote" --verify --trust "$work/provider.key.pub"
head -n 4 "$work/remote/output/freq.tsv"
kill -TERM "$server" && wait "$server" && server=
