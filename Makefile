# fractal build. Outputs go to build/; generated protobuf code to proto/gen/.
BUN      := node_modules/.bin/bun
PBJS     := node_modules/.bin/pbjs
PBTS     := node_modules/.bin/pbts
# ARCH=arm64 builds the arm64 guest (and an arm64 CLI for arm64 hosts) into
# build/arm64: Bun's linux-arm64 target, u-root cross-compiled by Go, and
# Debian's arm64 kernel, crun and busybox (initramfs/foreign-root.sh).
ARCH     ?= amd64
ifeq ($(ARCH),arm64)
TARGET   := bun-linux-arm64
BUILD    := build/arm64
GUEST_ENV := GOARCH=arm64 FOREIGN_ROOT=$(BUILD)/root
else ifeq ($(ARCH),amd64)
TARGET   := bun-linux-x64-baseline
BUILD    := build
GUEST_ENV :=
else
$(error ARCH=$(ARCH): expected amd64 or arm64)
endif
# fractal.proto has no 64-bit integers, so protobufjs never needs long.js, but
# it requires it when it can: `--external long` only made the compiled binaries
# carry long.js as a module of its own and evaluate it at every start (with
# its WebAssembly module). The bundle tsconfig maps "long" to a null export.
NO_LONG   := --tsconfig-override tsconfig.bundle.json
# --bytecode: the CLI starts in ~10 ms instead of ~30 ms (measured by bench-exec).
# --splitting (ESM): what a command imports lazily is a chunk of its own, loaded
# when used; in one bundle every start paid for loading all of it (--help
# 8.3 ms against 7.0 ms, a Bun hello-world 6.2 ms).
# --compile-jit-policy: the binaries start with JavaScriptCore's tier-up
# thresholds 20 times higher, so code that runs only while starting stays in
# the interpreter; the agent goes back to the normal JIT once it listens, the
# CLI once a command has run 100 ms.
START_BUILD := --compile --bytecode --compile-jit-policy=20 $(NO_LONG)
CLI_BUILD := $(START_BUILD) --splitting --format=esm
# Bytecode layout profiles (scripts/bytecode-orders.ts, refreshed by `make
# bytecode-orders`): what a start and an exec run is laid out together at
# the front of the executable, which then reads and decodes less of itself.
AGENT_ORDER := agent/bytecode.order
CLI_ORDERS := host/cli/exec.order host/cli/help.order
ORDERED = $(addprefix --bytecode-order=,$(1))
# The entry points (the hash worker is a Worker both start).
AGENT_ENTRY := agent/main.ts oci/hash-worker.ts
CLI_ENTRY := host/cli/main.ts oci/hash-worker.ts

TS_SRC   := $(shell find proto agent host oci -name '*.ts' -not -path 'proto/gen/*' -not -path 'host/containerd/gen/*' -not -path 'host/api/gen/*' 2>/dev/null) tsconfig.bundle.json proto/long-absent.cjs
# The web console, bundled into fractal-host (scripts/console-bundle.ts).
CONSOLE_GEN := host/api/gen/console.ts
# containerd's API, generated from the .proto files of the Go modules pinned in
# host/containerd/protos/go.mod (fetched through the Go module proxy).
CTRD_GEN := host/containerd/gen/containerd.js
CTRD_PROTOS := host/containerd/protos

# Kernel modules the guest needs; modules.ts adds their dependencies from the
# kernel's own metadata. KERNEL=bzImage MODULES=lib/modules/VER use your own.
# The agent image's devices and file system first: the supervisor mounts it as
# soon as those are in, while the rest load. x86 guests get the image on
# virtio-pmem; their virtio disk driver (images of other sizes) comes after
# the PCI driver, where it holds up no mount. arm64 guests always use the disk.
ifeq ($(ARCH),arm64)
IMAGE_KMODS := virtio_blk erofs virtio_pci
else
IMAGE_KMODS := erofs virtio_pmem nd_pmem virtio_pci virtio_blk
endif
KMODS    := $(IMAGE_KMODS) virtio_net virtio_console 9p 9pnet_virtio virtiofs overlay \
            vsock vmw_vsock_virtio_transport vsock_loopback
# Wired NIC drivers for hardware (and QEMU's e1000 standing in for it): the
# one list. Loaded after the agent listens, so VMs do not wait for them.
NIC_KMODS := e1000 e1000e igb ixgbe r8169 tg3 virtio_net

.PHONY: bytecode-orders netboot build-arm64 build-darwin all build proto deps host-deps test-deps test test-containerd run typecheck bench-exec bench-boot bench-ns bench-containers bench-reliability bench-peers bench-containerd bench-layers bench-api bench clean FORCE

