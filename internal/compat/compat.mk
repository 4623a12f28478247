# Compatibility matrix (internal/compat; results in docs/COMPATIBILITY.md).
# Included by the top Makefile.
#
#   make test-compat         COMPAT_RUNS (10) runs per client on real Kafka, on a
#                            test bed of its own (started, and always stopped),
#                            and COMPAT_RUNS random cutovers of Kafka Streams'
#                            WordCountDemo (TestStreamsWordCount, below), half
#                            exactly_once_v2, half at_least_once
#                            (COMPAT_STREAMS_RUNS=0 leaves them out)
#   make test-compat-kfake   the same on in-process kfake clusters
#
# COMPAT_CLIENTS, COMPAT_SEED, COMPAT_INSTANCES, COMPAT_GATE_MODE, COMPAT_GROUP_SHAPE,
# COMPAT_SARAMA_DEFAULTS, COMPAT_COLD_START, COMPAT_TRANSACTIONAL,
# COMPAT_MOVE_LEADERS (kfake: a source leader moved every such duration
# while the application runs there) and COMPAT_RESULTS pass through (see
# internal/compat/compat_test.go). `make
# test` runs one run per client, on kfake (test-go) and on real Kafka
# (test-real).
#
#   COMPAT_TRANSACTIONAL=1 make test-compat   transactional producers (java,
#                            confluent-kafka-python; the others skipped): a
#                            transaction per 20 records, every 10th aborted,
#                            the group read_committed
#
#   make test-streams        Kafka Streams' WordCountDemo (Apache Kafka's own
#                            example, exactly_once_v2 and at_least_once) behind
#                            sidecars, its input from VerifiableProducer behind
#                            another: a run without a cutover (the harness and
#                            its checker proven), then COMPAT_STREAMS_RUNS (1)
#                            random cutovers per guarantee, on a test bed of its
#                            own. `make test` (test-real) runs one short
#                            exactly_once_v2 cutover of it
#                            (TestStreamsWordCountQuick, ~20-40 s); `make
#                            test-compat` runs 10 cutovers. The
#                            COMPAT_STREAMS_* settings are in
#                            internal/compat/streams_test.go; e.g.
#                            COMPAT_STREAMS_RUNS=10 make test-streams. It also
#                            runs TestPipelineCopier (internal/compat/
#                            pipeline_test.go): Kafka's TransactionalMessageCopier,
#                            an exactly-once consume-transform-produce program,
#                            and its input moved by one cutover mid-copy.
#
#   make test-pipeline       TestPipelineCopier alone, on a test bed of its own
COMPAT_RUNS ?= 10

.PHONY: test-compat test-compat-kfake test-streams test-pipeline

test-compat: deps
	@COMPAT_RUNS=$(COMPAT_RUNS) internal/compat/run-real.sh

test-compat-kfake: deps
	SWITCHYARD_TEST_KAFKA=kfake SWITCHYARD_REQUIRE_CLIENTS=1 COMPAT_RUNS=$(COMPAT_RUNS) \
		$(GO) test -count=1 -timeout 60m -run 'TestCompatibility$$' -v ./internal/compat/

test-streams:
	@internal/compat/run-real.sh --streams

test-pipeline:
	@internal/compat/run-real.sh --pipeline
