#!/usr/bin/env bash
# API fuzzing from the OpenAPI document (issue 15's hostile-input campaign): schemathesis
# (PyPI, pinned, in a venv cached under target/) against a live debug balancer, with every
# check, a fixed seed and a fixed number of cases per operation, as three callers:
#   admin   the operations the admin token may call (clients, agent tokens, ops)
#   client  every operation, as client A; client B is a peer whose objects A must never
#           read (schemathesis' object_level_authorization check)
#   agent   the agents' operations, with an agent token enrolled in A's pool
# Fails on any 5xx, any response the document does not allow (status code, content type,
# headers, body schema), any request the document allows that the server refuses, and any
# cross-tenant success. Afterwards B's pool and probe must be unchanged and unreadable by A.
#
#   scripts/fuzz-api.sh            (after the build: it runs target/debug/plb)
#
# PLB_FUZZ_SEED and PLB_FUZZ_EXAMPLES (cases per operation and phase) change the run,
# PLB_FUZZ_ARGS adds schemathesis options (e.g. `--include-path-regex /decisions`);
# the report of each run is left in target/fuzz-api/.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"

seed="${PLB_FUZZ_SEED:-15}"
examples="${PLB_FUZZ_EXAMPLES:-100}"
venv=target/fuzz-venv
plb=target/debug/plb
out=target/fuzz-api

if [ ! -x "$plb" ]; then
    echo "error: $plb is missing; build first (scripts/env.sh, plb_build)" >&2
    exit 1
fi
# A probe component for client B (the sample probes the build made).
probe_wasm="$(ls -t target/debug/build/plb-probe-artifacts-*/out/wasm-target/wasm32-wasip2/release/trivial.wasm 2>/dev/null | head -n 1 || true)"
if [ -z "$probe_wasm" ]; then
    echo "error: no trivial.wasm under target/debug/build (the build of plb-probe-artifacts makes it)" >&2
    exit 1
fi

scripts/fuzz-venv.sh
py="$venv/bin/python"
st="$venv/bin/schemathesis"

