# dsgate — the two commands that matter: `make demo` and `make test`.
SHELL := /bin/bash
GO    ?= go
BIN   := bin/gateway
DEMO_CKPT ?= demo-ckpt
DSGATE_CACHE ?= $(HOME)/.cache/dsgate
export DSGATE_CACHE
# -race on 2 cores is slow; give the whole suite room but never forever.
TEST_TIMEOUT ?= 45m

.PHONY: all build demo test test-arm64 deps vet staticcheck fmt-check bench wasm-examples cann-emu clean

all: build

build:
	$(GO) build -o $(BIN) ./gateway

## demo: build, fetch the tokenizer, make a demo checkpoint, serve http://127.0.0.1:8080
demo: build
	scripts/fetch-tokenizer.sh >/dev/null
	@if [ ! -f $(DEMO_CKPT)/config.json ]; then $(BIN) init-demo $(DEMO_CKPT) --tokenizer "$(DSGATE_CACHE)/tokenizer/deepseek_v3"; fi
	$(BIN) serve --ckpt-path $(DEMO_CKPT) --addr 127.0.0.1:8080

## test: install what the tests need, then vet, staticcheck, gofmt and the race-enabled suite
## (x86-64 here), then the CPU-side packages again as linux/arm64 under qemu (test-arm64)
test: deps fmt-check vet staticcheck wasm-examples cann-emu
	$(GO) test -race -timeout $(TEST_TIMEOUT) ./...
	$(MAKE) test-arm64

## test-arm64: the CPU-side packages' tests built for arm64 (Kunpeng hosts), run under qemu
test-arm64:
	GO=$(GO) scripts/test-arm64.sh

deps:
	scripts/test-deps.sh

fmt-check:
	@bad=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './tests/node/*')); \
	if [ -n "$$bad" ]; then echo "gofmt would change:"; echo "$$bad"; exit 1; fi

vet:
	$(GO) vet ./...

staticcheck:
	$(GO) tool staticcheck ./...

## bench: the Go benchmarks whose figures the issues ask for
bench:
	$(GO) test -run '^$$' -bench . -benchtime 3x ./...

## wasm-examples: build the example extension modules (Go guest SDK, GOOS=wasip1)
wasm-examples:
	@if [ -f extensions/examples/Makefile ]; then $(MAKE) -C extensions/examples; fi

## cann-emu: build the CPU emulation of the CANN libraries the ascend backend loads
cann-emu:
	@if [ -f ascend/emu/Makefile ]; then $(MAKE) -C ascend/emu; fi

clean:
	rm -rf bin
