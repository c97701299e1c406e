#!/usr/bin/env python3
"""Envoy configurations for `make bench`, derived from one rendered gateway config so that every
configuration shares the listener, the upstream cluster and the Envoy binary.

usage: configs.py GATEWAY_YAML OUTDIR WASM_DIR DEMO_JWKS_JSON BENCH_KEYS_DIR

Writes OUTDIR/<name>.yaml for:
  c0  bare Envoy (router only)
  c1  Envoy's native jwt_authn (demo JWKS) + local_ratelimit
  c2  Portcullis authn + ratelimit, both instances (per IP and per identity), as rendered
  c3  the full Portcullis chain (as rendered)
  c4  five no-op wasm filters: the wasm floor under c3 (as many filters, sharing VMs as c3's do)
  c5  a Lua filter masking the same response fields with patterns
  c6  three no-op wasm filters: the wasm floor under c2 (VMs shared as c2's are)
  c7  c4 with all five filters in one VM (same vm_id): what sharing a VM saves per request
  c8  c3 from the one-module build (portcullis.wasm, one vm_id): what `render --one-module` writes
and, per algorithm (verification cost, every request verified: no cache on either side),
  v-<alg>-wasm / v-<alg>-native, plus v-direct (no filter) — all answering from the router
  with a direct response, so the upstream is out of the picture.
"""
import copy
import json
import sys

import yaml

gateway_path, outdir, wasm_dir, demo_jwks_path, keys_dir = sys.argv[1:6]
base = yaml.safe_load(open(gateway_path))
hcm = base["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
chain = {f["name"]: f for f in hcm["http_filters"]}
router = chain["envoy.filters.http.router"]
demo_jwks = open(demo_jwks_path).read()
ISSUER, AUDIENCE = "https://idp.demo.portcullis.local", "portcullis-demo-api"


def with_filters(filters, direct=False):
    cfg = copy.deepcopy(base)
    h = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    h["http_filters"] = filters + [router]
    if direct:
        route = h["route_config"]["virtual_hosts"][0]["routes"][0]
        route.pop("route", None)
        route["direct_response"] = {"status": 200, "body": {"inline_string": "ok"}}
    return cfg


def jwt_authn(jwks_json, alg_provider="demo", cache=False):
    provider = {
        "issuer": ISSUER,
        "audiences": [AUDIENCE],
        "local_jwks": {"inline_string": jwks_json},
        "forward": False,
    }
    if cache:
        provider["jwt_cache_config"] = {"jwt_cache_size": 1000}
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {alg_provider: provider},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": alg_provider}}],
        },
    }


local_ratelimit = {
    "name": "envoy.filters.http.local_ratelimit",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
        "stat_prefix": "bench_rl",
        "token_bucket": {"max_tokens": 1000000000, "tokens_per_fill": 1000000000, "fill_interval": "1s"},
        "filter_enabled": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}},
        "filter_enforced": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}},
    },
}


def noop(i, vm_id=None):
    return {
        "name": f"bench.noop{i}",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": f"noop{i}", "root_id": f"noop{i}",
                "vm_config": {"vm_id": vm_id or f"noop{i}", "runtime": "envoy.wasm.runtime.v8",
                              "code": {"local": {"filename": f"{wasm_dir}/noop.wasm"}}},
            },
        },
    }


