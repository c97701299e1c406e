#!/usr/bin/env bash
# Schema validation cost, one worker: Envoy CPU per valid POST with and without the schema route,
# interleaved, for bodies of about 1, 8 and 64 KiB (a batch of 1, 8 and 63 customer records, each
# validated against `customer-create`). µs per KiB = extra CPU per request / body KiB.
# Prints `case=NAME bytes=B with-schema|without-schema rep=R rps=… envoy_cpu_us_per_req=… non2xx=…`.
. "$(dirname "$0")/common.sh"
REPS=${REPS:-3}
# A batch route in both policies (on the demo upstream's fixtures, which take POSTs) (authn: customers:write; schema: an array of customer-create),
# with the filter-wide body limit raised for the 64 KiB case.
python3 - "$WORK/pol" <<'PY'
import sys, yaml
d = sys.argv[1]
a = yaml.safe_load(open(f"{d}/authn.yaml"))
a["routes"].insert(0, {"name": "batch", "match": {"methods": ["POST"], "template": "/api/v1/tenants/{tenant}/fixtures/{name}"},
                       "require": {"scopes": {"all_of": ["customers:write"]}, "tenant_param": "tenant"}})
yaml.safe_dump(a, open(f"{d}/authn.yaml", "w"), sort_keys=False)
s = yaml.safe_load(open(f"{d}/schema.yaml"))
s["limits"]["max_body_bytes"] = 131072
s["schemas"]["customer-batch"] = {"type": "object", "additionalProperties": False, "required": ["customers"],
                                  "properties": {"customers": {"type": "array", "maxItems": 100,
                                                               "items": {"$ref": "urn:portcullis:schema:customer-create"}}}}
s["routes"].insert(0, {"name": "batch", "match": {"methods": ["POST"], "template": "/api/v1/tenants/{tenant}/fixtures/{name}"},
                       "request": {"schema": "customer-batch"}})
yaml.safe_dump(s, open(f"{d}/schema.yaml", "w"), sort_keys=False)
PY
cp -r "$WORK/pol" "$WORK/nov"
python3 - "$WORK/nov/schema.yaml" <<'PY'
import sys, yaml
p = sys.argv[1]; s = yaml.safe_load(open(p)); s["routes"] = []
yaml.safe_dump(s, open(p, "w"), sort_keys=False)
PY
./target/debug/demo-upstream --listen 127.0.0.1:18182 --quiet > /dev/null &
T=$(./target/debug/portcullis token --tenant acme --scope customers:write)
for k in 1 8 63; do
  python3 - "$k" > "$WORK/body-$k.json" <<'PY'
import json, sys
one = {"name": "Ada Lovelace", "email": "ada@acme.example.com", "phone": "+15555550123", "tier": "standard", "seats": 12,
       "address": {"street": "12 Analytical Engine Way", "city": "London", "country": "GB"},
       "tags": ["t%02d-%s" % (i, "x" * 34) for i in range(20)], "consent": {"marketing": True, "analytics": False}}
print(json.dumps({"customers": [one] * int(sys.argv[1])}, separators=(",", ":")), end="")
PY
  printf 'wrk.method = "POST"\nwrk.body = [[%s]]\nwrk.headers["content-type"] = "application/json"\nwrk.headers["authorization"] = "Bearer %s"\n' \
    "$(cat "$WORK/body-$k.json")" "$T" > "$WORK/post-$k.lua"
done
echo "case=1k bytes=$(wc -c < "$WORK/body-1.json")"; echo "case=8k bytes=$(wc -c < "$WORK/body-8.json")"; echo "case=64k bytes=$(wc -c < "$WORK/body-63.json")"
for P in pol nov; do
  ./target/debug/portcullis render --policies "$WORK/$P" --wasm-dir dist --listen-port 10400 --admin-port 9994 \
    --upstream 127.0.0.1:18182 --out "$WORK/s-$P.yaml" > /dev/null || exit 1
done
# The upstream answers 204 with no body: what is measured is the request side.
URL=http://127.0.0.1:10400/api/v1/tenants/acme/fixtures/empty
for rep in $(seq 1 "$REPS"); do
  for P in pol nov; do
    start_envoy "$WORK/s-$P.yaml" 9994
    for c in 1k:1 8k:8 64k:63; do
      taskset -c 1 wrk -t1 -c4 -d2s -s "$WORK/post-${c#*:}.lua" $URL > /dev/null
      t0=$(cpu_ticks $EP); out=$(taskset -c 1 wrk -t1 -c4 -d6s -s "$WORK/post-${c#*:}.lua" $URL); t1=$(cpu_ticks $EP)
      reqs=$(echo "$out" | awk '/requests in/{print $1}')
      echo "case=${c%%:*} $( [ $P = pol ] && echo with || echo without )-schema rep=$rep rps=$(echo "$out" | awk '/Requests\/sec/{print $2}') envoy_cpu_us_per_req=$(awk -v t=$((t1 - t0)) -v n="$reqs" 'BEGIN{printf "%.1f", t * 10000 / (n > 0 ? n : 1)}') non2xx=$(echo "$out" | awk '/Non-2xx/{n=$NF} END{print n+0}')"
    done
    kill $EP; wait $EP 2>/dev/null
  done
done
