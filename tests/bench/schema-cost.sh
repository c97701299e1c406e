#!/usr/bin/env bash
# Schema validation cost, one worker: Envoy CPU per valid POST with and without the schema check,
# for bodies of about 1, 8 and 64 KiB (a batch of 1, 8 and 63 customer records, each validated
# against `customer-create`). µs per KiB = extra CPU per request / body KiB.
# Both cases run in ONE Envoy process (one rendered config, the same authn/ratelimit/pii chain):
# tenant `acme`'s fixtures path has a schema route, tenant `beta`'s has none. Measuring them in two
# processes put the difference between two start-ups (heap layout, JIT) into the figure.
# Each rep alternates the two URLs ALTS times per case (with/without, then without/with, ...) and
# sums the CPU ticks and requests of those runs, so drift on a shared machine falls on both.
# Prints `case=NAME bytes=B` per case, then
# `case=NAME with-schema|without-schema rep=R rps=… envoy_cpu_us_per_req=… non2xx=…`.
. "$(dirname "$0")/common.sh"
REPS=${REPS:-3}
ALTS=${ALTS:-3}
DUR=${DUR:-2}
python3 - "$WORK/pol" <<'PY'
import sys, yaml
d = sys.argv[1]
a = yaml.safe_load(open(f"{d}/authn.yaml"))
a["routes"].insert(0, {"name": "batch", "match": {"methods": ["POST"], "template": "/api/v1/tenants/{tenant}/fixtures/{name}"},
                       "require": {"scopes": {"all_of": ["customers:write"]}, "tenant_param": "tenant"}})
yaml.safe_dump(a, open(f"{d}/authn.yaml", "w"), sort_keys=False)
s = yaml.safe_load(open(f"{d}/schema.yaml"))
# Raised for the 64 KiB case.
s["limits"]["max_body_bytes"] = 131072
s["schemas"]["customer-batch"] = {"type": "object", "additionalProperties": False, "required": ["customers"],
                                  "properties": {"customers": {"type": "array", "maxItems": 100,
                                                               "items": {"$ref": "urn:portcullis:schema:customer-create"}}}}
# Only acme's fixtures are validated: beta's match no schema route, as no route did in the old
# second process.
s["routes"].insert(0, {"name": "batch", "match": {"methods": ["POST"], "template": "/api/v1/tenants/acme/fixtures/{name}"},
                       "request": {"schema": "customer-batch"}})
yaml.safe_dump(s, open(f"{d}/schema.yaml", "w"), sort_keys=False)
PY
./target/debug/demo-upstream --listen 127.0.0.1:18182 --quiet > /dev/null &
# Same-length tenants: the two requests differ only in whether the schema route matches.
declare -A TOK URL
TOK[with]=$(./target/debug/portcullis token --tenant acme --scope customers:write)
TOK[without]=$(./target/debug/portcullis token --tenant beta --scope customers:write)
# The upstream answers 204 with no body: what is measured is the request side.
URL[with]=http://127.0.0.1:10400/api/v1/tenants/acme/fixtures/empty
URL[without]=http://127.0.0.1:10400/api/v1/tenants/beta/fixtures/empty
for k in 1 8 63; do
  python3 - "$k" > "$WORK/body-$k.json" <<'PY'
import json, sys
one = {"name": "Ada Lovelace", "email": "ada@acme.example.com", "phone": "+15555550123", "tier": "standard", "seats": 12,
       "address": {"street": "12 Analytical Engine Way", "city": "London", "country": "GB"},
       "tags": ["t%02d-%s" % (i, "x" * 34) for i in range(20)], "consent": {"marketing": True, "analytics": False}}
print(json.dumps({"customers": [one] * int(sys.argv[1])}, separators=(",", ":")), end="")
PY
  for kind in with without; do
    printf 'wrk.method = "POST"\nwrk.body = [[%s]]\nwrk.headers["content-type"] = "application/json"\nwrk.headers["authorization"] = "Bearer %s"\n' \
      "$(cat "$WORK/body-$k.json")" "${TOK[$kind]}" > "$WORK/post-$k-$kind.lua"
  done
