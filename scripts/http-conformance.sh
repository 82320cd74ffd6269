#!/usr/bin/env bash
# HTTP conformance: Schemathesis against a live `gridbox serve`, every check on, stateful phase
# included, bounded in time. It fails on any finding not listed as intended in
# spec/http-conformance-baseline.json (spec/http.md, "Conformance", says why each is right).
#
# Usage: scripts/http-conformance.sh GRIDBOX_BINARY [SECONDS]
# Needs: python3 (Schemathesis is installed into a virtual environment under target/).
set -euo pipefail
cd "$(dirname "$0")/.."
gridbox=$(realpath "$1")
seconds=${2:-90}
venv=target/schemathesis-venv
if [ ! -x "$venv/bin/schemathesis" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==4.32.5"
fi
work=$(mktemp -d)
server=
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT
token=conformance-token-0123456789
cat > "$work/policy.toml" <<POLICY
[[tenants]]
name = "conformance"
token = "$token"
[serve]
workers = 2
max_blob_bytes = 1000000
POLICY
"$gridbox" serve --addr 127.0.0.1:0 --data "$work/data" --policy "$work/policy.toml" --device cpu 2> "$work/serve.log" &
server=$!
for _ in $(seq 300); do grep -q "serving on" "$work/serve.log" && break; sleep 0.1; done
url=$(grep -o 'http://[0-9.:]*' "$work/serve.log" | head -n 1)
[ -n "$url" ] || { cat "$work/serve.log"; echo "http-conformance: the server did not start" >&2; exit 1; }

# Real data for the operations that need it: a module that returns at once, and a job of it.
module="$work/tiny.wasm"
printf '\x00asm\x01\x00\x00\x00\x01\x04\x01\x60\x00\x00\x03\x02\x01\x00\x05\x03\x01\x00\x01\x07\x13\x02\x06_start\x00\x00\x06memory\x02\x00\x0a\x04\x01\x02\x00\x0b' > "$module"
auth="Authorization: Bearer $token"
hash=$(curl -sf -H "$auth" --data-binary @"$module" "$url/v1/blobs" | python3 -c 'import json,sys; print(json.load(sys.stdin)["blake3"])')
manifest=$(printf 'format = 1\nmodule = "%s"\n' "$hash")
id=$(python3 -c 'import json,sys; print(json.dumps({"manifest": sys.argv[1]}))' "$manifest" \
    | curl -sf -H "$auth" -H 'Content-Type: application/json' --data-binary @- "$url/v1/jobs" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
curl -sf -H "$auth" "$url/v1/jobs/$id?wait=10" > /dev/null
# The seeded job for the operations that read a job (not for DELETE, which would take it away
# from the others); blobs come from the uploads the stateful phase makes (OpenAPI links).
cat > "$work/schemathesis.toml" <<CONFIG
[[operations]]
include-operation-id = "getJob"
parameters = { id = "$id" }

[[operations]]
include-operation-id = "getReceipt"
parameters = { id = "$id" }

[[operations]]
include-operation-id = "keepJob"
parameters = { id = "$id" }
CONFIG
"$venv/bin/schemathesis" --no-color --config-file "$work/schemathesis.toml" run spec/openapi.yaml --url "$url" \
    --header "$auth" --checks all --phases coverage,fuzzing,stateful --max-time "$seconds" --workers 2 \
    --seed 20261201 --baseline spec/http-conformance-baseline.json "${@:3}"
