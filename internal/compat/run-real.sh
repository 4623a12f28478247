#!/usr/bin/env bash
# make test-compat: the compatibility matrix on real Kafka. It starts a test
# bed of its own (COMPAT_STATE_DIR, default /tmp/switchyard-compat-bed; the
# shared testbed/.state is left alone), runs the matrix against it, and
# always stops it, also on failure or Ctrl-C. KAFKA_VERSION picks the Kafka
# release as for `make kafka-up`. Beside the matrix it runs
# TestStreamsWordCount's cutover scenario: COMPAT_RUNS random cutovers of
# Kafka Streams' WordCountDemo, half exactly_once_v2 and half at_least_once
# (COMPAT_STREAMS_RUNS, default COMPAT_RUNS/2 rounded up, per guarantee;
# COMPAT_STREAMS_RUNS=0 leaves them out).
#
# With --streams (make test-streams) it runs TestStreamsWordCount and
# TestPipelineCopier instead (COMPAT_STREAMS=1, COMPAT_PIPELINE=1): Kafka
# Streams' WordCountDemo and Kafka's TransactionalMessageCopier across
# cutovers; --pipeline (make test-pipeline) the copier alone; --wordcount
# (bench/cutover/streams.sh) WordCountDemo alone. Their JVMs
# run from the test bed's jars; a 3.x test bed has no Kafka Streams examples
# on Maven Central, so they then run from the newest supported 4.x
# (SWITCHYARD_TEST_STREAMS_LIB, unless given).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export STATE_DIR=${COMPAT_STATE_DIR:-${TMPDIR:-/tmp}/switchyard-compat-bed}

export COMPAT_RUNS=${COMPAT_RUNS:-10}
case ${1:-} in
--streams)
	test='Test(StreamsWordCount|PipelineCopier)$'
	export COMPAT_STREAMS=1 COMPAT_PIPELINE=1
	;;
--pipeline)
	test='TestPipelineCopier$'
	export COMPAT_PIPELINE=1
	;;
--wordcount)
	test='TestStreamsWordCount$'
	export COMPAT_STREAMS=1
	;;
*)
	test='TestCompatibility$'
	streams_runs=${COMPAT_STREAMS_RUNS:-$(((COMPAT_RUNS + 1) / 2))}
	if ((streams_runs > 0)); then
		test='Test(Compatibility|StreamsWordCount)$'
		export COMPAT_STREAMS=1 COMPAT_STREAMS_SCENARIOS=${COMPAT_STREAMS_SCENARIOS:-cutover}
		export COMPAT_STREAMS_RUNS=$streams_runs
	fi
	;;
esac

cleanup() {
	local rc=$?
	testbed/kafka.sh down || rc=1
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

testbed/kafka.sh up >/dev/null
export SWITCHYARD_TEST_ENV_FILE=$STATE_DIR/env SWITCHYARD_TEST_KAFKA=real SWITCHYARD_REQUIRE_CLIENTS=1
if [[ ${COMPAT_STREAMS:-}${COMPAT_PIPELINE:-} != "" && -z ${SWITCHYARD_TEST_STREAMS_LIB:-} ]]; then
	version=$(sed -n 's/^export SWITCHYARD_TEST_KAFKA_VERSION=//p' "$SWITCHYARD_TEST_ENV_FILE")
	if [[ $version == 3.* ]]; then
		SWITCHYARD_TEST_STREAMS_LIB=$(KAFKA_VERSION=$version testbed/kafka.sh streams-lib)
		export SWITCHYARD_TEST_STREAMS_LIB
		echo "run-real.sh: Kafka $version test bed; Kafka Streams and its input run from $SWITCHYARD_TEST_STREAMS_LIB"
	fi
fi
go test -count=1 -timeout "${COMPAT_TIMEOUT:-90m}" -run "$test" -v ./internal/compat/
