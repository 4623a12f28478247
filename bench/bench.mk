# Proxy benchmarks (see BENCHMARKS.md). Included by the top Makefile.
#
#   make bench-proxy                     # kfake, 1 GiB per run, 5 runs per mode
#   make bench-proxy BENCH_MB=128 BENCH_RUNS=5
#   make bench-proxy-real                # real Kafka (own test bed): franz-go + Kafka perf tools, direct vs proxied
#   make bench-proxy-real-franz          # franz-go driver only, on the running test bed (make kafka-up)
#   make bench-idle-conns                # the proxy's RSS with 1,000 idle client connections (BENCH_IDLE_CONNS)
#   make soak-producers                  # the proxy's RSS across 1,000,000 short-lived idempotent producers (SOAK_PRODUCERS)
#   make bench-proxy-profile             # Go hot-path benchmarks with a CPU profile
#   make bench-proxy-perf                # bench-proxy with `perf record` on the proxy process
#   make bench-mirror                    # our mirror vs MirrorMaker 2 on the real test bed (512 MiB, 8 partitions, lz4)
#   make bench-mirror BENCH_MIRROR_MB=64 BENCH_MIRROR_PERF=1   # smaller, with a perf profile of our mirror
#   make bench-mirror BENCH_MIRROR_SWITCHYARD_REV=HEAD          # our mirror from a commit, not the working tree
#   make bench-cutover                   # producer block window of a cutover, 1/10/50 sidecars under load (kfake, ≈3.5 min)
#   make bench-cutover BENCH_CUTOVER_SIDECARS=50 BENCH_CUTOVER_RUNS=20
#   make bench-cutover-real              # the same on the running test bed (make kafka-up)
#   make bench-cutover-hold              # HOLD cutovers of VerifiableProducer (retries=0) + ConsoleConsumer on the running test bed (HOLD_RUNS, HOLD_BUDGET)
#   make bench-leader-moves              # a preferred-leader election and a reassignment under VerifiableProducer (retries=0) + ConsoleConsumer behind a sidecar, running test bed (MOVES_RUNS)
#   make bench-cutover-java              # the "java defaults" scenario: 20 of them, with p50/p99 of the producers' block window (≈13 min)
#   make bench-cutover-streams           # the "streams" scenario: WordCountDemo + VerifiableProducer, STREAMS_RUNS (20) cutovers, own test bed
#
# Reports land in bench/out/ (Markdown and JSON) and on standard output.
BENCH_MB         ?= 1024
BENCH_RUNS       ?= 5
BENCH_FLAGS      ?=
BENCH_OUT        := bench/out
BENCH_TESTBED_ENV := testbed/.state/env

.PHONY: bench-proxy bench-proxy-real bench-proxy-real-franz bench-proxy-bins bench-proxy-profile bench-proxy-perf bench-mirror \
	bench-cutover bench-cutover-real bench-cutover-bin bench-cutover-hold bench-leader-moves bench-cutover-java bench-cutover-streams bench-idle-conns soak-producers

bench-proxy-bins:
	$(GO) build -o bin/switchyard ./cmd/switchyard
	$(GO) build -o bin/proxybench ./bench/cmd/proxybench
	$(GO) build -o bin/fakecluster ./bench/cmd/fakecluster
	$(GO) build -o bin/benchproxy ./bench/cmd/benchproxy

# bench-idle-conns: RSS of the proxy process with idle client connections,
# each having made one request upstream.
BENCH_IDLE_CONNS ?= 1000
bench-idle-conns: bench-proxy-bins
	@mkdir -p $(BENCH_OUT)
	bin/benchproxy -idle-conns $(BENCH_IDLE_CONNS) -out $(BENCH_OUT)/idle-conns.md

# soak-producers: RSS of the proxy process while SOAK_PRODUCERS short-lived
# idempotent producers (one InitProducerId and one Produce each) pass
# through it with the default limits; fails if the RSS ends above twice the
# idle RSS. SOAK_PROXY_ARGS adds proxy flags, e.g. --max-producer-ids=100000.
SOAK_PRODUCERS  ?= 1000000
SOAK_PROXY_ARGS ?=
soak-producers: bench-proxy-bins
	@mkdir -p $(BENCH_OUT)
	bin/benchproxy -producers $(SOAK_PRODUCERS) -proxy-args '$(SOAK_PROXY_ARGS)' -out $(BENCH_OUT)/soak-producers.md

