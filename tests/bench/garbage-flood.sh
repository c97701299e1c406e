#!/usr/bin/env bash
# A flood of forged tokens (RS256, then ES256; FLOOD_ALGS): a real kid, a fresh random signature
# on every request, so neither cache helps, against one worker, while a valid cached token is sent at a steady pace:
# how many forged requests per second one worker absorbs, and what happens to valid latency.
# authn only, direct response, per-IP limit off (the limit is what would cap one client).
. "$(dirname "$0")/common.sh"
./target/debug/portcullis render --policies "$WORK/pol" --wasm-dir dist --listen-port 10600 --admin-port 9960 \
  --upstream 127.0.0.1:1 --out "$WORK/f.yaml" > /dev/null
.venv/bin/python - "$WORK/f.yaml" <<'PY'
import sys, yaml
p = sys.argv[1]; cfg = yaml.safe_load(open(p))
h = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
h["http_filters"] = [f for f in h["http_filters"] if f["name"] in ("portcullis.authn", "envoy.filters.http.router")]
r = h["route_config"]["virtual_hosts"][0]["routes"][0]; r.pop("route"); r["direct_response"] = {"status": 200}
yaml.safe_dump(cfg, open(p, "w"))
PY
start_envoy "$WORK/f.yaml" 9960
URL=http://127.0.0.1:10600/api/v1/tenants/acme/customers
for ALG in ${FLOOD_ALGS:-RS256 ES256}; do
T=$(./target/debug/portcullis token --tenant acme --scope customers:read --alg "$ALG")
HP=${T%.*}
SIG=${T##*.}
# A fresh random signature of the right length on every request, shaped to reach the
# arithmetic: canonical base64url (the last character carries zero padding bits, or the token
# is refused as malformed before any signature check) and a leading zero character (for RSA
# s < n, or it is refused before the exponentiation). Forgers can do both; so does this flood.
PAD=$(( ${#SIG} * 6 % 8 ))
case $PAD in 4) LAST=AQgw ;; 2) LAST=AEIMQUYcgkosw048 ;; *) LAST=ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_ ;; esac
cat > "$WORK/forged.lua" <<LUA
local chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
local last = "$LAST"
math.randomseed(os.time())
request = function()
  local sig = { "A" }
  for i = 2, ${#SIG} - 1 do local n = math.random(1, 64); sig[i] = chars:sub(n, n) end
  local n = math.random(1, #last); sig[${#SIG}] = last:sub(n, n)
  return wrk.format("GET", nil, { ["authorization"] = "Bearer $HP." .. table.concat(sig) })
end
LUA
printf 'wrk.headers["authorization"] = "Bearer %s"\nfunction delay() return 10 end\n' "$T" > "$WORK/valid.lua"
valid() { taskset -c 1 wrk -t1 -c2 -d"$1"s --latency -s "$WORK/valid.lua" "$URL" | awk '/ 50%/{p50=$2} / 99%/{p99=$2} /Requests\/sec/{r=$2} END{print "valid rps=" r " p50=" p50 " p99=" p99}'; }
valid 3 > /dev/null
echo "$ALG alone:      $(valid 8)"
taskset -c 1 wrk -t1 -c8 -d10s -s "$WORK/forged.lua" "$URL" > "$WORK/flood.txt" &
FP=$!
sleep 1
echo "$ALG with flood: $(valid 8)"
wait $FP 2> /dev/null || sleep 2
echo "$ALG forged absorbed: $(awk '/Requests\/sec/{print $2}' "$WORK/flood.txt") req/s; refused: $(awk '/Non-2xx/{print $NF}' "$WORK/flood.txt") of $(awk '/requests in/{print $1}' "$WORK/flood.txt")"
done
kill $EP; wait $EP 2> /dev/null