done
echo "case=1k bytes=$(wc -c < "$WORK/body-1.json")"; echo "case=8k bytes=$(wc -c < "$WORK/body-8.json")"; echo "case=64k bytes=$(wc -c < "$WORK/body-63.json")"
./target/debug/portcullis render --policies "$WORK/pol" --wasm-dir dist --listen-port 10400 --admin-port 9994 \
  --upstream 127.0.0.1:18182 --out "$WORK/s.yaml" > /dev/null || exit 1
start_envoy "$WORK/s.yaml" 9994

# The "without" URL must really skip validation: a body the schema refuses (a record without its
# required `email`) is refused on one URL and passes on the other; a valid body passes on both.
post() { curl -s -o /dev/null -w '%{http_code}' -X POST -H 'content-type: application/json' \
  -H "authorization: Bearer ${TOK[$1]}" --data-binary "$2" "${URL[$1]}"; }
BAD='{"customers":[{"name":"Ada Lovelace"}]}'
GOOD=$(cat "$WORK/body-1.json")
s_bad_with=$(post with "$BAD"); s_bad_without=$(post without "$BAD")
s_good_with=$(post with "$GOOD"); s_good_without=$(post without "$GOOD")
echo "check invalid-body with-schema=$s_bad_with without-schema=$s_bad_without valid-body with-schema=$s_good_with without-schema=$s_good_without"
case "$s_bad_with:$s_bad_without:$s_good_with:$s_good_without" in
  4??:2??:2??:2??) ;;
  *) echo "the with/without routes do not differ only by validation (want 4xx/2xx for the invalid body, 2xx/2xx for the valid one)"
     cat "$WORK/envoy.log"; exit 1 ;;
esac

# run KIND CASE_BODY SECONDS: one wrk run; leaves ticks, requests, seconds and non-2xx in R_*.
run() {
  local t0 t1 out
  t0=$(cpu_ticks $EP)
  out=$(taskset -c 1 wrk -t1 -c4 -d"$3"s -s "$WORK/post-$2-$1.lua" "${URL[$1]}")
  t1=$(cpu_ticks $EP)
  R_TICKS=$((t1 - t0))
  R_REQS=$(echo "$out" | awk '/requests in/{print $1}')
  R_SECS=$(echo "$out" | awk '/requests in/{sub(/s,$/, "", $4); print $4}')
  R_NON2XX=$(echo "$out" | awk '/Non-2xx/{n=$NF} END{print n+0}')
}
FAILED=0
for c in 1k:1 8k:8 64k:63; do
  for kind in with without; do run $kind "${c#*:}" 1; done   # warm-up: JIT, caches, token cache
done
for rep in $(seq 1 "$REPS"); do
  for c in 1k:1 8k:8 64k:63; do
    declare -A ticks=([with]=0 [without]=0) reqs=([with]=0 [without]=0) secs=([with]=0 [without]=0) bad=([with]=0 [without]=0)
    for alt in $(seq 1 "$ALTS"); do
      # ABBA: neither case always runs first after the other's load.
      if [ $((alt % 2)) -eq 1 ]; then order="with without"; else order="without with"; fi
      for kind in $order; do
        run $kind "${c#*:}" "$DUR"
        ticks[$kind]=$((ticks[$kind] + R_TICKS)); reqs[$kind]=$((reqs[$kind] + R_REQS)); bad[$kind]=$((bad[$kind] + R_NON2XX))
        secs[$kind]=$(awk -v a="${secs[$kind]}" -v b="$R_SECS" 'BEGIN{print a + b}')
      done
    done
    for kind in with without; do
      [ "${bad[$kind]}" -eq 0 ] || FAILED=1
      echo "case=${c%%:*} $kind-schema rep=$rep rps=$(awk -v n="${reqs[$kind]}" -v s="${secs[$kind]}" 'BEGIN{printf "%.2f", n / (s > 0 ? s : 1)}') envoy_cpu_us_per_req=$(awk -v t="${ticks[$kind]}" -v n="${reqs[$kind]}" 'BEGIN{printf "%.1f", t * 10000 / (n > 0 ? n : 1)}') non2xx=${bad[$kind]}"
    done
  done
done
kill $EP; wait $EP 2>/dev/null
[ $FAILED -eq 0 ] || { echo "non-2xx answers while measuring"; cat "$WORK/envoy.log"; exit 1; }
