# Real Apache Kafka test bed (see testbed/README.md). Included by the top
# Makefile. Settings pass through as make variables, e.g.
#   make kafka-up KAFKA_VERSION=3.9.2
#   make perf-producer BOOTSTRAP=127.0.0.1:9092 NUM_RECORDS=50000
# (variables given on the make command line reach the scripts' environment).
KAFKA_SH := testbed/kafka.sh

.PHONY: kafka-up kafka-up-secure kafka-down kafka-status kafka-env kafka-versions \
	test-real test-matrix test-testbed mirrormaker perf-producer perf-consumer perf-e2e

kafka-up:
	@$(KAFKA_SH) up

# kafka-up-secure: as kafka-up, plus a SASL_SSL listener on every broker
# (SCRAM-SHA-256/512 and PLAIN users, a CA and broker certificate made at start).
kafka-up-secure:
	@SECURE=1 $(KAFKA_SH) up

kafka-down:
	@$(KAFKA_SH) down

kafka-status:
	@$(KAFKA_SH) status || true

kafka-env:
	@$(KAFKA_SH) env

kafka-versions:
	@$(KAFKA_SH) versions

# test-real: the Go suites against real Kafka (newest 4.x unless KAFKA_VERSION
# is given). Starts the test bed and always stops it, also on failure.
test-real:
	@testbed/test-real.sh

# test-matrix: test-real once for every supported Kafka version.
test-matrix:
	@testbed/test-real.sh --matrix

# test-testbed: the test bed's own failure modes (port taken, bogus version,
# Maven unreachable, broken config, start timeout) leave clear errors and no JVM.
test-testbed:
	@testbed/test-testbed.sh

# mirrormaker: MirrorMaker 2 from the source to the target cluster, in the
# foreground until Ctrl-C or MM2_DURATION seconds.
mirrormaker:
	@$(KAFKA_SH) mirrormaker

perf-producer:
	@$(KAFKA_SH) perf-producer

perf-consumer:
	@$(KAFKA_SH) perf-consumer

perf-e2e:
	@$(KAFKA_SH) perf-e2e
