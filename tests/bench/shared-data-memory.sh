#!/usr/bin/env bash
# Envoy RSS growth for N distinct client addresses (via one trusted x-forwarded-for hop) against
# the per-IP limit, whose key table is bounded (max_keys); reports the shared-data keys created.
. "$(dirname "$0")/common.sh"
MAX_KEYS=${MAX_KEYS:-65536}
sed -i "s/^headers: none/headers: none\nmax_keys: $MAX_KEYS/" "$WORK/pol/ratelimit-ip.yaml"
./target/debug/demo-upstream --listen 127.0.0.1:18181 --quiet > /dev/null &
./target/debug/portcullis render --policies "$WORK/pol" --wasm-dir dist --listen-port 10300 --admin-port 9993 \
  --upstream 127.0.0.1:18181 --out "$WORK/mem.yaml" > /dev/null
cat > "$WORK/xff.lua" <<'LUA'
counter = 0
request = function()
  counter = counter + 1
  local n = counter % LIMIT
  local ip = string.format("10.%d.%d.%d", math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
  return wrk.format("GET", "/healthz", { ["x-forwarded-for"] = ip })
end
LUA
for N in "${@:-10000 100000}"; do
  start_envoy "$WORK/mem.yaml" 9993
  sed "s/LIMIT/1/" "$WORK/xff.lua" > "$WORK/xff-1.lua"
  taskset -c 1 wrk -t1 -c4 -d8s -s "$WORK/xff-1.lua" http://127.0.0.1:10300 > /dev/null
  sleep 2; rss0=$(awk '/VmRSS/{print $2}' /proc/$EP/status)
  sed "s/LIMIT/$N/" "$WORK/xff.lua" > "$WORK/xff-n.lua"
  out=$(taskset -c 1 wrk -t1 -c8 -d$(( N / 3000 + 5 ))s -s "$WORK/xff-n.lua" http://127.0.0.1:10300)
  sleep 2; rss1=$(awk '/VmRSS/{print $2}' /proc/$EP/status)
  created=$(curl -s "localhost:9993/stats?filter=ratelimit_ip.slots_created" | awk '{print $2}')
  echo "keys=$N requests=$(echo "$out" | awk '/requests in/{print $1}') rss_delta_kib=$((rss1 - rss0)) bytes_per_key=$(( (rss1 - rss0) * 1024 / N )) slots_created=${created:-0} slot_bound=$(( (MAX_KEYS + 7) / 8 )) max_keys=$MAX_KEYS"
  kill $EP; wait $EP 2>/dev/null
done