# bench-proxy: direct vs through the proxy on a 3-broker kfake cluster run
# in its own process.
bench-proxy: bench-proxy-bins
	@mkdir -p $(BENCH_OUT)
	bin/benchproxy -mb $(BENCH_MB) -runs $(BENCH_RUNS) $(BENCH_FLAGS) \
		-out $(BENCH_OUT)/proxy-kfake.md -json $(BENCH_OUT)/proxy-kfake.json

# bench-proxy-real: on real Apache Kafka, in one run, the franz-go driver
# (bin/benchproxy -bootstrap) and Kafka's own perf tools (ProducerPerformance,
# ConsumerPerformance, EndToEndLatency), each direct and through the proxy,
# side by side in one table (bench/perf-real.sh). It starts its own test bed
# (newest supported 4.x) in bench/out/perf-real-state and always stops it;
# PERF_REAL_ENV=testbed/.state/env uses a running one instead. BENCH_MB and
# BENCH_RUNS default to 256 and 3 here; PERF_RUNS, PERF_RECORDS,
# PERF_RECORD_SIZE, E2E_MESSAGES, KAFKA_VERSION: see the script's header.
BENCH_REAL_MB   := $(if $(filter command line environment,$(origin BENCH_MB)),$(BENCH_MB),256)
BENCH_REAL_RUNS := $(if $(filter command line environment,$(origin BENCH_RUNS)),$(BENCH_RUNS),3)

bench-proxy-real:
	BENCH_MB=$(BENCH_REAL_MB) BENCH_RUNS=$(BENCH_REAL_RUNS) BENCH_FLAGS='$(BENCH_FLAGS)' bench/perf-real.sh

# bench-proxy-real-franz: only the franz-go driver, against the running test
# bed of testbed/.state/env (make kafka-up). Topics get replication 1 unless
# BENCH_FLAGS says otherwise.
bench-proxy-real-franz: bench-proxy-bins
	@test -f $(BENCH_TESTBED_ENV) || { echo "bench-proxy-real-franz: no $(BENCH_TESTBED_ENV): run make kafka-up first" >&2; exit 1; }
	@mkdir -p $(BENCH_OUT)
	. ./$(BENCH_TESTBED_ENV) && test -n "$$SWITCHYARD_TEST_SOURCE" && \
	bin/benchproxy -bootstrap "$$SWITCHYARD_TEST_SOURCE" -mb $(BENCH_MB) -runs $(BENCH_RUNS) $(BENCH_FLAGS) \
		-out $(BENCH_OUT)/proxy-real.md -json $(BENCH_OUT)/proxy-real.json

# bench-proxy-profile: the proxy's hot-path Go benchmarks, with a CPU
# profile of them and its top functions.
bench-proxy-profile:
	@mkdir -p $(BENCH_OUT)
	$(GO) test -run '^$$' -bench . -benchmem -count 1 -cpuprofile $(BENCH_OUT)/proxy-cpu.prof \
		-o $(BENCH_OUT)/proxy.test ./proxy | tee $(BENCH_OUT)/proxy-gobench.txt
	$(GO) tool pprof -top -nodecount 25 $(BENCH_OUT)/proxy.test $(BENCH_OUT)/proxy-cpu.prof | tee $(BENCH_OUT)/proxy-cpu-top.txt

# bench-proxy-perf: bench-proxy with Linux perf sampling the proxy process
# over the measured runs, then its top functions (needs perf on PATH).
bench-proxy-perf: bench-proxy-bins
	@mkdir -p $(BENCH_OUT)
	bin/benchproxy -mb $(BENCH_MB) -runs $(BENCH_RUNS) $(BENCH_FLAGS) -perf $(BENCH_OUT)/proxy.perf.data \
		-out $(BENCH_OUT)/proxy-kfake-perf.md -json $(BENCH_OUT)/proxy-kfake-perf.json
	perf report -i $(BENCH_OUT)/proxy.perf.data --no-children --sort symbol --stdio -g none 2>/dev/null \
		| grep '%' | head -30 | tee $(BENCH_OUT)/proxy-perf-top.txt
	perf report -i $(BENCH_OUT)/proxy.perf.data --children --sort symbol --stdio -g none 2>/dev/null \
		| grep '%' | grep -v '\[k\]' | head -40 | tee $(BENCH_OUT)/proxy-perf-children.txt

