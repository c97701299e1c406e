# Sourced by run.sh and envoy-instructions.sh (with ROOT as the working directory, PY, WORK set):
# the chain the throughput rows drive. The demo policies with limits out of the way and the
# bench route on every filter, the demo upstream on core 1, the configurations c0…c8 of
# configs.py for the modules in dist/ in $WORK/cfg, and the request every row sends: a valid
# 1 KiB customer POSTed by a verified caller (TOKEN, BODY, URL, $WORK/post.lua for wrk).
# `chain_configs DIST DIR` writes the same configurations for the modules in another directory.
cp -r policies "$WORK/pol"
$PY - "$WORK/pol" <<'PY'
import sys, yaml
d = sys.argv[1]
def edit(f, fn):
    p = f"{d}/{f}"; doc = yaml.safe_load(open(p)); fn(doc); yaml.safe_dump(doc, open(p, "w"), sort_keys=False)
def authn(doc):
    for r in doc["routes"]:
        if r["name"] == "fixtures":
            r["match"]["methods"] = ["GET", "HEAD", "POST"]
def schema(doc):
    doc["routes"].append({"name": "bench", "match": {"methods": ["POST"], "template": "/api/v1/tenants/{tenant}/fixtures/{name}"},
                          "request": {"schema": "customer-create"}})
def pii(doc):
    for r in doc["routes"]:
        r["match"]["methods"] = ["GET", "HEAD", "POST"]
def rl(doc):
    doc["limits"] = [{"name": n, "key": n, "rate": {"burst": 1000000000, "refill": 1000000000}} for n in ("tenant", "app", "subject")]
    doc.pop("tenant_tiers", None)
def rl_ip(doc):
    doc["limits"] = [{"name": "per-ip", "key": "ip", "rate": {"burst": 1000000000, "refill": 1000000000}}]
edit("authn.yaml", authn); edit("schema.yaml", schema); edit("pii.yaml", pii)
edit("ratelimit.yaml", rl); edit("ratelimit-ip.yaml", rl_ip)
PY
./target/debug/portcullis check "$WORK/pol" > /dev/null
./target/debug/portcullis bench-keys "$WORK/keys"
taskset -c 1 ./target/debug/demo-upstream --listen 127.0.0.1:18300 --quiet > /dev/null &
./target/debug/portcullis render --policies "$WORK/pol" --wasm-dir dist --listen-port 10500 --admin-port 9950 \
  --upstream 127.0.0.1:18300 --out "$WORK/gw.yaml" > /dev/null
chain_configs() { # DIST DIR
  mkdir -p "$2"
  sed "s#$ROOT/dist/#$1/#g" "$WORK/gw.yaml" > "$2/gw.yaml"
  $PY tests/bench/configs.py "$2/gw.yaml" "$2" "$1" policies/demo-keys/demo-jwks.json "$WORK/keys" > /dev/null
}
chain_configs "$ROOT/dist" "$WORK/cfg"

TOKEN=$(./target/debug/portcullis token --tenant acme --scope customers:read --app bench --ttl 86400)
BODY=$($PY -c 'import json; print(json.dumps({"name": "Ada Lovelace", "email": "ada@acme.example.com", "phone": "+15555550123", "tier": "standard", "seats": 12, "address": {"street": "12 Analytical Engine Way", "city": "London", "country": "GB"}, "tags": ["t%02d-%s" % (i, "x" * 34) for i in range(20)], "consent": {"marketing": True, "analytics": False}}, separators=(",", ":")))')
URL=http://127.0.0.1:10500/api/v1/tenants/acme/fixtures/bench
cat > "$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.body = [[$BODY]]
wrk.headers["content-type"] = "application/json"
wrk.headers["authorization"] = "Bearer $TOKEN"
LUA
