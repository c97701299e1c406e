#!/usr/bin/env bash
# What one proxy-wasm host call costs in Envoy: one no-op wasm filter (filters/noop) that makes
# the same host call N times per request, against the same filter making none, interleaved,
# REPS times, one worker pinned to core 0, direct response (no upstream). The per-call cost is
# (CPU per request with the calls − without) / N; it says which host calls are worth saving in
# the filters (a whole header map vs one header, a shared-data read, a property…).
#
# Prints `call=NAME n=N rep=R rps=… cpu_us=…` per run and `call=NAME per_call_ns=…` (median).
. "$(dirname "$0")/common.sh"
REPS=${REPS:-3}
DUR=${DUR:-5}
N=${N:-16}
CALLS=${CALLS:-headers header set_header add_response_header property set_property shared_get shared_set time metric}
PY=.venv/bin/python
cargo build --quiet --release --target wasm32-wasip1 -p portcullis-noop
NOOP=$ROOT/target/wasm32-wasip1/release/portcullis_noop.wasm

# probe_config CALL N OUT: Envoy with one no-op filter configured `CALL=N`, answering directly.
probe_config() {
  $PY - "$1" "$2" "$NOOP" "$3" <<'PY'
import sys, yaml
call, n, wasm, out = sys.argv[1:]
conf = {
    "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 9960}}},
    "static_resources": {"listeners": [{
        "name": "probe",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 10560}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "probe",
                "use_remote_address": True,
                "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                    {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}]}]},
                "http_filters": [
                    {"name": "bench.probe", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                        "config": {
                            "name": "probe", "root_id": "probe",
                            "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": f"{call}={n}"},
                            "vm_config": {"vm_id": "probe", "runtime": "envoy.wasm.runtime.v8",
                                          "code": {"local": {"filename": wasm}}}}}},
                    {"name": "envoy.filters.http.router", "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]}]},
}
yaml.safe_dump(conf, open(out, "w"), sort_keys=False)
PY
}

# A request shaped like the chain's: a bearer token and the usual client headers.
TOKEN=$(head -c 600 /dev/zero | tr '\0' 'a')
run() { # call n rep
  probe_config "$1" "$2" "$WORK/probe.yaml"
  start_envoy "$WORK/probe.yaml" 9960
  local url=http://127.0.0.1:10560/api/v1/tenants/acme/customers
  taskset -c 1 wrk -t1 -c16 -d2s -H "authorization: Bearer $TOKEN" -H "accept: application/json" "$url" > /dev/null
  local t0 t1 out reqs
  t0=$(cpu_ticks "$EP")
  out=$(taskset -c 1 wrk -t1 -c16 -d"${DUR}s" -H "authorization: Bearer $TOKEN" -H "accept: application/json" "$url")
  t1=$(cpu_ticks "$EP")
  kill "$EP"; wait "$EP" 2> /dev/null
  reqs=$(echo "$out" | awk '/requests in/{print $1}')
  echo "call=$1 n=$2 rep=$3 rps=$(echo "$out" | awk '/Requests\/sec/{print $2}') cpu_us=$(awk -v t=$((t1 - t0)) -v r="$reqs" 'BEGIN{printf "%.2f", t * 10000 / r}')"
}

OUTF=$WORK/hostcalls.txt
for rep in $(seq 1 "$REPS"); do
  for call in none $CALLS; do
    run "$call" "$N" "$rep" | tee -a "$OUTF"
  done
done
$PY - "$OUTF" "$N" <<'PY'
import re, sys, statistics
t, n = open(sys.argv[1]).read(), int(sys.argv[2])
runs = {}
for call, rep, cpu in re.findall(r"^call=(\S+) n=\d+ rep=(\d+) rps=\S+ cpu_us=(\S+)", t, re.M):
    runs.setdefault(call, {})[rep] = float(cpu)
base = runs.pop("none")
for call, reps in runs.items():
    # Each repetition against the baseline run next to it.
    per = [(reps[r] - base[r]) * 1000 / n for r in reps if r in base]
    print(f"call={call} per_call_ns={statistics.median(per):.0f} spread_ns={min(per):.0f}..{max(per):.0f}")
print(f"call=none cpu_us={statistics.median(base.values()):.2f}")
PY
