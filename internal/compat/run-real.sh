#!/usr/bin/env bash
# make test-compat: the compatibility matrix on real Kafka. It starts a test
# bed of its own (COMPAT_STATE_DIR, default /tmp/switchyard-compat-bed; the
# shared testbed/.state is left alone), runs the matrix against it, and
# always stops it, also on failure or Ctrl-C. KAFKA_VERSION picks the Kafka
# release as for `make kafka-up`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export STATE_DIR=${COMPAT_STATE_DIR:-${TMPDIR:-/tmp}/switchyard-compat-bed}

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
export COMPAT_RUNS=${COMPAT_RUNS:-10}
go test -count=1 -timeout "${COMPAT_TIMEOUT:-90m}" -run 'TestCompatibility$' -v ./internal/compat/