work="$(mktemp -d)"
balancer_pid=""
cleanup() {
    if [ -n "$balancer_pid" ]; then
        kill "$balancer_pid" 2>/dev/null || true
        wait "$balancer_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
rm -rf "$out"
mkdir -p "$out"

port="$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
admin="plb-fuzz-admin-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
"$plb" balancer --listen "127.0.0.1:$port" --db "$work/plb.db" --admin-token "$admin" \
    --log warn >"$out/balancer.log" 2>&1 &
balancer_pid=$!
for _ in $(seq 1 100); do
    if "$py" -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$base/healthz" 2>/dev/null; then
        break
    fi
    if ! kill -0 "$balancer_pid" 2>/dev/null; then
        echo "error: the balancer exited; its log:" >&2
        cat "$out/balancer.log" >&2
        exit 1
    fi
    sleep 0.1
done
if ! "$py" -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$base/healthz" 2>/dev/null; then
    echo "error: the balancer does not answer on $base; its log:" >&2
    cat "$out/balancer.log" >&2
    exit 1
fi

# Schemathesis hooks: a probe upload's body is bytes (`application/wasm`), sent like
# `application/octet-stream`; a positive upload sends a real component, so that
# uploads, versions and deletions are exercised beyond the compile check.
cat >"$work/hooks.py" <<'PY'
import os
import re

import schemathesis

schemathesis.serializer.alias("application/wasm", "application/octet-stream")

with open(os.environ["PLB_FUZZ_PROBE"], "rb") as f:
    _COMPONENT = f.read()


# serde reads an integer field only from a JSON integer: `3.0`, which JSON Schema counts
# as an integer, is refused with 422 naming the field. Deliberate; nothing else is let
# through.
_FLOAT_FOR_INT = re.compile(r"invalid type: floating point `-?[0-9]+\.0`, expected [iu](8|16|32|64|size)")


@schemathesis.hook
def filter_failure(ctx, failure, case, response):
    if failure.code == "ST202" and response.status_code == 422:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            return True
        return _FLOAT_FOR_INT.search(message) is None
    return True


@schemathesis.hook("before_call").apply_to(method="PUT", path="/v1/pools/{pool}/probes/{name}")
def _real_component(ctx, case, kwargs):
    # The request body, not the case's: the case stays as generated (and positive).
    if case.meta is not None and case.meta.generation.mode.is_positive:
        kwargs["data"] = _COMPONENT
PY
export SCHEMATHESIS_HOOKS="$work/hooks.py" PLB_FUZZ_PROBE="$root/$probe_wasm"

# What the document cannot say: requests it allows that the server refuses for reasons
# beyond their shape, per operation (on top of schemathesis' defaults for
# positive_data_acceptance). Everything else a schema-valid request gets must be 2xx,
# 401, 403, 404, 409 or 429. Half of the generated pool and node names are the
# tenants' own, so that operations get past the 404.
accept='"2xx", "3xx", "401", "403", "404", "409", "429"'
cat >"$work/common.toml" <<EOF
[dictionaries.pool]
values = ["web"]

[dictionaries.node]
values = ["n1"]

[parameters]
"path.pool" = { dictionary = "pool", probability = 0.5 }
"path.node" = { dictionary = "node", probability = 0.5 }

# An address must resolve into --node-networks (default: not link-local or metadata).
[[operations]]
include-name = "POST /v1/agents/register"
checks.positive_data_acceptance.expected-statuses = [$accept, "400"]

# The URL must parse as http(s) with a host and no credentials, and resolve to a public
# address (SSRF guard).
[[operations]]
include-name = "PUT /v1/pools/{pool}/webhook"
checks.positive_data_acceptance.expected-statuses = [$accept, "400"]

# Each item's node must be one of the pool's.
[[operations]]
include-name = "POST /v1/pools/{pool}/feedback"
checks.positive_data_acceptance.expected-statuses = [$accept, "422"]

# Samples must be for the node's pools and probes, with sane times and outcomes.
[[operations]]
include-name = "POST /v1/reports"
checks.positive_data_acceptance.expected-statuses = [$accept, "422"]

# timeout_ms at most ten times interval_ms, fuel and config as text; the body must be a
# component of the plb:probe/probe world.
[[operations]]
include-name = "PUT /v1/pools/{pool}/probes/{name}"
checks.positive_data_acceptance.expected-statuses = [$accept, "400", "422"]

# With the admin token, client is required.
[[operations]]
include-name = "POST /v1/agent-tokens"
checks.positive_data_acceptance.expected-statuses = [$accept, "400"]
EOF

# Every check, every phase, a fixed seed and budget; failures are listed at the end.
run_st() {
    local name="$1"
    shift
    echo "--- schemathesis as $name" >&2
    cat "$work/common.toml" >"$work/schemathesis.toml"
    if [ -f "$work/$name.toml" ]; then
        cat "$work/$name.toml" >>"$work/schemathesis.toml"
    fi
    # From the temp dir: schemathesis keeps a crash cache in ./.schemathesis.
    (cd "$work" && "$root/$st" --config-file "$work/schemathesis.toml" run "$base/v1/openapi.json" \
        --checks all --seed "$seed" --max-examples "$examples" --workers 1 \
        --generation-database none \
        --phases examples,coverage,fuzzing,stateful \
        --report junit --report-junit-path "$root/$out/$name.junit.xml" \
        --no-color "$@" "${extra[@]}") || failed+=("$name")
}
failed=()
read -r -a extra <<<"${PLB_FUZZ_ARGS:-}"

# 1. The admin token, before any tenant exists (its fuzzing creates and revokes clients
#    and agent tokens by generated ids, which must not hit the tenants below).
run_st admin -H "Authorization: Bearer $admin" --include-tag clients --include-tag ops

# 2. Tenants: clients A and B, each with a pool; B also with a probe; an agent token
#    enrolled in A's pool.
"$py" - "$base" "$admin" "$probe_wasm" "$work" <<'PY'
import json, sys, urllib.request

base, admin, wasm, work = sys.argv[1:5]

def call(method, path, token, body=None, ctype="application/json"):
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", ctype)
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"null")

a = call("POST", "/v1/clients", admin, {"name": "fuzz-a"})
b = call("POST", "/v1/clients", admin, {"name": "fuzz-b"})
call("POST", "/v1/pools", a["token"], {"name": "web", "latency_slo_ms": 200})
call("POST", "/v1/pools", b["token"], {"name": "secret-b", "latency_slo_ms": 150})
with open(wasm, "rb") as f:
    call("PUT", "/v1/pools/secret-b/probes/b-probe?tier=quick&interval_ms=5000", b["token"],
         f.read(), "application/wasm")
