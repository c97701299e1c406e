#!/usr/bin/env bash
# Scaling with work: Envoy CPU per request through authn + ratelimit (direct response, one
# worker) when the policy has 10 vs 10k routes, and when shared data holds 10 vs 100k tenants'
# buckets. Each pair is measured interleaved, REPS times, on fresh Envoys.
#
# routes:  authn gets N-10 generated routes placed *before* the demo's (a scan in config order
#          would walk all of them); the request matches a demo route.
# tenants: an HS256 provider (bench key) and one `tenant` limit; first N distinct tenants' tokens
#          each make one request (N buckets in shared data), then the measured load cycles over
#          ten tenants' tokens, warmed up first so every configuration measures cached tokens.
# apikeys: authn with 10 vs 100k API keys (rendered as the compact table `portcullis render`
#          writes; every key its own app, a thousand tenants): RSS at 1 and 2 workers after
#          traffic (the difference is one more worker's VMs, so 100k minus 10 is what the keys
#          cost per VM), then the measured load cycles over ten valid keys.
#
# Prints: `routes=N rep=R rps=… cpu_us=… non2xx=…`, `tenants=N rep=R rps=… cpu_us=… non2xx=… filled_requests=…`,
# `apikeys=N rep=R rps=… cpu_us=… non2xx=…` and `apikeys_rss=N workers=W rep=R rss_kib=… authn_config_bytes=… status_with_key_7=…`.
# PARTS="apikeys" (any of routes tenants apikeys) runs only those parts.
. "$(dirname "$0")/common.sh"
REPS=${REPS:-3}
DUR=${DUR:-6}
PARTS=${PARTS:-routes tenants apikeys}
part() { case " $PARTS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
PY=.venv/bin/python
ISSUER=https://idp.demo.portcullis.local
AUDIENCE=portcullis-demo-api
./target/debug/portcullis bench-keys "$WORK/keys" > /dev/null

# keep_authn_ratelimit IN OUT: the rendered gateway reduced to authn + ratelimit, direct response.
keep_authn_ratelimit() {
  $PY - "$1" "$2" <<'PY'
import sys, yaml
cfg = yaml.safe_load(open(sys.argv[1]))
h = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
keep = {"portcullis.authn", "portcullis.ratelimit", "envoy.filters.http.router"}
h["http_filters"] = [f for f in h["http_filters"] if f["name"] in keep]
route = h["route_config"]["virtual_hosts"][0]["routes"][0]
route.pop("route", None)
h["route_config"]["virtual_hosts"][0]["routes"] = [{"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}]
yaml.safe_dump(cfg, open(sys.argv[2], "w"), sort_keys=False)
PY
}

render() { # POLICY_DIR OUT (stops the run when the policy does not render)
  ./target/debug/portcullis render --policies "$1" --wasm-dir dist --listen-port 10410 --admin-port 9997 \
    --upstream 127.0.0.1:18190 --out "$WORK/r.yaml" > /dev/null || exit 1
  keep_authn_ratelimit "$WORK/r.yaml" "$2"
}

# measure CONFIG LUA URL → sets RPS CPU NON2XX (warm-up first, then DUR seconds)
measure() {
  taskset -c 1 wrk -t1 -c8 -d3s -s "$2" "$3" > /dev/null
  local t0 t1 out reqs
  t0=$(cpu_ticks "$EP")
  out=$(taskset -c 1 wrk -t1 -c8 -d"${DUR}"s -s "$2" "$3")
  t1=$(cpu_ticks "$EP")
  reqs=$(echo "$out" | awk '/requests in/{print $1}')
  RPS=$(echo "$out" | awk '/Requests\/sec/{print $2}')
  NON2XX=$(echo "$out" | awk '/Non-2xx/{print $NF}')
  NON2XX=${NON2XX:-0}
  CPU=$(awk -v t=$((t1 - t0)) -v n="$reqs" 'BEGIN{printf "%.1f", t * 10000 / (n > 0 ? n : 1)}')
}

# --- routes -------------------------------------------------------------------------------
if part routes; then
for N in 10 10000; do
  cp -r "$WORK/pol" "$WORK/routes-$N"
  $PY - "$WORK/routes-$N/authn.yaml" "$N" <<'PY'
import sys, yaml
p, n = sys.argv[1], int(sys.argv[2])
doc = yaml.safe_load(open(p))
extra = max(n - len(doc["routes"]), 0)
gen = [{"name": f"gen-{i}", "match": {"methods": ["GET"], "template": f"/api/v1/gen{i}/tenants/{{tenant}}/items"},
        "require": {"scopes": {"all_of": ["customers:read"]}, "tenant_param": "tenant"}} for i in range(extra)]
doc["routes"] = gen + doc["routes"]
yaml.safe_dump(doc, open(p, "w"), sort_keys=False)
PY
  render "$WORK/routes-$N" "$WORK/routes-$N.yaml"
done
TOKEN=$(./target/debug/portcullis token --tenant acme --scope customers:read --app bench --ttl 86400)
printf 'wrk.headers["authorization"] = "Bearer %s"\n' "$TOKEN" > "$WORK/routes.lua"
for rep in $(seq 1 "$REPS"); do
  for N in 10 10000; do
    start_envoy "$WORK/routes-$N.yaml" 9997
    measure "$WORK/routes-$N.yaml" "$WORK/routes.lua" http://127.0.0.1:10410/api/v1/tenants/acme/customers
    echo "routes=$N rep=$rep rps=$RPS cpu_us=$CPU non2xx=$NON2XX"
    kill "$EP"; wait "$EP" 2> /dev/null
  done
done
fi

# --- tenants ------------------------------------------------------------------------------
if part tenants; then
cp -r "$WORK/pol" "$WORK/tenants"
$PY - "$WORK/tenants" "$WORK/keys/jwks.json" <<'PY'
import sys, json, yaml
d, jwks = sys.argv[1], json.load(open(sys.argv[2]))
hs = [k for k in jwks["keys"] if k["alg"] == "HS256"]
json.dump({"keys": hs}, open(f"{d}/bench-hs256.json", "w"))
doc = yaml.safe_load(open(f"{d}/authn.yaml"))
doc["providers"] = [{"name": "demo", "issuer": "https://idp.demo.portcullis.local", "audiences": ["portcullis-demo-api"],
                     "algorithms": ["HS256"], "jwks_file": "bench-hs256.json", "claims": {"tenant": "tenant"}}]
yaml.safe_dump(doc, open(f"{d}/authn.yaml", "w"), sort_keys=False)
rl = yaml.safe_load(open(f"{d}/ratelimit.yaml"))
rl["limits"] = [{"name": "tenant", "key": "tenant", "rate": {"burst": 1000000000, "refill": 1000000000}}]
yaml.safe_dump(rl, open(f"{d}/ratelimit.yaml", "w"), sort_keys=False)
PY
render "$WORK/tenants" "$WORK/tenants.yaml"
# Tokens for tenants t0 … t99999 (HS256: signed here, in a blink), one per line.
$PY - "$WORK/keys/jwks.json" "$WORK/tokens.txt" 100000 "$ISSUER" "$AUDIENCE" <<'PY'
import sys, json, hmac, hashlib, base64, time
jwks, out, n, iss, aud = json.load(open(sys.argv[1])), sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
key = [k for k in jwks["keys"] if k["alg"] == "HS256"][0]
secret = base64.urlsafe_b64decode(key["k"] + "=" * (-len(key["k"]) % 4))
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key["kid"]}).encode())
exp = int(time.time()) + 86400
with open(out, "w") as f:
    for i in range(n):
        body = b64(json.dumps({"iss": iss, "aud": aud, "sub": f"user-{i}", "exp": exp, "tenant": f"t{i}", "scope": "customers:read"}).encode())
        sig = b64(hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest())
        f.write(f"{head}.{body}.{sig}\n")
