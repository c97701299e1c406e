#!/usr/bin/env bash
# Masking throughput, one worker: Envoy CPU per request for a large JSON response of CRM records
# (every record has an SSN, card, IBAN, e-mail and phone to mask), with the pii route on and off,
# interleaved. MB/s = body bytes / extra CPU time per request.
. "$(dirname "$0")/common.sh"
N=${N:-1000}
cp -r "$WORK/pol" "$WORK/nop"
python3 - "$WORK/nop/pii.yaml" <<'PY'
import sys
p = sys.argv[1]; s = open(p).read()
open(p, 'w').write(s[:s.index('\nroutes:')] + '\nroutes: []\n')
PY
./target/debug/demo-upstream --listen 127.0.0.1:18183 --quiet > /dev/null &
T=$(./target/debug/portcullis token --tenant acme --scope customers:read)
PATH_Q="/api/v1/tenants/acme/fixtures/bulk?n=$N"
sleep 0.3
BYTES=$(curl -s "http://127.0.0.1:18183$PATH_Q" | wc -c)
echo "response body bytes: $BYTES"
for rep in 1 2 3; do
  for P in pol nop; do
    ./target/debug/portcullis render --policies "$WORK/$P" --wasm-dir dist --listen-port 10401 --admin-port 9995 \
      --upstream 127.0.0.1:18183 --out "$WORK/p.yaml" > /dev/null
    start_envoy "$WORK/p.yaml" 9995
    URL="http://127.0.0.1:10401$PATH_Q"
    taskset -c 1 wrk -t1 -c2 -d4s -H "authorization: Bearer $T" "$URL" > /dev/null
    t0=$(cpu_ticks $EP); out=$(taskset -c 1 wrk -t1 -c2 -d8s -H "authorization: Bearer $T" "$URL"); t1=$(cpu_ticks $EP)
    reqs=$(echo "$out" | awk '/requests in/{print $1}')
    echo "$( [ $P = pol ] && echo masked || echo unmasked ) rep=$rep rps=$(echo "$out" | awk '/Requests\/sec/{print $2}') envoy_cpu_us_per_req=$(( (t1 - t0) * 10000 / reqs )) non2xx=$(echo "$out" | grep -c Non-2xx)"
    kill $EP; wait $EP 2>/dev/null
  done
done
