# Weir: the two commands are `make build` (then `weir validate -f DIR`) and `make test`.

CARGO ?= cargo
FUZZ_SECONDS ?= 300
CORPUS := ../shared/corpus/istio

.PHONY: all build release release-pgo bench-proxy-pgo test interop lint fmt bench bench-e2e bench-proxy bench-instructions bench-anatomy fuzz fuzz-seed clean

all: build

build:
	$(CARGO) build --workspace

release:
	$(CARGO) build --release -p weir

## release-pgo: target/pgo/weir, the release build optimised with a profile of its own data path
## (scripts/release-pgo.sh: instrumented build, training run, optimised build; installs llvm-profdata)
release-pgo:
	bash scripts/release-pgo.sh

## test: every unit, corpus, rule-table, golden and CLI test (needs ../shared/corpus/istio beside the repo),
## then the interop tests (interop/run.sh installs grpcio into target/interop-venv itself);
## scripts/test-deps.sh installs iproute2, iptables and curl when missing (the sidecar capture test runs as root)
test:
	@test -d $(CORPUS) || { echo "make test: $(CORPUS) not found (the Istio corpus must sit beside the repository)"; exit 2; }
	bash scripts/test-deps.sh
	$(CARGO) test --workspace --all-targets
	$(CARGO) test --workspace --doc
	bash interop/run.sh

## interop: only the tests with clients nobody here wrote (gRPC proxyless from PyPI's grpcio)
interop:
	bash interop/run.sh

## lint: formatting and clippy exactly as CI runs them
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## bench: criterion benchmarks (validation, model), the model at scale, then the end-to-end `weir validate` harness
bench:
	$(CARGO) bench -p weir-api --bench validate
	$(CARGO) bench -p weir-model --bench model
	$(CARGO) bench -p weir-xds --bench generate
	$(CARGO) run --release -p weir-model --example model_scale
	$(MAKE) bench-e2e

bench-e2e: release
	$(CARGO) run --release -p weir-xds --example ads_load -- --proxies 100 --services 100 --namespaces 10
	$(CARGO) run --release -p weir-xds --example ads_load -- --proxies 100 --services 100 --namespaces 100
	$(CARGO) run --release -p weir-xds --example ads_load -- --proxies 1000 --services 100 --namespaces 10
	$(CARGO) build --release -p weir-api --example gen_config
	python3 bench/validate.py --weir target/release/weir --gen target/release/examples/gen_config
	$(MAKE) bench-proxy

## bench-proxy: the same load direct, through nginx, HAProxy and Weir (installs nginx/haproxy from Debian if missing);
## more options of bench.py in BENCH_PROXY_ARGS, as "--rounds 5 --tcp"
BENCH_PROXY_ARGS ?=
bench-proxy: release
	$(CARGO) build --release -p weir --example loadgen
	bench/proxy/setup.sh
	python3 bench/proxy/bench.py $(BENCH_PROXY_ARGS)

## bench-proxy-pgo: the same, measuring the profile-guided build with the plain release build beside it
bench-proxy-pgo: release release-pgo
	bench/proxy/setup.sh
	python3 bench/proxy/bench.py --binary target/pgo/weir --baseline target/release/weir $(BENCH_PROXY_ARGS)

## bench-instructions: instructions per request of the proxy under callgrind (repeatable, unlike CPU seconds here)
bench-instructions: release
	$(CARGO) build --release -p weir --example loadgen
	bench/proxy/setup.sh
	python3 bench/proxy/instructions.py

## bench-anatomy: per request at 1,000 req/s — user and system CPU, context switches, faults, syscalls, time each proxy holds a message — for nginx, HAProxy and Weir
bench-anatomy: release
	$(CARGO) build --release -p weir --example loadgen
	bench/proxy/setup.sh
	python3 bench/proxy/anatomy.py

## fuzz: run a fuzz target (needs `cargo install cargo-fuzz`): FUZZ_TARGET=parse_and_validate, model, xds, proxy, http1_response, http1_request or path
FUZZ_TARGET ?= parse_and_validate
fuzz: fuzz-seed
	cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $(FUZZ_TARGET) corpus/$(FUZZ_TARGET) -- \
		-max_total_time=$(FUZZ_SECONDS) -max_len=8192

fuzz-seed:
	@mkdir -p fuzz/corpus/parse_and_validate fuzz/corpus/model fuzz/corpus/xds fuzz/corpus/proxy fuzz/corpus/http1_response fuzz/corpus/http1_request fuzz/corpus/path
	@i=0; for f in $$(find $(CORPUS) crates/weir-api/tests/rules -name '*.yaml'); do \
		cp "$$f" fuzz/corpus/parse_and_validate/seed-$$i.yaml; i=$$((i+1)); done
	@i=0; for f in $$(find crates/weir-model/tests/fixtures $(CORPUS)/bookinfo-networking $(CORPUS)/tests-testdata-config -name '*.yaml'); do \
		cp "$$f" fuzz/corpus/model/seed-$$i.yaml; i=$$((i+1)); done
	@i=0; for f in $$(find crates/weir-xds/tests/scenarios $(CORPUS)/bookinfo-networking $(CORPUS)/samples-istio-kinds -name '*.yaml'); do \
		cp "$$f" fuzz/corpus/xds/seed-$$i.yaml; i=$$((i+1)); done
	@$(CARGO) run -q -p weir-proxy --example fuzz_seeds -- fuzz/corpus/proxy
	@printf '\020HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello' > fuzz/corpus/http1_response/length
	@printf '\006HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n0\r\ngrpc-status: 0\r\n\r\n' > fuzz/corpus/http1_response/chunked
	@printf '\001HTTP/1.0 200 OK\r\nconnection: keep-alive\r\n\r\nuntil close' > fuzz/corpus/http1_response/close
	@printf '\040HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n' > fuzz/corpus/http1_response/interim
	@printf '\100GET /a?b=c HTTP/1.1\r\nhost: svc\r\n\r\nHEAD / HTTP/1.1\r\nhost: svc\r\nconnection: close\r\n\r\n' > fuzz/corpus/http1_request/pipelined
	@printf '\012GET / HTTP/1.1\r\nhost: svc\r\ntrailer: x-sum\r\nx-sum: 1\r\ntransfer-encoding: gzip\r\n\r\n' > fuzz/corpus/http1_request/coded
	@printf '\005POST / HTTP/1.1\r\nhost: svc\r\ncontent-length: 5\r\n\r\nhello' > fuzz/corpus/http1_request/body
	@printf '\017/a/./b/../c//d/%%2e%%2E/%%41?q=/../' > fuzz/corpus/path/dots
	@printf '\013/a%%2Fb%%5c..%%2fc%%%%30%%30' > fuzz/corpus/path/escapes
	@printf '\001/a\\\\b/..;/%%c0%%ae/~' > fuzz/corpus/path/backslashes

clean:
	$(CARGO) clean