# bench-mirror: `switchyard mirror` and MirrorMaker 2 copy the same fresh
# source topic (BENCH_MIRROR_MB MiB of 1 KiB lz4 records, 8 partitions) on
# the same two real clusters, one after the other; one table of MB/s,
# records/s and CPU-seconds per GB for both (bench/mirror/bench-mirror.sh).
# Uses the running test bed (make kafka-up) if it answers, otherwise starts
# one of its own and stops it. Settings: the BENCH_MIRROR_* variables in the
# script's header (make variables on the command line reach it). Output:
# bench/out/mirror/<run>/report.md (bench/out/mirror/latest).
bench-mirror:
	bench/mirror/bench-mirror.sh

# bench-cutover: how long a cutover blocks producers (the control plane's
# block window, gate to release, and each producer's longest gap between
# acknowledgements) with 1, 10 and 50 sidecars under load, and where the
# time goes; every acknowledged record is checked to be on the target
# exactly once. One process: kfake clusters, control.NewPlane with a
# mirror, one proxy + controlclient per sidecar, one franz-go producer per
# sidecar (bench/cutover/cmd/cutoverbench; its doc.go has the details).
# BENCH_CUTOVER_FLAGS adds driver flags, e.g. -rate 200, -status-interval
# 100ms, -mirror-txn-interval 100ms, -cpuprofile F. Output: standard output
# and bench/out/cutover/<time>.md, .json (latest.md).
BENCH_CUTOVER_SIDECARS ?= 1,10,50
BENCH_CUTOVER_RUNS     ?= 10
BENCH_CUTOVER_FLAGS    ?=

bench-cutover-bin:
	$(GO) build -o bin/cutoverbench ./bench/cutover/cmd/cutoverbench

bench-cutover: bench-cutover-bin
	bin/cutoverbench -sidecars $(BENCH_CUTOVER_SIDECARS) -runs $(BENCH_CUTOVER_RUNS) -out $(BENCH_OUT)/cutover $(BENCH_CUTOVER_FLAGS)

# bench-cutover-real: the same against the running test bed's clusters
# (testbed/.state/env, make kafka-up); fresh topics per run, deleted after.
bench-cutover-real: bench-cutover-bin
	@test -f $(BENCH_TESTBED_ENV) || { echo "bench-cutover-real: no $(BENCH_TESTBED_ENV): run make kafka-up first" >&2; exit 1; }
	bin/cutoverbench -kafka real -env $(BENCH_TESTBED_ENV) -sidecars $(BENCH_CUTOVER_SIDECARS) -runs $(BENCH_CUTOVER_RUNS) \
		-out $(BENCH_OUT)/cutover-real $(BENCH_CUTOVER_FLAGS)

# bench-cutover-hold: Apache Kafka's VerifiableProducer (retries=0) and a
# ConsoleConsumer group behind sidecars, HOLD cutovers on the running test
# bed; the producer's errors by exception per run (issue 13, item 7).
HOLD_RUNS ?= 3
bench-cutover-hold:
	$(GO) build -o bin/switchyard ./cmd/switchyard
	HOLD_RUNS=$(HOLD_RUNS) HOLD_BUDGET=$(HOLD_BUDGET) bench/cutover/hold-verifiable.sh

# bench-leader-moves: leaders move on the active cluster (a preferred-leader
# election, then a reassignment that drops each leader) under Kafka's
# VerifiableProducer (retries=0) and a ConsoleConsumer group behind one
# sidecar, on the running test bed (issue 15); errors by event per run.
MOVES_RUNS ?= 3
bench-leader-moves:
	$(GO) build -o bin/switchyard ./cmd/switchyard
	MOVES_RUNS=$(MOVES_RUNS) bench/cutover/leader-moves.sh

# bench-cutover-java: issue 13's "java defaults" scenario — Kafka's own Java
# programs at their defaults (auto-commit every 5 s), JAVA_RUNS cutovers;
# the goal is a producers' block window of at most 1 s at the p99.
JAVA_RUNS ?= 20
bench-cutover-java:
	$(GO) build -o bin/switchyard ./cmd/switchyard
	HOLD_RUNS=$(JAVA_RUNS) HOLD_BUDGET=$(HOLD_BUDGET) bench/cutover/hold-verifiable.sh

# bench-cutover-streams: issue 13's "streams" scenario (bench/cutover/streams.sh).
bench-cutover-streams: deps
	bench/cutover/streams.sh
