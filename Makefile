# porttrig: build, test and demo. `make demo` and `make test` do all set-up
# themselves (scripts/setup.sh installs what a fresh Debian machine lacks).
ARCH_TRIPLET := $(shell gcc -dumpmachine 2>/dev/null || echo x86_64-linux-gnu)
CLANG ?= clang
BPF_CFLAGS := -O2 -g -Wall -Werror -target bpf -mcpu=v3 -I/usr/include/$(ARCH_TRIPLET) -Ibpf

# The data path, built twice from one source: with the conntrack check
# (kfuncs bpf_skb_ct_lookup/bpf_ct_release), and without it (-DPT_NO_CONNTRACK)
# for kernels where those kfuncs are not available; the daemon picks one
# (bpf/conntrack.h, src/bpf/conntrack.ts).
BPF_OBJ := build/porttrig.bpf.o
BPF_NOCT_OBJ := build/porttrig-noct.bpf.o
BPF_SRC := bpf/porttrig.bpf.c $(wildcard bpf/*.h) $(wildcard bpf/ipv6/*.h)
# The empty TC program that `make bench` measures the data path against.
BENCH_OBJ := build/bench-empty.bpf.o
# The least a BPF forwarder does (FIB lookup, TTL, MACs, redirect), as TC and
# XDP programs: the floors that `make bench-e2e` measures porttrig against.
BENCH_FLOOR_OBJ := build/bench-floor.bpf.o
# The paced senders and TCP sink of `make bench-e2e`.
BENCH_TRAFFIC := build/e2e-traffic
# A test fixture: tags a LAN host's packets with a VLAN (test/e2e/vlan.test.ts).
TEST_VLAN_OBJ := build/test-vlan-tag.bpf.o
TS_SRC := $(shell find src test bench scripts -name '*.ts' 2>/dev/null)

.PHONY: all setup build deb lintian check test test-unit fuzz bench bench-e2e bench-scale demo clean vagrant-test

all: build

setup: .setup-stamp
.setup-stamp: scripts/setup.sh package.json package-lock.json
	bash scripts/setup.sh
	touch $@

$(BPF_OBJ): $(BPF_SRC)
	@mkdir -p build
	$(CLANG) $(BPF_CFLAGS) -c bpf/porttrig.bpf.c -o $@

$(BPF_NOCT_OBJ): $(BPF_SRC)
	@mkdir -p build
	$(CLANG) $(BPF_CFLAGS) -DPT_NO_CONNTRACK -c bpf/porttrig.bpf.c -o $@

dist/.stamp: $(TS_SRC) tsconfig.json package.json
	npx tsc -p tsconfig.json
	chmod +x dist/src/cli/main.js
	touch $@

# The bench's BPF programs (bench/NAME.bpf.c) and the tests' fixtures (test/e2e/NAME.bpf.c).
build/bench-%.bpf.o: bench/%.bpf.c bpf/csum.h
	@mkdir -p build
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

build/test-%.bpf.o: test/e2e/%.bpf.c
	@mkdir -p build
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

$(BENCH_TRAFFIC): bench/e2e-traffic.c
	@mkdir -p build
	gcc -O2 -Wall -Wextra -Werror -o $@ $<

build: setup $(BPF_OBJ) $(BPF_NOCT_OBJ) $(BENCH_OBJ) $(BENCH_FLOOR_OBJ) $(TEST_VLAN_OBJ) $(BENCH_TRAFFIC) dist/.stamp

## The Debian package build/porttrig_<version>_<arch>.deb (scripts/build-deb.sh;
## PT_DEB_VERSION overrides the version).
deb: build
	bash scripts/build-deb.sh

## lintian on the package: errors and warnings fail; each tag kept is explained in packaging/deb/lintian-overrides.
lintian: deb
	lintian --fail-on error,warning --display-info build/porttrig_$$(node -p "require('./package.json').version")_$$(dpkg --print-architecture).deb

## All the tests: everything on this machine, then the VM tests (what CI runs).
check: test vagrant-test

## Every test on this machine: unit, data path (BPF_PROG_TEST_RUN) and end to end (netns).
test: build
	node --test --test-concurrency=1 $$(find dist/test -name '*.test.js' | sort)

## Only the tests that need neither root nor BPF.
test-unit: build
	node --test $$(find dist/test/config dist/test/core dist/test/rules -name '*.test.js' 2>/dev/null | sort)

## The differential test (data path against its model) for longer: fresh random seeds of
## 100000 packets each for PT_DIFF_TIME seconds (default 600). Knobs: test/bpf/differential.test.ts.
fuzz: build
	PT_DIFF_SEEDS=$${PT_DIFF_SEEDS:-random} PT_DIFF_PACKETS=$${PT_DIFF_PACKETS:-100000} PT_DIFF_TIME=$${PT_DIFF_TIME:-600} \
		node --test dist/test/bpf/differential.test.js

## ns/packet of each data path path, next to an empty TC program (root).
bench: build $(BENCH_OBJ)
	node dist/bench/datapath.js

## Gateway CPU per forwarded packet, end to end in namespaces: plain forwarding,
## nftables DNAT, porttrig; UDP and TCP, 1 and 10 000 flows (root; ~5 min).
bench-e2e: build
	node dist/bench/e2e.js

## The control plane at full tables (1 048 576 sessions and flows): sweep CPU,
## control and scrape latency while sweeping, mass expiry, RSS (root; ~4 min).
bench-scale: build
	node dist/bench/scale.js

demo: build
	bash scripts/demo.sh

## VM integration tests (vagrant/): client, gateway and server VMs under libvirt.
vagrant-test: build
	bash vagrant/run.sh

clean:
	rm -rf build dist .setup-stamp
