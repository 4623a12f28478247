#!/usr/bin/env bash
# Tests of the test bed itself (make test-testbed): every way `kafka.sh up`
# can fail must end with a clear error that names the cause (and the log to
# read), and must leave no JVM behind. Then one good start with a fixed base
# port checks up/status/up-again/down.
#
# Each case uses its own STATE_DIR under testbed/.state/test-testbed/, so a
# test bed started with `make kafka-up` is not disturbed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
KAFKA_SH=$ROOT/testbed/kafka.sh
WORK=$ROOT/testbed/.state/test-testbed
VERSION=${KAFKA_VERSION:-$($KAFKA_SH supported | cut -d' ' -f1)}
export KAFKA_VERSION=$VERSION
rm -rf "$WORK"
mkdir -p "$WORK"

pass=0
fail=0
failures=()
HOLDER_PID=""

cleanup() {
	[[ -z $HOLDER_PID ]] || kill "$HOLDER_PID" 2>/dev/null || true
	local d
	for d in "$WORK"/*/; do
		[[ -d $d ]] && STATE_DIR=${d%/} "$KAFKA_SH" down >/dev/null 2>&1 || true
	done
}
trap cleanup EXIT

jvms_of() { pgrep -f -- "-Dswitchyard\.testbed=$1( |\$)" || true; }

# expect_fail NAME PATTERN... -- COMMAND...: COMMAND must fail, its output
# must match every PATTERN (extended regex), and no JVM of its STATE_DIR may
# be left.
expect_fail() {
	local name=$1
	shift
	local patterns=()
	while [[ $1 != -- ]]; do
		patterns+=("$1")
		shift
	done
	shift
	local state=$WORK/$name out=$WORK/$name.out rc=0 t0=$SECONDS
	mkdir -p "$state"
	STATE_DIR=$state "$@" >"$out" 2>&1 || rc=$?
	local problems=()
	((rc != 0)) || problems+=("exited 0, want a failure")
	local p
	for p in "${patterns[@]}"; do
		grep -qE -- "$p" "$out" || problems+=("output lacks /$p/")
	done
	local left
	left=$(jvms_of "$state" | tr '\n' ' ')
	[[ -z $left ]] || problems+=("JVMs left running: $left")
	if ((${#problems[@]} == 0)); then
		pass=$((pass + 1))
		echo "PASS $name ($((SECONDS - t0))s): $(grep -m1 'error:' "$out" | cut -c1-220)"
	else
		fail=$((fail + 1))
		failures+=("$name")
		echo "FAIL $name ($((SECONDS - t0))s): ${problems[*]}"
		sed 's/^/    | /' "$out" | tail -15
		[[ -z $left ]] || kill -KILL $left 2>/dev/null || true
	fi
}

check() {
	local name=$1
	shift
	if "$@"; then
		pass=$((pass + 1))
		echo "PASS $name"
	else
		fail=$((fail + 1))
		failures+=("$name")
		echo "FAIL $name"
	fi
}

# Build the helpers and resolve the jars once, so the cases below time only
# what they test.
STATE_DIR=$WORK/prepare "$KAFKA_SH" fetch
(cd "$ROOT" && go build -o "$ROOT/testbed/.cache/bin/" ./testbed/cmd/freeport ./testbed/cmd/waitkafka)
FREEPORT=$ROOT/testbed/.cache/bin/freeport

# A base port with 12 free ports after it (4 brokers x 3 ports).
base=""
for _ in $(seq 1 50); do
	b=$((20000 + RANDOM % 10000))
	if "$FREEPORT" -check $(seq "$b" $((b + 11))) 2>/dev/null; then
		base=$b
		break
	fi
done
[[ -n $base ]] || {
	echo "no 12 consecutive free ports found"
	exit 1
}

# hold_port PORT: a listener on 127.0.0.1:PORT until killed.
hold_port() {
	python3 -c 'import socket,sys,time
s=socket.socket(); s.bind(("127.0.0.1",int(sys.argv[1]))); s.listen(1); print("ready",flush=True); time.sleep(900)' "$1" >"$WORK/holder.out" 2>&1 &
	HOLDER_PID=$!
	local i
	for i in $(seq 1 50); do
		grep -q ready "$WORK/holder.out" 2>/dev/null && return 0
		sleep 0.1
	done
	echo "could not start a listener on port $1"
	exit 1
}

echo "== test bed failure cases, Kafka $VERSION, base port $base"

# 1. A port of the fixed range is taken: refused before any JVM starts.
hold_port $((base + 4))
expect_fail port-in-use "port $((base + 4)) on 127\.0\.0\.1 is already in use" "BASE_PORT" -- \
	env BASE_PORT=$base "$KAFKA_SH" up

# 2. The same, but the broker itself meets the taken port (the check skipped,
#    as when another process takes the port between check and start).
expect_fail port-in-use-at-start "exited.*(could not bind|Address already in use)|could not bind" "server\.log" "did not start" -- \
	env BASE_PORT=$base TESTBED_SKIP_PORT_CHECK=1 START_TIMEOUT=60 "$KAFKA_SH" up
kill "$HOLDER_PID" 2>/dev/null || true
wait "$HOLDER_PID" 2>/dev/null || true
HOLDER_PID=""

# 3. Not a version number at all.
expect_fail version-garbage "KAFKA_VERSION=banana is not a Kafka release number" -- \
	env KAFKA_VERSION=banana "$KAFKA_SH" up

# 4. Version lines the test bed does not run (ZooKeeper era, early KRaft).
expect_fail version-unsupported "only Kafka 3\.x \(3\.7\+\) and 4\.x are supported" -- \
	env KAFKA_VERSION=2.8.2 "$KAFKA_SH" up
expect_fail version-too-old "KAFKA_VERSION=3\.5\.1: .*needs Kafka 3\.7 or newer" -- \
	env KAFKA_VERSION=3.5.1 "$KAFKA_SH" up

# 5. A well-formed version that Maven Central does not have.
expect_fail version-missing "artifact of Kafka 4\.99\.0 is missing on Maven Central" "maven\.log" -- \
	env KAFKA_VERSION=4.99.0 CACHE_DIR=$WORK/cache-missing "$KAFKA_SH" up

# 6. Maven Central unreachable: a mirror on a closed local port, an empty
#    local repository and an empty jar cache.
cat >"$WORK/settings-unreachable.xml" <<'EOF'
<settings>
  <mirrors>
    <mirror><id>nowhere</id><mirrorOf>*</mirrorOf><url>http://127.0.0.1:9/maven2</url></mirror>
  </mirrors>
</settings>
EOF
expect_fail maven-unreachable "Maven Central is unreachable" "maven\.log" -- \
	env MVN_ARGS="-s $WORK/settings-unreachable.xml" M2_REPO=$WORK/m2-empty CACHE_DIR=$WORK/cache-empty "$KAFKA_SH" up

# 7. A broken broker configuration: storage format rejects it.
expect_fail broken-config "formatting source/b1 failed.*num\.network\.threads" "format\.out" "cannot format" -- \
	env EXTRA_BROKER_CONFIG="num.network.threads=banana" "$KAFKA_SH" up

# 8. A broker that dies while starting (a heap far too small).
expect_fail broker-dies "exited" "server\.log|stdout\.log" "did not start" -- \
	env KAFKA_HEAP_OPTS="-Xmx12m -Xms12m" START_TIMEOUT=90 "$KAFKA_SH" up

# 9. Brokers that do not answer Metadata in time.
expect_fail start-timeout "did not answer Metadata with all brokers within START_TIMEOUT=1s" "server\.log" -- \
	env START_TIMEOUT=1 "$KAFKA_SH" up

# 10. Bad numbers.
expect_fail bad-brokers "want positive numbers" -- env TARGET_BROKERS=0 "$KAFKA_SH" up
expect_fail bad-base-port "BASE_PORT=80: want a port number" -- env BASE_PORT=80 "$KAFKA_SH" up

echo "== a good start with SASL_SSL on fixed ports, logins, status, up again, a dead broker, down"
good=$WORK/good
mkdir -p "$good"
t0=$SECONDS
export SECURE=1
if STATE_DIR=$good BASE_PORT=$base "$KAFKA_SH" up >"$WORK/good.out" 2>&1; then
	echo "PASS up on base port $base ($((SECONDS - t0))s)"
	pass=$((pass + 1))
	check "env file names source and target on the fixed ports" \
		grep -qE "SWITCHYARD_TEST_SOURCE=127\.0\.0\.1:$base,127\.0\.0\.1:$((base + 3)),127\.0\.0\.1:$((base + 6))$" "$good/env"
	check "env file names the SASL_SSL listeners on the fixed ports" \
		grep -qE "SWITCHYARD_TEST_TARGET_SASL_SSL=127\.0\.0\.1:$((base + 11))$" "$good/env"
	# shellcheck disable=SC1091
	. "$good/env"
	W=$ROOT/testbed/.cache/bin/waitkafka
	for m in SCRAM-SHA-256 SCRAM-SHA-512 PLAIN; do
		check "SASL_SSL $m login, produce and consume on the source" \
			"$W" -q -name "source $m" -bootstrap "$SWITCHYARD_TEST_SOURCE_SASL_SSL" -brokers 3 -timeout 60s \
			-tls-ca "$SWITCHYARD_TEST_CA_PEM" -sasl "$m" -user "$SWITCHYARD_TEST_SASL_USER" \
			-password "$SWITCHYARD_TEST_SASL_PASSWORD" -roundtrip
	done
	rc=0
	"$W" -name "bad password" -bootstrap "$SWITCHYARD_TEST_TARGET_SASL_SSL" -timeout 30s \
		-tls-ca "$SWITCHYARD_TEST_CA_PEM" -sasl SCRAM-SHA-512 -user "$SWITCHYARD_TEST_SASL_USER" \
		-password wrong >"$WORK/badpw.out" 2>&1 || rc=$?
	check "a wrong SCRAM password is refused (exit 4, SASL_AUTHENTICATION_FAILED)" \
		bash -c "[[ $rc == 4 ]] && grep -q SASL_AUTHENTICATION_FAILED '$WORK/badpw.out'"
	check "status reports all brokers running" bash -c "STATE_DIR='$good' '$KAFKA_SH' status >/dev/null"
	check "up again reuses the running test bed" \
		bash -c "STATE_DIR='$good' BASE_PORT=$base '$KAFKA_SH' up 2>&1 | grep -q 'already up'"
	kill -KILL "$(cat "$good/run/source/b2/pid")"
	sleep 1
	rc=0
	STATE_DIR=$good "$KAFKA_SH" status >"$WORK/status.out" 2>&1 || rc=$?
	check "status exits 1 and names the dead broker" \
		bash -c "[[ $rc == 1 ]] && grep -q 'source/b2: not running' '$WORK/status.out'"
	t0=$SECONDS
	STATE_DIR=$good "$KAFKA_SH" down >/dev/null 2>&1
	unset SECURE
	check "down stops every JVM ($((SECONDS - t0))s)" bash -c "[[ -z \$(pgrep -f -- '-Dswitchyard\\.testbed=$good( |\$)') ]]"
	check "down removes the env file" test ! -e "$good/env"
	rc=0
	STATE_DIR=$good "$KAFKA_SH" status >/dev/null 2>&1 || rc=$?
	check "status exits 3 when nothing runs" test "$rc" = 3
else
	fail=$((fail + 1))
	failures+=("good-up")
	echo "FAIL up on base port $base"
	tail -20 "$WORK/good.out" | sed 's/^/    | /'
fi

echo "== test-testbed: $pass passed, $fail failed${failures:+ (${failures[*]})}"
((fail == 0))
