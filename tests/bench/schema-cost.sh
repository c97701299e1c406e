#!/usr/bin/env bash
# Envoy CPU per request for a 1 KiB valid POST, with and without schema validation, interleaved.
. "$(dirname "$0")/common.sh"
cp -r "$WORK/pol" "$WORK/nov"
python3 - "$WORK/nov/schema.yaml" <<'PY'
import sys, re
p = sys.argv[1]; s = open(p).read()
open(p, 'w').write(s[:s.index('\nroutes:')] + '\nroutes: []\n')
PY
./target/debug/demo-upstream --listen 127.0.0.1:18182 --quiet > /dev/null &
T=$(./target/debug/portcullis token --tenant acme --scope customers:write)
BODY='{"name":"Ada Lovelace","email":"ada@acme.example.com","phone":"+15555550123","tier":"standard","seats":12,"address":{"street":"12 Analytical Engine Way","city":"London","country":"GB"},"tags":["t00-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx","t01-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx","t02-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx","t03-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx","t04-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx","t05-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx","t06-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx","t07-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx","t08-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx","t09-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx","t10-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx","t11-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx","t12-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx","t13-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx","t14-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx","t15-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx","t16-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx","t17-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx","t18-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx","t19-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"],"consent":{"marketing":true,"analytics":false}}'
cat > "$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.body = [[$BODY]]
wrk.headers["content-type"] = "application/json"
wrk.headers["idempotency-key"] = "bench-00000001"
wrk.headers["authorization"] = "Bearer $T"
LUA
echo "body bytes: ${#BODY}"
for rep in 1 2 3; do
  for P in pol nov; do
    ./target/debug/portcullis render --policies "$WORK/$P" --wasm-dir dist --listen-port 10400 --admin-port 9994 \
      --upstream 127.0.0.1:18182 --out "$WORK/s.yaml" > /dev/null
    start_envoy "$WORK/s.yaml" 9994
    URL=http://127.0.0.1:10400/api/v1/tenants/acme/customers
    taskset -c 1 wrk -t1 -c4 -d5s -s "$WORK/post.lua" $URL > /dev/null
    t0=$(cpu_ticks $EP); out=$(taskset -c 1 wrk -t1 -c4 -d10s -s "$WORK/post.lua" $URL); t1=$(cpu_ticks $EP)
    reqs=$(echo "$out" | awk '/requests in/{print $1}')
    echo "$( [ $P = pol ] && echo with || echo without )-schema rep=$rep rps=$(echo "$out" | awk '/Requests\/sec/{print $2}') envoy_cpu_us_per_req=$(( (t1 - t0) * 10000 / reqs )) non2xx=$(echo "$out" | grep -c Non-2xx)"
    kill $EP; wait $EP 2>/dev/null
  done
done
