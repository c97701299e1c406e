#!/usr/bin/env bash
# The same limit local (Envoy shared data) and global (portcullis-rls + redis-server): authn +
# the identity ratelimit instance with a direct response, one Envoy worker on core 0; wrk, the
# service (one thread) and Redis share core 1. Throughput (16 connections) and fixed-rate
# latency (4 connections, ~400 req/s), interleaved REPS times; then the service's own decision
# latency on loopback (`portcullis-rls bench`, sequential calls per connection).
. "$(dirname "$0")/common.sh"
command -v redis-server > /dev/null || { echo "needs redis-server (apt-get install redis-server)"; exit 1; }
REPS=${REPS:-3}
DUR=${DUR:-8}
cargo build --quiet --release -p portcullis-ratelimit-service
RLS=target/release/portcullis-rls
mkdir -p "$WORK/redis"
taskset -c 1 redis-server --port 16390 --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK/redis" > /dev/null &
for scope in local global; do
  cp -r "$WORK/pol" "$WORK/pol-$scope"
  cat > "$WORK/pol-$scope/ratelimit.yaml" <<YAML
stat_prefix: ratelimit
headers: draft
global: { timeout_ms: 100, failure_mode: deny }
limits:
  - { name: tenant, scope: $scope, key: tenant, rate: { burst: 1000000, refill: 1000000 } }
YAML
  cat > "$WORK/pol-$scope/ratelimit-ip.yaml" <<'YAML'
stat_prefix: ratelimit_ip
headers: none
limits: []
YAML
  ./target/debug/portcullis render --policies "$WORK/pol-$scope" --wasm-dir dist --listen-port 10700 --admin-port 9970 \
    --upstream 127.0.0.1:1 --rls 127.0.0.1:18391 --rls-out "$WORK/rls-$scope.yaml" --out "$WORK/$scope.yaml" > /dev/null
  .venv/bin/python - "$WORK/$scope.yaml" <<'PY'
import sys, yaml
p = sys.argv[1]; cfg = yaml.safe_load(open(p))
h = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
h["http_filters"] = [f for f in h["http_filters"] if f["name"] in ("portcullis.authn", "portcullis.ratelimit", "envoy.filters.http.router")]
r = h["route_config"]["virtual_hosts"][0]["routes"][0]; r.pop("route"); r["direct_response"] = {"status": 200}
yaml.safe_dump(cfg, open(p, "w"))
PY
done
taskset -c 1 "$RLS" --config "$WORK/rls-global.yaml" --listen 127.0.0.1:18391 --redis redis://127.0.0.1:16390 \
  --threads 1 > /dev/null 2> "$WORK/rls.log" &
sleep 0.5
T=$(./target/debug/portcullis token --tenant acme --scope customers:read --ttl 86400)
printf 'wrk.headers["authorization"] = "Bearer %s"\n' "$T" > "$WORK/t.lua"
printf 'wrk.headers["authorization"] = "Bearer %s"\nfunction delay() return 10 end\n' "$T" > "$WORK/paced.lua"
URL=http://127.0.0.1:10700/api/v1/tenants/acme/customers
run() { taskset -c 1 wrk -t1 -c"$2" -d"$3"s --latency -s "$1" "$URL"; }
fields() { awk '/Requests\/sec/{r=$2} / 50%/{p50=$2} / 99%/{p99=$2} /Non-2xx/{n=$NF} END{print "rps=" r " p50=" p50 " p99=" p99 " non2xx=" (n ? n : 0)}'; }
for rep in $(seq 1 "$REPS"); do
  for scope in local global; do
    start_envoy "$WORK/$scope.yaml" 9970
    run "$WORK/t.lua" 16 3 > /dev/null
    echo "$scope rep=$rep throughput $(run "$WORK/t.lua" 16 "$DUR" | fields)"
    echo "$scope rep=$rep paced $(run "$WORK/paced.lua" 4 "$DUR" | fields)"
    if [ "$scope" = global ]; then
      echo "$scope rep=$rep calls=$(curl -s "localhost:9970/stats?filter=portcullis.ratelimit.global.calls" | awk '{print $2}') errors=$(curl -s "localhost:9970/stats?filter=portcullis.ratelimit.global.errors" | awk '{print $2}') timeouts=$(curl -s "localhost:9970/stats?filter=portcullis.ratelimit.global.timeouts" | awk '{print $2}')"
    fi
    kill "$EP"; wait "$EP" 2> /dev/null
  done
done
for c in 1 8; do
  "$RLS" bench --target 127.0.0.1:18391 --domain portcullis.ratelimit --limit tenant --requests 5000 --connections $c > /dev/null
  echo "service connections=$c $("$RLS" bench --target 127.0.0.1:18391 --domain portcullis.ratelimit --limit tenant --requests 20000 --connections $c)"
done
