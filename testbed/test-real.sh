#!/usr/bin/env bash
# Runs the Go suites against the real-Kafka test bed:
#   testbed/test-real.sh            once, KAFKA_VERSION or the newest 4.x
#   testbed/test-real.sh --matrix   once per supported version
# The test bed is always stopped at the end, also on failure or Ctrl-C.
# GO_TEST_FLAGS (default "-race -count=1 -timeout 20m") and GO_TEST_PKGS
# (default ./...) adjust the go test run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
KAFKA_SH=testbed/kafka.sh

versions=${KAFKA_VERSION:-$($KAFKA_SH supported | cut -d' ' -f1)}
if [[ ${1:-} == --matrix ]]; then
	versions=$($KAFKA_SH supported)
fi

cleanup() {
	local rc=$?
	$KAFKA_SH down || rc=1
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

results=()
failed=0
for v in $versions; do
	echo "=== test-real: Kafka $v"
	t0=$SECONDS
	# SECURE=1 adds the SASL_SSL listeners the security tests need.
	if ! SECURE=${SECURE:-1} KAFKA_VERSION=$v $KAFKA_SH up >/dev/null; then
		failed=1
		results+=("Kafka $v: FAILED to start the test bed (see the errors above)")
		continue
	fi
	(
		# shellcheck disable=SC1091
		. testbed/.state/env
		export SWITCHYARD_TEST_KAFKA=real
		# The SASL_SSL suites fail instead of skipping when the listeners
		# should be there.
		[[ ${SECURE:-1} == 1 ]] && export SWITCHYARD_REQUIRE_SECURE=1
		# Kafka Streams' WordCountDemo (internal/compat) runs from a 4.x lib
		# on a 3.x bed: Maven Central has no 3.9.x Streams examples.
		if [[ $v == 3.* && -z ${SWITCHYARD_TEST_STREAMS_LIB:-} ]]; then
			if lib=$(KAFKA_VERSION=$v $KAFKA_SH streams-lib); then
				export SWITCHYARD_TEST_STREAMS_LIB=$lib
			else
				echo "=== test-real: no Kafka Streams lib for the Kafka $v bed; TestStreamsWordCountQuick skips" >&2
			fi
		fi
		# shellcheck disable=SC2086
		go test ${GO_TEST_FLAGS:--race -count=1 -timeout 20m} ${GO_TEST_PKGS:-./...}
	) && rc=0 || rc=$?
	$KAFKA_SH down
	if ((rc == 0)); then
		results+=("Kafka $v: passed ($((SECONDS - t0))s)")
	else
		failed=1
		results+=("Kafka $v: FAILED ($((SECONDS - t0))s; broker logs in testbed/.state/run/*/b*/logs)")
		# Keep the logs of the failed run: the next `up` would wipe them.
		if [[ -d testbed/.state/run ]]; then
			rm -rf "testbed/.state/failed-$v"
			cp -r testbed/.state/run "testbed/.state/failed-$v" 2>/dev/null || true
			results[-1]="Kafka $v: FAILED ($((SECONDS - t0))s; broker logs kept in testbed/.state/failed-$v)"
		fi
	fi
done
printf '%s\n' "${results[@]}"
exit "$failed"
