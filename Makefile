# fractal build. Outputs go to build/; generated protobuf code to proto/gen/.
BUN      := node_modules/.bin/bun
PBJS     := node_modules/.bin/pbjs
PBTS     := node_modules/.bin/pbts
TARGET   := bun-linux-x64-baseline
# --bytecode: the CLI starts in ~10 ms instead of ~30 ms (measured by bench-exec).
BUILD    := build

TS_SRC   := $(shell find proto agent host -name '*.ts' -not -path 'proto/gen/*' 2>/dev/null)

.PHONY: all build proto deps test run typecheck bench-exec clean

all: build

deps: node_modules/.installed

node_modules/.installed: package.json package-lock.json
	npm install --no-audit --no-fund
	touch $@

# Generated code is reproducible: same .proto and protobufjs-cli, same bytes.
proto: proto/gen/fractal.js proto/gen/fractal.d.ts

proto/gen/fractal.js: proto/fractal.proto node_modules/.installed
	mkdir -p proto/gen
	$(PBJS) -t static-module -w es6 --force-number -o $@ $<

proto/gen/fractal.d.ts: proto/gen/fractal.js
	$(PBTS) --no-comments -o $@ $<

build: $(BUILD)/fractal-agent $(BUILD)/fractal-host

$(BUILD)/fractal-agent: $(TS_SRC) proto/gen/fractal.js Makefile
	mkdir -p $(BUILD)
	$(BUN) build --compile --bytecode --target=$(TARGET) agent/main.ts --outfile $@

$(BUILD)/fractal-host: $(TS_SRC) proto/gen/fractal.js Makefile
	mkdir -p $(BUILD)
	$(BUN) build --compile --bytecode --target=$(TARGET) host/cli/main.ts --outfile $@

typecheck: proto
	node_modules/.bin/tsc --noEmit -p .

# The whole suite. The JSON report is what .ci/run counts from.
test: build typecheck
	node_modules/.bin/vitest run --reporter=default --reporter=json --outputFile.json=$(BUILD)/test-report.json

# The main job: start an agent on loopback and run a command through it.
run: build
	@./scripts/run-local.sh

bench-exec: build
	$(BUN) bench/exec.ts

clean:
	rm -rf $(BUILD) proto/gen
