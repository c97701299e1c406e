#!/usr/bin/env bash
# Cached vs uncached (cache.max_entries 0) token verification through the gateway, one worker.
. "$(dirname "$0")/common.sh"
for cache in 10000 0; do
  ./target/debug/portcullis render --policies "$WORK/pol" --wasm-dir dist --listen-port 10100 --admin-port 9991 \
    --upstream 127.0.0.1:1 --out "$WORK/gw.yaml" > /dev/null
  python3 - "$WORK/gw.yaml" "$cache" <<'PY'
import sys
p, cache = sys.argv[1], sys.argv[2]
s = open(p).read()
s = s.replace('route: { cluster: upstream, timeout: 15s }', 'direct_response: { status: 200, body: { inline_string: "ok" } }')
s = s.replace('\\"mode\\":\\"enforce\\"', '\\"mode\\":\\"enforce\\",\\"cache\\":{\\"max_entries\\":%s}' % cache, 1)
open(p, 'w').write(s)
PY
  start_envoy "$WORK/gw.yaml" 9991
  for alg in RS256 ES256; do
    T=$(./target/debug/portcullis token --tenant acme --scope customers:read --alg $alg)
    taskset -c 1 wrk -t1 -c8 -d3s -H "Authorization: Bearer $T" http://127.0.0.1:10100/api/v1/tenants/acme/customers > /dev/null
    R=$(taskset -c 1 wrk -t1 -c8 -d8s --latency -H "Authorization: Bearer $T" http://127.0.0.1:10100/api/v1/tenants/acme/customers)
    echo "cache=$cache $alg $(echo "$R" | grep Requests/sec) p50=$(echo "$R" | awk '/ 50%/{print $2}') p99=$(echo "$R" | awk '/ 99%/{print $2}')"
  done
  kill $EP; wait $EP 2>/dev/null
done