PY
# cycle.lua: tenant t<i> requests /api/v1/tenants/t<i>/customers with its own token, i < LIMIT.
cat > "$WORK/cycle.lua" <<'LUA'
tokens = {}
for line in io.lines("TOKENS") do
  tokens[#tokens + 1] = line
  if #tokens >= LIMIT then break end
end
i = 0
request = function()
  local t = i % #tokens
  i = i + 1
  return wrk.format("GET", "/api/v1/tenants/t" .. t .. "/customers", { ["authorization"] = "Bearer " .. tokens[t + 1] })
end
LUA
sed "s|TOKENS|$WORK/tokens.txt|; s|LIMIT|10|" "$WORK/cycle.lua" > "$WORK/ten.lua"
for N in 10 100000; do
  sed "s|TOKENS|$WORK/tokens.txt|; s|LIMIT|$N|" "$WORK/cycle.lua" > "$WORK/fill-$N.lua"
done
for rep in $(seq 1 "$REPS"); do
  for N in 10 100000; do
    start_envoy "$WORK/tenants.yaml" 9997
    # Fill: every tenant once (-c1 so the cycle is sequential: N requests make N buckets).
    filled=0
    while [ "$filled" -lt "$N" ]; do
      out=$(taskset -c 1 wrk -t1 -c1 -d$(( N / 2000 + 2 ))s -s "$WORK/fill-$N.lua" http://127.0.0.1:10410)
      filled=$(( filled + $(echo "$out" | awk '/requests in/{print $1}') ))
    done
    measure "$WORK/tenants.yaml" "$WORK/ten.lua" http://127.0.0.1:10410
    echo "tenants=$N rep=$rep rps=$RPS cpu_us=$CPU non2xx=$NON2XX filled_requests=$filled"
    kill "$EP"; wait "$EP" 2> /dev/null
  done
done
fi

# --- apikeys ------------------------------------------------------------------------------
if part apikeys; then
for N in 10 100000; do
  cp -r "$WORK/pol" "$WORK/apikeys-$N"
  # Every key its own app: without the app catalog (registering 100k apps would measure it).
  rm -f "$WORK/apikeys-$N/catalog.yaml"
  $PY - "$WORK/apikeys-$N/authn.yaml" "$N" <<'PY'
import sys, hashlib, yaml
p, n = sys.argv[1], int(sys.argv[2])
doc = yaml.safe_load(open(p))
doc["api_keys"]["keys"] = [
    {"id": f"k{i}", "sha256": hashlib.sha256(f"pcak_bench_{i}".encode()).hexdigest(), "app": f"app{i}",
     "tenant": f"t{i % 1000}", "scopes": ["customers:read"], "tier": "standard"} for i in range(n)]
yaml.safe_dump(doc, open(p, "w"), sort_keys=False)
PY
  render "$WORK/apikeys-$N" "$WORK/apikeys-$N.yaml"
done
# Ten valid keys (the same ten at both sizes), each on its own tenant's route.
cat > "$WORK/apikeys.lua" <<'LUA'
i = 0
request = function()
  local k = i % 10
  i = i + 1
  return wrk.format("GET", "/api/v1/tenants/t" .. k .. "/customers", { ["x-api-key"] = "pcak_bench_" .. k })
end
LUA
for N in 10 100000; do
  config_bytes[$N]=$($PY -c "import sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
for f in c['static_resources']['listeners'][0]['filter_chains'][0]['filters'][0]['typed_config']['http_filters']:
    if f['name'] == 'portcullis.authn':
        print(len(f['typed_config']['config']['configuration']['value']))" "$WORK/apikeys-$N.yaml")
done
for rep in $(seq 1 "$REPS"); do
  for N in 10 100000; do
    for W in 1 2; do
      taskset -c 0 "$ENVOY" -c "$WORK/apikeys-$N.yaml" --concurrency "$W" --disable-hot-restart --log-level error > "$WORK/envoy.log" 2>&1 &
      EP=$!
      for _ in $(seq 1 240); do curl -sf localhost:9997/ready > /dev/null && break; sleep 0.5; done
      # Traffic on several connections, so every worker's VM has served requests.
      taskset -c 1 wrk -t2 -c8 -d2s -s "$WORK/apikeys.lua" http://127.0.0.1:10410 > /dev/null
      rss=$(awk '/VmRSS/{print $2}' /proc/$EP/status)
      code=$(curl -s -o /dev/null -w '%{http_code}' -H "x-api-key: pcak_bench_7" http://127.0.0.1:10410/api/v1/tenants/t7/customers)
      echo "apikeys_rss=$N workers=$W rep=$rep rss_kib=$rss authn_config_bytes=${config_bytes[$N]} status_with_key_7=$code"
      kill "$EP"; wait "$EP" 2> /dev/null
    done
  done
done
for rep in $(seq 1 "$REPS"); do
  for N in 10 100000; do
    start_envoy "$WORK/apikeys-$N.yaml" 9997
    measure "$WORK/apikeys-$N.yaml" "$WORK/apikeys.lua" http://127.0.0.1:10410
    echo "apikeys=$N rep=$rep rps=$RPS cpu_us=$CPU non2xx=$NON2XX"
    kill "$EP"; wait "$EP" 2> /dev/null
  done
done
fi