# Comparable masking in Lua: the same fields the pii policy masks, by pattern over the body.
LUA_MASK = r'''
function envoy_on_request(handle)
  handle:headers():replace("accept-encoding", "identity")
end
function envoy_on_response(handle)
  local body = handle:body()
  if body == nil then return end
  local s = body:getBytes(0, body:length())
  s = s:gsub('("ssn":")%d%d%d%-%d%d%-(%d%d%d%d)"', '%1***-**-%2"')
  s = s:gsub('("card_number":")%d+(%d%d%d%d)"', '%1************%2"')
  s = s:gsub('("email":")[^"@]+(@[^"]+)"', '%1***%2"')
  s = s:gsub('("phone":")(%+%d%d%d%d)%d+"', '%1%2XXXXXXX"')
  s = s:gsub('("iban":")[^"]+"', '%1[REDACTED]"')
  s = s:gsub('[%w%.%%+%-]+@[%w%-]+%.[%a%.]+', '[REDACTED]')
  s = s:gsub('%d%d%d%-%d%d%-%d%d%d%d', '[SSN]')
  body:setBytes(s)
  handle:headers():remove("content-length")
end
'''
lua = {
    "name": "envoy.filters.http.lua",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
        "default_source_code": {"inline_string": LUA_MASK},
    },
}

# The floors have exactly as many wasm filters as the configuration they sit under, so "what
# the filters do" is read as a difference within one run, apart from what a VM costs at all.
wasm_filters = [f for f in hcm["http_filters"] if "wasm" in f["typed_config"]["@type"].lower()]
identity_chain = [chain["portcullis.ratelimit_ip"], chain["portcullis.authn"], chain["portcullis.ratelimit"]]


def mirror(f):
    """The floor shares VMs as the chain does (both ratelimit instances run in one VM)."""
    return "noop-" + f["typed_config"]["config"]["vm_config"]["vm_id"]


def one_module(cfg):
    """Every Portcullis filter loads portcullis.wasm into one VM (as `render --one-module`)."""
    cfg = copy.deepcopy(cfg)
    h = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    for f in h["http_filters"]:
        vm = f.get("typed_config", {}).get("config", {}).get("vm_config")
        if vm and vm["vm_id"].startswith("portcullis."):
            vm["vm_id"] = "portcullis"
            vm["code"]["local"]["filename"] = f"{wasm_dir}/portcullis.wasm"
    return cfg


configs = {
    "c0": with_filters([]),
    "c1": with_filters([jwt_authn(demo_jwks, cache=True), local_ratelimit]),
    "c2": with_filters(identity_chain),
    "c3": copy.deepcopy(base),
    "c4": with_filters([noop(i, mirror(f)) for i, f in enumerate(wasm_filters)]),
    "c5": with_filters([lua]),
    "c6": with_filters([noop(i, mirror(f)) for i, f in enumerate(identity_chain)]),
    # C4 with one VM per worker for all five (same vm_id and code; Envoy shares the VM).
    "c7": with_filters([noop(i, "noop") for i in range(len(wasm_filters))]),
    "c8": one_module(base),
    "v-direct": with_filters([], direct=True),
    "c2-direct": with_filters([chain["portcullis.authn"], chain["portcullis.ratelimit"]], direct=True),
}

# Per-algorithm verification: our authn with only that key and no cache, and native jwt_authn.
bench_jwks = json.load(open(f"{keys_dir}/jwks.json"))
authn_cfg = chain["portcullis.authn"]["typed_config"]["config"]["configuration"]
for key in bench_jwks["keys"]:
    alg = key["alg"]
    one = json.dumps({"keys": [key]})
    wasm = copy.deepcopy(chain["portcullis.authn"])
    conf = wasm["typed_config"]["config"]
    if conf["configuration"].get("@type", "").endswith("StringValue"):
        doc = json.loads(conf["configuration"]["value"])
    else:
        doc = copy.deepcopy(conf["configuration"]["value"])
    doc["providers"] = [{"name": "demo", "issuer": ISSUER, "audiences": [AUDIENCE], "algorithms": [alg],
                         "jwks": {"keys": [key]}}]
    doc["cache"] = {"max_entries": 0}
    conf["configuration"] = {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": json.dumps(doc)}
    configs[f"v-{alg}-wasm"] = with_filters([wasm], direct=True)
    configs[f"v-{alg}-native"] = with_filters([jwt_authn(one)], direct=True)

for name, cfg in configs.items():
    with open(f"{outdir}/{name}.yaml", "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
print(" ".join(configs))
