#!/usr/bin/env bash
# API keys at scale: authn config size and Envoy RSS with 0, 10k and 100k keys, at 1 and 2
# workers (the difference is what each extra worker's authn VM costs). One lookup stays O(1):
# see filters/authn/tests/apikeys.rs.
. "$(dirname "$0")/common.sh"
./target/debug/demo-upstream --listen 127.0.0.1:18184 --quiet > /dev/null &
for N in 0 10000 100000; do
  cp -r "$WORK/pol" "$WORK/k$N"
  python3 - "$WORK/k$N/authn.yaml" "$N" <<'PY'
import sys, hashlib, re
p, n = sys.argv[1], int(sys.argv[2])
s = open(p).read()
keys = "".join(
    f"    - {{ id: k{i}, sha256: {hashlib.sha256(f'pcak_bench_{i}'.encode()).hexdigest()}, app: app{i}, tenant: t{i % 1000}, scopes: [\"customers:read\"], tier: standard }}\n"
    for i in range(n))
s = s.replace("  keys:\n", "  keys:\n" + keys, 1)
open(p, "w").write(s)
PY
  for C in 1 2; do
    ./target/debug/portcullis render --policies "$WORK/k$N" --wasm-dir dist --listen-port 10402 --admin-port 9996 \
      --upstream 127.0.0.1:18184 --out "$WORK/a.yaml" > /dev/null
    taskset -c 0 "$ENVOY" -c "$WORK/a.yaml" --concurrency $C --disable-hot-restart --log-level error > "$WORK/envoy.log" 2>&1 &
    EP=$!
    for _ in $(seq 1 240); do curl -sf localhost:9996/ready > /dev/null && break; sleep 0.5; done
    # One request per worker-ish, so every VM has handled traffic.
    for _ in 1 2 3 4; do curl -s -o /dev/null -H "x-api-key: pcak_bench_4242" http://127.0.0.1:10402/api/v1/tenants/t242/customers; done
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "x-api-key: pcak_bench_4242" http://127.0.0.1:10402/api/v1/tenants/t242/customers)
    rss=$(awk '/VmRSS/{print $2}' /proc/$EP/status)
    cfg=$(python3 -c "import json,yaml;print(len(json.dumps(yaml.safe_load(open('$WORK/k$N/authn.yaml')))))" 2>/dev/null || echo "?")
    echo "keys=$N workers=$C rss_kib=$rss authn_config_bytes=$cfg status_with_key_4242=$code"
    kill $EP; wait $EP 2>/dev/null
  done
done
