#!/usr/bin/env bash
# Renders every Envoy config of the compose mesh with `portcullis render` (templates here,
# policies in envoy/compose/policies/) and makes the throwaway CA and certificates, into
# $PORTCULLIS_COMPOSE_BUILD (default .build/compose). Run by `make compose-config`.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${PORTCULLIS_COMPOSE_BUILD:-.build/compose}
cli=./target/debug/portcullis
mkdir -p "$out"
render() { # TEMPLATE POLICY_DIR OUT UPSTREAM [more render options]
  local tmpl=$1 dir=$2 file=$3 upstream=$4
  shift 4
  "$cli" check "envoy/compose/policies/$dir" >/dev/null
  "$cli" render --template "envoy/compose/$tmpl" --policies "envoy/compose/policies/$dir" \
    --wasm-dir /etc/portcullis/wasm --listen-port 8080 --admin-port 9901 --upstream "$upstream" \
    --out "$out/$file" "$@"
  echo "config: $out/$file (envoy/compose/$tmpl + envoy/compose/policies/$dir)"
}
# The gateways' `scope: global` limits go to the rate limit service; its limits come from the
# same policy (rls.yaml).
render gateway.yaml.tmpl gateway gateway.yaml crm-sidecar:15443 \
  --rls ratelimit-service:8081 --rls-out "$out/rls.yaml"
# The CRM sidecar runs its three filters from the one module in one VM (`--one-module`): a
# sidecar per workload is where start-up and memory per Envoy count most, and the mesh then
# carries both builds.
render crm-sidecar.yaml.tmpl crm-api crm-sidecar.yaml crm-api:8080 --one-module
render sync-sidecar.yaml.tmpl sync-worker sync-sidecar.yaml sync-worker:8080
# The IdP serves the demo's public keys (the private halves stay in policies/demo-keys).
cp policies/demo-keys/demo-jwks.json "$out/jwks.json"
chmod 0644 "$out"/*.yaml "$out/jwks.json"
bash envoy/compose/certs.sh "$out/certs"