agent = call("POST", "/v1/agent-tokens", a["token"], {"pools": ["web"]})
call("POST", "/v1/agents/register", agent["token"],
     {"node": "n1", "address": "127.0.0.1:9", "pools": ["web"]})
snapshot = {
    "pool": call("GET", "/v1/pools/secret-b", b["token"]),
    "probe": call("GET", "/v1/pools/secret-b/probes/b-probe", b["token"]),
}
json.dump({"a": a["token"], "b": b["token"], "agent": agent["token"], "snapshot": snapshot},
          open(f"{work}/tenants.json", "w"))
auth = {"auth": [
    {"name": "client-a", "fixedHeaders": [{"name": "Authorization", "value": f"Bearer {a['token']}"}]},
    {"name": "client-b", "fixedHeaders": [{"name": "Authorization", "value": f"Bearer {b['token']}"}]},
]}
json.dump(auth, open(f"{work}/wfc-auth.json", "w"))
PY
agent="$("$py" -c 'import json,sys; print(json.load(open(sys.argv[1]))["agent"])' "$work/tenants.json")"

# 3. Client A on every operation, B as the peer it must not see into.
cat >"$work/client.toml" <<EOF
[auth.wfc]
path = "$work/wfc-auth.json"
user = "client-a"
peers = ["client-a", "client-b"]
EOF
run_st client

# 4. The agent token on the agents' operations.
run_st agent -H "Authorization: Bearer $agent" --include-tag agents

# 5. B's pool and probe are as they were, and A still cannot read them.
if "$py" - "$base" "$work" <<'PY'
import json, sys, urllib.error, urllib.request

base, work = sys.argv[1:3]
t = json.load(open(f"{work}/tenants.json"))

def get(path, token):
    req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, None

failed = False
for what, path in [("pool", "/v1/pools/secret-b"), ("probe", "/v1/pools/secret-b/probes/b-probe")]:
    status, now = get(path, t["b"])
    before = t["snapshot"][what]
    # Reliability evidence moves with time; the settings and identity must not.
    if what == "probe":
        before = {k: v for k, v in before.items() if k != "reliability"}
        now = {k: v for k, v in (now or {}).items() if k != "reliability"}
    if status != 200 or now != before:
        print(f"FAIL: client B's {what} changed: {before} -> {status} {now}", file=sys.stderr)
        failed = True

# A (and its agent) may have made a pool and probe of the same names during the fuzzing
# (names are learnt from responses): what they read must never be B's objects, known by
# their creation times.
pool_b = t["snapshot"]["pool"]
probe_b = t["snapshot"]["probe"]

def is_b(obj):
    if isinstance(obj, dict):
        if obj.get("name") == pool_b["name"] and obj.get("created_at_ms") == pool_b["created_at_ms"]:
            return True
        if obj.get("sha256") == probe_b["sha256"] and obj.get("created_at_ms") == probe_b["created_at_ms"]:
            return True
        return any(is_b(v) for v in obj.values())
    if isinstance(obj, list):
        return any(is_b(v) for v in obj)
    return False

# The check sees B's objects where B reads them (else it could not fail).
if not all(is_b(get(path, t["b"])[1]) for path in ["/v1/pools", "/v1/pools/secret-b/probes"]):
    print("FAIL: the cross-tenant check does not recognise B's own objects", file=sys.stderr)
    failed = True
for path in ["/v1/pools", "/v1/pools/secret-b", "/v1/pools/secret-b/probes",
             "/v1/pools/secret-b/probes/b-probe", "/v1/pools/secret-b/nodes"]:
    for who in ["a", "agent"]:
        status, body = get(path, t[who])
        if status < 400 and is_b(body):
            print(f"FAIL: {who} read client B's objects at {path}: {body}", file=sys.stderr)
            failed = True
sys.exit(1 if failed else 0)
PY
then
    :
else
    failed+=(cross-tenant)
fi
if ! kill -0 "$balancer_pid" 2>/dev/null; then
    echo "FAIL: the balancer exited during the fuzzing" >&2
    failed+=(exited)
fi
if grep -q "panicked" "$out/balancer.log"; then
    echo "FAIL: the balancer panicked:" >&2
    grep -A3 "panicked" "$out/balancer.log" >&2
    failed+=(panic)
fi
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz-api: FAILED: ${failed[*]} (seed $seed; reports in $out/)" >&2
    exit 1
fi
echo "fuzz-api: clean (seed $seed, $examples cases per operation and phase)" >&2
