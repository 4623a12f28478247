# Compatibility matrix (internal/compat; results in docs/COMPATIBILITY.md).
# Included by the top Makefile.
#
#   make test-compat         COMPAT_RUNS (10) runs per client on real Kafka, on a
#                            test bed of its own (started, and always stopped)
#   make test-compat-kfake   the same on in-process kfake clusters
#
# COMPAT_CLIENTS, COMPAT_SEED, COMPAT_INSTANCES, COMPAT_GATE_MODE,
# COMPAT_SARAMA_DEFAULTS, COMPAT_COLD_START, COMPAT_TRANSACTIONAL and
# COMPAT_RESULTS pass through (see internal/compat/compat_test.go). `make
# test` runs one run per client, on kfake (test-go) and on real Kafka
# (test-real).
#
#   COMPAT_TRANSACTIONAL=1 make test-compat   transactional producers (java,
#                            confluent-kafka-python; the others skipped): a
#                            transaction per 20 records, every 10th aborted,
#                            the group read_committed
COMPAT_RUNS ?= 10

.PHONY: test-compat test-compat-kfake

test-compat: deps
	@COMPAT_RUNS=$(COMPAT_RUNS) internal/compat/run-real.sh

test-compat-kfake: deps
	SWITCHYARD_TEST_KAFKA=kfake SWITCHYARD_REQUIRE_CLIENTS=1 COMPAT_RUNS=$(COMPAT_RUNS) \
		$(GO) test -count=1 -timeout 60m -run 'TestCompatibility$$' -v ./internal/compat/