all: build

deps: node_modules/.installed

node_modules/.installed: package.json package-lock.json
	npm install --no-audit --no-fund
	touch $@

# Generated code is reproducible: same .proto and protobufjs-cli, same bytes.
proto: proto/gen/fractal.js proto/gen/fractal.d.ts $(CTRD_GEN) $(CONSOLE_GEN)

$(CONSOLE_GEN): scripts/console-bundle.ts $(wildcard host/console/*) node_modules/.installed
	$(BUN) scripts/console-bundle.ts

$(CTRD_GEN): $(CTRD_PROTOS)/gen.sh $(CTRD_PROTOS)/go.mod $(CTRD_PROTOS)/go.sum $(CTRD_PROTOS)/ttrpc.proto node_modules/.installed
	$(CTRD_PROTOS)/gen.sh host/containerd/gen $(BUILD)/containerd-proto $(PBJS) $(PBTS)

# Only what the frame codec calls (create, encode, decode): the CLI evaluates
# this module on every start, and the verify/convert/delimited functions
# nobody calls were half of it.
proto/gen/fractal.js: proto/fractal.proto node_modules/.installed
	mkdir -p proto/gen
	$(PBJS) -t static-module -w es6 --force-number --no-verify --no-convert --no-delimited --no-typeurl -o $@ $<

proto/gen/fractal.d.ts: proto/gen/fractal.js
	$(PBTS) --no-comments -o $@ $<

build: $(BUILD)/fractal-agent $(BUILD)/fractal-host $(BUILD)/containerd-shim-fractal-v1 $(BUILD)/kernel/vmlinuz $(BUILD)/initramfs.cpio $(BUILD)/agent.erofs $(BUILD)/images/index.json
# x86 only: QEMU boots arm64's Image as it is (no bzImage, no PVH), and
# measured boot and bench-boot's baseline are x86's.
ifeq ($(ARCH),amd64)
build: $(BUILD)/kernel/vmlinux $(BUILD)/expected-measurements.json $(BUILD)/marker.cpio
endif

# The arm64 guest beside the host's own build (the VM tests boot both).
build-arm64:
	$(MAKE) build ARCH=arm64

# fractal-mac: the CLI for macOS hosts, Apple silicon and Intel, from Bun's
# darwin targets. On a Mac it boots the arm64 guest (make build ARCH=arm64;
# copy build/arm64 beside it) with HVF. It cannot run here.
build-darwin: build/darwin-arm64/fractal-host build/darwin-x64/fractal-host

build/darwin-%/fractal-host: $(TS_SRC) proto/gen/fractal.js $(CTRD_GEN) $(CONSOLE_GEN) $(CLI_ORDERS) Makefile
	mkdir -p $(dir $@)
	$(BUN) build $(CLI_BUILD) $(call ORDERED,$(CLI_ORDERS)) --target=bun-darwin-$* $(CLI_ENTRY) --outfile $@

# What the host needs to build and boot guests: QEMU, crun (copied into the
# initramfs with its libraries), Go for u-root. Installed only when missing.
HOST_PKGS := qemu-system-x86 crun cpio
host-deps:
	@missing=""; \
	command -v qemu-system-x86_64 >/dev/null || missing="$$missing qemu-system-x86"; \
	command -v crun >/dev/null || missing="$$missing crun"; \
	command -v cpio >/dev/null || missing="$$missing cpio"; \
	command -v mkfs.erofs >/dev/null || missing="$$missing erofs-utils"; \
	command -v passt >/dev/null || missing="$$missing passt"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	@command -v go >/dev/null || { echo "Go is needed to build u-root (https://go.dev)"; exit 1; }
	@[ "$(ARCH)" != arm64 ] || command -v qemu-system-aarch64 >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-system-arm; }

# The container tests check our image reader against images other tools
# write: umoci builds layers, skopeo converts to docker-archive and zstd,
# debootstrap makes a Debian root file system from Debian's archive. The
# attestation tests boot through OVMF with swtpm and check our TPM code with
# tpm2-tools and pesign.
test-deps: $(BUILD)/tools/crictl
	@missing=""; \
	command -v umoci >/dev/null || missing="$$missing umoci"; \
	command -v containerd >/dev/null || missing="$$missing containerd"; \
	command -v runc >/dev/null || missing="$$missing runc"; \
	command -v skopeo >/dev/null || missing="$$missing skopeo"; \
	command -v debootstrap >/dev/null || missing="$$missing debootstrap"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v swtpm >/dev/null || missing="$$missing swtpm"; \
	command -v swtpm_setup >/dev/null || missing="$$missing swtpm-tools"; \
	command -v tpm2_checkquote >/dev/null || missing="$$missing tpm2-tools"; \
	command -v pesign >/dev/null || missing="$$missing pesign"; \
	[ -f /usr/share/OVMF/OVMF_CODE_4M.fd ] || missing="$$missing ovmf"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# crictl for the CRI tests, from its Go module (no prebuilt download).
CRICTL_VERSION := v1.37.0
$(BUILD)/tools/crictl:
	mkdir -p $(BUILD)/tools
	GOBIN=$(abspath $(BUILD)/tools) go install sigs.k8s.io/cri-tools/cmd/crictl@$(CRICTL_VERSION)

# Rebuilt only when the kernel source (Debian's, or KERNEL=/MODULES=) changes.
$(BUILD)/kernel.source: FORCE
	@mkdir -p $(BUILD)
	@echo "$(KERNEL) $(MODULES)" | cmp -s - $@ || echo "$(KERNEL) $(MODULES)" > $@

$(BUILD)/kernel/vmlinuz: initramfs/kernel.sh initramfs/apt-arch.sh $(BUILD)/kernel.source | host-deps
	KERNEL="$(KERNEL)" MODULES="$(MODULES)" ARCH=$(ARCH) APT_STATE=$(BUILD)/apt initramfs/kernel.sh $(BUILD)/kernel

# A foreign guest's crun, busybox and C libraries, from Debian's packages for it.
$(BUILD)/root/usr/bin/crun: initramfs/foreign-root.sh initramfs/apt-arch.sh
	initramfs/foreign-root.sh $(ARCH) $(BUILD)/apt $(BUILD)/root crun busybox-static libc6

# The same kernel unpacked: VMs boot it at its PVH entry, skipping SeaBIOS's
# bzImage loader and the decompressor (4.5 s per boot under TCG; bench-boot).
$(BUILD)/kernel/vmlinux: $(BUILD)/kernel/vmlinuz initramfs/vmlinux.sh
	initramfs/vmlinux.sh $< $@

$(BUILD)/modules/fractal.order: $(BUILD)/kernel/vmlinuz initramfs/modules.ts Makefile
	$(BUN) initramfs/modules.ts $(BUILD)/kernel/modules $(BUILD)/modules $(KMODS) --later $(NIC_KMODS)

# The default image store: busybox from Debian's busybox-static as an OCI
# layout (host/image/busybox.ts), so containers need no registry.
$(BUILD)/busybox/bin/busybox:
	rm -rf $(BUILD)/busybox && mkdir -p $(BUILD)/busybox
	cd $(BUILD)/busybox && apt-get download -o APT::Sandbox::User=root -qq busybox-static || { apt-get update -qq && apt-get download -o APT::Sandbox::User=root -qq busybox-static; }
	dpkg-deb -x $(BUILD)/busybox/busybox-static_*.deb $(BUILD)/busybox
	rm -f $(BUILD)/busybox/*.deb

ifeq ($(ARCH),arm64)
# arm64's busybox; its applet list from the host's build of the same package.
$(BUILD)/images/index.json: $(BUILD)/root/usr/bin/crun build/busybox/bin/busybox host/image/busybox.ts host/image/oci-layout.ts
	rm -rf $(BUILD)/images.tmp
	$(BUN) host/image/busybox.ts $(BUILD)/root/bin/busybox $(BUILD)/images.tmp arm64 build/busybox/bin/busybox
	rm -rf $(BUILD)/images && mv $(BUILD)/images.tmp $(BUILD)/images

build/busybox/bin/busybox:
	$(MAKE) build/busybox/bin/busybox ARCH=amd64
else
$(BUILD)/images/index.json: $(BUILD)/busybox/bin/busybox host/image/busybox.ts host/image/oci-layout.ts
	rm -rf $(BUILD)/images.tmp
	$(BUN) host/image/busybox.ts $(BUILD)/busybox/bin/busybox $(BUILD)/images.tmp
	rm -rf $(BUILD)/images && mv $(BUILD)/images.tmp $(BUILD)/images
endif

# A minimal initramfs whose init only prints a marker: bench-boot's baseline.
$(BUILD)/marker.cpio: initramfs/marker.sh initramfs/marker/main.go initramfs/go.mod | host-deps
	initramfs/marker.sh $@

# AUTHORIZED_KEYS=FILE (and TLS_CERT=, TLS_KEY=) bake keys into the image;
# without them `boot` hands the guest the user's key on the command line.
# Rebuilt when the choice of files changes, as for the kernel.
$(BUILD)/initramfs.keys: FORCE
	@mkdir -p $(BUILD)
	@echo "$(AUTHORIZED_KEYS) $(TLS_CERT) $(TLS_KEY)" | cmp -s - $@ || echo "$(AUTHORIZED_KEYS) $(TLS_CERT) $(TLS_KEY)" > $@

# Two ways to carry the agent, from one u-root build: VMs boot
# initramfs-lite.cpio with the agent on a read-only erofs disk (agent.erofs:
# the kernel unpacks 30 MB instead of 143 at every boot, and guest RAM holds
# no copy of the binary); hardware, network boot and measured boot take the
# self-contained initramfs.cpio.
$(BUILD)/initramfs-lite.cpio: $(BUILD)/fractal-agent $(BUILD)/modules/fractal.order initramfs/build.sh initramfs/needed-libs.sh initramfs/go.mod initramfs/go.sum $(wildcard initramfs/nshelper/*.go) $(BUILD)/initramfs.keys $(AUTHORIZED_KEYS) $(TLS_CERT) $(TLS_KEY) $(if $(GUEST_ENV),$(BUILD)/root/usr/bin/crun) | host-deps
	$(GUEST_ENV) AGENT_OUTSIDE=1 AUTHORIZED_KEYS="$(AUTHORIZED_KEYS)" TLS_CERT="$(TLS_CERT)" TLS_KEY="$(TLS_KEY)" initramfs/build.sh $@ $(BUILD)/fractal-agent $(BUILD)/modules

$(BUILD)/initramfs.cpio: $(BUILD)/initramfs-lite.cpio $(BUILD)/fractal-agent initramfs/append-agent.sh
	initramfs/append-agent.sh $< $(BUILD)/fractal-agent $@

$(BUILD)/agent.erofs: $(BUILD)/fractal-agent initramfs/agent-image.sh | host-deps
	initramfs/agent-image.sh $(BUILD)/fractal-agent $@

# What attestation expects a boot of the kernel and initramfs just built to
# measure (docs/attestation.md): digests only, so two builds of one commit
# give the same file.
$(BUILD)/expected-measurements.json: $(BUILD)/kernel/vmlinuz $(BUILD)/initramfs.cpio scripts/expected-measurements.ts host/attest/expected.ts host/attest/authenticode.ts
	$(BUN) scripts/expected-measurements.ts $(BUILD)/kernel/vmlinuz $(BUILD)/initramfs.cpio $@

# bench-peers' guest: the same initramfs plus dropbear (Debian's
# dropbear-bin) and u-root's cpud (built from the peer's source in
# ../shared/peers, never copied here), with 9pnet_fd, the 9p transport cpud
# mounts the cpu client's namespace with; fractal, ssh and cpu are measured
# against one VM.
CPU_SRC ?= ../shared/peers/u-root-cpu
$(BUILD)/peers/cpud:
	@[ -d "$(CPU_SRC)" ] || { echo "bench-peers builds u-root's cpu from $(CPU_SRC) (set CPU_SRC=)"; exit 1; }
	mkdir -p $(BUILD)/peers
	cd $(CPU_SRC) && CGO_ENABLED=0 go build -o $(abspath $(BUILD)/peers)/ ./cmds/cpud ./cmds/cpu

$(BUILD)/peers/modules/fractal.order: $(BUILD)/kernel/vmlinuz initramfs/modules.ts Makefile
	$(BUN) initramfs/modules.ts $(BUILD)/kernel/modules $(BUILD)/peers/modules $(KMODS) 9pnet_fd --later $(NIC_KMODS)

$(BUILD)/peers.cpio: $(BUILD)/initramfs.cpio $(BUILD)/peers/cpud $(BUILD)/peers/modules/fractal.order
	@command -v dropbear >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dropbear-bin; }
	EXTRA_FILES="$$(command -v dropbear):bin/dropbear $(abspath $(BUILD)/peers/cpud):bin/cpud" initramfs/build.sh $@ $(BUILD)/fractal-agent $(BUILD)/peers/modules

$(BUILD)/fractal-agent: $(TS_SRC) proto/gen/fractal.js $(AGENT_ORDER) Makefile
	mkdir -p $(BUILD)
	$(BUN) build $(START_BUILD) $(call ORDERED,$(AGENT_ORDER)) --target=$(TARGET) $(AGENT_ENTRY) --outfile $@

$(BUILD)/fractal-host: $(TS_SRC) proto/gen/fractal.js $(CTRD_GEN) $(CONSOLE_GEN) $(CLI_ORDERS) Makefile
	mkdir -p $(BUILD)
	$(BUN) build $(CLI_BUILD) $(call ORDERED,$(CLI_ORDERS)) --target=$(TARGET) $(CLI_ENTRY) --outfile $@

# The profiles are recorded from binaries built without any, on this host:
# the agent started on loopback, two execs, a third on a kept ticket, --help.
bytecode-orders: $(TS_SRC) proto/gen/fractal.js $(CTRD_GEN) $(CONSOLE_GEN)
	mkdir -p $(BUILD)/unordered
	$(BUN) build $(START_BUILD) $(AGENT_ENTRY) --outfile $(BUILD)/unordered/fractal-agent
	$(BUN) build $(CLI_BUILD) $(CLI_ENTRY) --outfile $(BUILD)/unordered/fractal-host
	$(BUN) scripts/bytecode-orders.ts $(BUILD)/unordered/fractal-agent $(BUILD)/unordered/fractal-host

# containerd's runtime v2 shim for runtime_type io.containerd.fractal.v1
# (containerd finds it on its PATH by this name).
$(BUILD)/containerd-shim-fractal-v1: $(TS_SRC) proto/gen/fractal.js $(CTRD_GEN) Makefile
	mkdir -p $(BUILD)
	$(BUN) build --compile --bytecode $(NO_LONG) --target=$(TARGET) host/containerd/shim/main.ts --outfile $@

typecheck: proto
	node_modules/.bin/tsc --noEmit -p .
	node_modules/.bin/tsc --noEmit -p host/console

# The whole suite. The JSON report is what .ci/run counts from.
test: build build-arm64 typecheck test-deps
	node_modules/.bin/vitest run --reporter=default --reporter=json --outputFile.json=$(BUILD)/test-report.json

# fractal under a containerd of the tests' own: ctr, crictl, faults.
test-containerd: build test-deps
	node_modules/.bin/vitest run test/containerd

# Network boot (docs/hardware.md): the iPXE script beside the kernel and
# initramfs in build/netboot, for any HTTP server; NETBOOT_FLAGS= takes
# netboot-serve's flags (--agent-listen, --authorize, --append ...).
netboot: build
	$(BUILD)/fractal-host netboot-serve --write $(BUILD)/netboot $(NETBOOT_FLAGS)

# The main job: start an agent on loopback and run a command through it.
run: build
	@./scripts/run-local.sh

bench-exec: build
	$(BUN) bench/exec.ts

bench-boot: build
	$(BUN) bench/boot.ts

bench-ns: build
	$(BUN) bench/ns.ts

bench-containers: build $(BUILD)/baselines/hello-idle $(BUILD)/baselines/runtime-floor
	$(BUN) bench/containers.ts

# exec through the REST API against the client library, and 100 at once.
bench-api: build
	$(BUN) bench/api.ts

# layer add of a 3-layer image into a running container against run of it.
bench-layers: build
	$(BUN) bench/layers.ts

# fractal as containerd's runtime against runc, under a containerd of its own.
bench-containerd: build test-deps
	$(BUN) bench/containerd.ts

# Issue 6's long runs: 1M fuzzed frames, 20k execs, 1 GiB per link, agent kills.
bench-reliability: build
	$(BUN) bench/reliability.ts

# Bun programs the benches run beside the agent as its floors and baselines
# (an echo, a hello-world, the agent's runtime features), built as the agent is.
$(BUILD)/baselines/%: bench/%.ts
	mkdir -p $(dir $@)
	$(BUN) build --compile --bytecode --target=$(TARGET) $< --outfile $@

# The guest's own fork/exec/wait of a program, the part of a round trip that
# bench-peers leaves out of each tool's overhead (Go, as the helper is).
$(BUILD)/baselines/spawn-time: bench/spawn-time/main.go bench/spawn-time/go.mod
	mkdir -p $(dir $@)
	cd bench/spawn-time && CGO_ENABLED=0 go build -trimpath -o $(abspath $@) .

# fractal against ssh (dropbear) in one guest, over one link.
bench-peers: build $(BUILD)/peers.cpio $(BUILD)/peers/cpud $(BUILD)/baselines/echo-floor $(BUILD)/baselines/spawn-time
	$(BUN) bench/peers.ts

# Every comparison, then bench/results.{md,json,svg} from their records.
# A failing bench stops the run (its figures would be missing).
bench: bench-exec bench-boot bench-ns bench-containers bench-layers bench-api bench-peers bench-containerd bench-reliability
	$(BUN) bench/collect.ts

clean:
	rm -rf $(BUILD) proto/gen host/containerd/gen host/api/gen
