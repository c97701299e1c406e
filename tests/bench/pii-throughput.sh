#!/usr/bin/env bash
# Masking cost, one worker: Envoy CPU per response with the pii route on and off, interleaved,
# for CRM records (every record has an SSN, card, IBAN, e-mail and phone to mask) at about
# 4 KiB, 64 KiB and 1 MiB (just under pii's max_body_bytes), and for 1 MiB of JSON with nothing
# to mask. MB/s = body bytes / extra CPU time per response.
# Prints `case=NAME bytes=B masked|unmasked rep=R rps=… envoy_cpu_us_per_req=… non2xx=…`.
. "$(dirname "$0")/common.sh"
REPS=${REPS:-3}
cp -r "$WORK/pol" "$WORK/nop"
python3 - "$WORK/nop/pii.yaml" <<'PY'
import sys
p = sys.argv[1]; s = open(p).read()
open(p, 'w').write(s[:s.index('\nroutes:')] + '\nroutes: []\n')
PY
./target/debug/demo-upstream --listen 127.0.0.1:18183 --quiet > /dev/null &
T=$(./target/debug/portcullis token --tenant acme --scope customers:read)
sleep 0.3
UP=http://127.0.0.1:18183/api/v1/tenants/acme/fixtures
# Records per size: one record's bytes from 1000 of them.
PER=$(( $(curl -s "$UP/bulk?n=1000" | wc -c) / 1000 ))
CASES="crm-4k:bulk?n=$(( 4096 / PER )) crm-64k:bulk?n=$(( 65536 / PER )) crm-1m:bulk?n=$(( 1000000 / PER )) clean-1m:clean?bytes=1000000"
for c in $CASES; do
  echo "case=${c%%:*} bytes=$(curl -s "$UP/${c#*:}" | wc -c) query=${c#*:}"
done
for P in pol nop; do
  ./target/debug/portcullis render --policies "$WORK/$P" --wasm-dir dist --listen-port 10401 --admin-port 9995 \
    --upstream 127.0.0.1:18183 --out "$WORK/p-$P.yaml" > /dev/null || exit 1
done
for rep in $(seq 1 "$REPS"); do
  for P in pol nop; do
    start_envoy "$WORK/p-$P.yaml" 9995
    for c in $CASES; do
      URL="http://127.0.0.1:10401/api/v1/tenants/acme/fixtures/${c#*:}"
      taskset -c 1 wrk -t1 -c2 -d2s -H "authorization: Bearer $T" "$URL" > /dev/null
      t0=$(cpu_ticks $EP); out=$(taskset -c 1 wrk -t1 -c2 -d6s -H "authorization: Bearer $T" "$URL"); t1=$(cpu_ticks $EP)
      reqs=$(echo "$out" | awk '/requests in/{print $1}')
      echo "case=${c%%:*} $( [ $P = pol ] && echo masked || echo unmasked ) rep=$rep rps=$(echo "$out" | awk '/Requests\/sec/{print $2}') envoy_cpu_us_per_req=$(awk -v t=$((t1 - t0)) -v n="$reqs" 'BEGIN{printf "%.1f", t * 10000 / (n > 0 ? n : 1)}') non2xx=$(echo "$out" | awk '/Non-2xx/{n=$NF} END{print n+0}')"
    done
    kill $EP; wait $EP 2>/dev/null
  done
done
