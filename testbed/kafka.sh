#!/usr/bin/env bash
# Real Apache Kafka test bed: a source cluster (3 brokers) and a target cluster
# (1 broker), KRaft combined mode, on 127.0.0.1, from jars on Maven Central.
#
#   testbed/kafka.sh up|down|status|env
#   testbed/kafka.sh mirrormaker|perf-producer|perf-consumer|perf-e2e
#   testbed/kafka.sh versions|fetch|java CLASS ARGS...
#
# Settings (environment): see `testbed/kafka.sh help` and testbed/README.md.
set -euo pipefail

TESTBED_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(dirname "$TESTBED_DIR")

# Supported versions: the newest 4.x and the newest 3.9.x whose broker, tools
# and MirrorMaker 2 artifacts are all on Maven Central (`kafka.sh versions`
# re-checks). The first is the default.
SUPPORTED_VERSIONS="4.3.1 3.9.2"
DEFAULT_VERSION=${SUPPORTED_VERSIONS%% *}

# Tools (perf, mirrormaker) follow the running test bed unless KAFKA_VERSION is set.
KAFKA_VERSION_SET=${KAFKA_VERSION:+1}
KAFKA_VERSION=${KAFKA_VERSION:-$DEFAULT_VERSION}
STATE_DIR=${STATE_DIR:-$TESTBED_DIR/.state}
CACHE_DIR=${CACHE_DIR:-$TESTBED_DIR/.cache}
M2_REPO=${M2_REPO:-$HOME/.m2/repository}
MVN_ARGS=${MVN_ARGS:-}
SOURCE_BROKERS=${SOURCE_BROKERS:-3}
TARGET_BROKERS=${TARGET_BROKERS:-1}
BASE_PORT=${BASE_PORT:-}
SECURE=${SECURE:-0}
KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xms64m -Xmx384m}
KAFKA_JVM_OPTS=${KAFKA_JVM_OPTS:--XX:+UseSerialGC -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true}
TOOLS_HEAP_OPTS=${TOOLS_HEAP_OPTS:--Xmx512m}
START_TIMEOUT=${START_TIMEOUT:-120}
STOP_TIMEOUT=${STOP_TIMEOUT:-20}
EXTRA_BROKER_CONFIG=${EXTRA_BROKER_CONFIG:-}
JAVA=${JAVA:-java}

# Test-only credentials for the SASL_SSL listener (kafka-up-secure).
SASL_USER=alice
SASL_PASSWORD=alice-secret
SASL_ADMIN=admin
SASL_ADMIN_PASSWORD=admin-secret
STORE_PASSWORD=switchyard-test
SASL_REAUTH_MS=10000

case "$STATE_DIR" in /*) ;; *) STATE_DIR=$PWD/$STATE_DIR ;; esac
case "$CACHE_DIR" in /*) ;; *) CACHE_DIR=$PWD/$CACHE_DIR ;; esac
RUN_DIR=$STATE_DIR/run
ENV_FILE=$STATE_DIR/env
CONF_FILE=$STATE_DIR/testbed.conf
LIB_DIR=$CACHE_DIR/$KAFKA_VERSION/lib
BIN_DIR=$CACHE_DIR/bin
# Every JVM started here carries this argument, so `down` and the tests can
# find them all (pgrep -f) even without pid files.
MARKER="-Dswitchyard.testbed=$STATE_DIR"

say() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() {
	printf 'kafka.sh: error: %s\n' "$*" >&2
	exit 1
}

# ---------------------------------------------------------------- versions

major() { printf '%s' "${KAFKA_VERSION%%.*}"; }

check_version() {
	[[ $KAFKA_VERSION =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] ||
		die "KAFKA_VERSION=$KAFKA_VERSION is not a Kafka release number like 4.3.1 (supported: $SUPPORTED_VERSIONS)"
	local m
	m=$(major)
	case "$m" in
	3)
		local minor=${KAFKA_VERSION#3.}
		minor=${minor%%.*}
		((minor >= 7)) || die "KAFKA_VERSION=$KAFKA_VERSION: this test bed runs KRaft combined mode and needs Kafka 3.7 or newer (supported: $SUPPORTED_VERSIONS)"
		;;
	4) ;;
	*) die "KAFKA_VERSION=$KAFKA_VERSION: only Kafka 3.x (3.7+) and 4.x are supported (tested: $SUPPORTED_VERSIONS)" ;;
	esac
	if [[ " $SUPPORTED_VERSIONS " != *" $KAFKA_VERSION "* && -z ${VERSION_NOTED:-} ]]; then
		VERSION_NOTED=1
		say "note: KAFKA_VERSION=$KAFKA_VERSION is not one of the tested versions ($SUPPORTED_VERSIONS)"
	fi
}

# first_match ERE FILE: the first match in FILE, or nothing (never fails).
first_match() { grep -oiE -- "$1" "$2" 2>/dev/null | head -1 || true; }

need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found on PATH: $2"; }

# fetch_stamp names what a resolved lib dir was resolved from: the pom and
# the profile. A lib dir whose .complete holds another stamp (an older pom,
# e.g. before Kafka Streams was added) is resolved again.
fetch_stamp() { printf 'pom %s profile kafka%s\n' "$(cksum <"$TESTBED_DIR/pom.xml" | cut -d' ' -f1)" "$(major)"; }

# fetch resolves the jars of KAFKA_VERSION into $LIB_DIR once (Maven caches
# the downloads in $M2_REPO).
fetch() {
	check_version
	[[ -f $LIB_DIR/.complete && $(<"$LIB_DIR/.complete") == "$(fetch_stamp)" ]] && return 0
	need mvn "install Maven 3 (apt-get install maven)"
	need "$JAVA" "install a JDK 17 (apt-get install openjdk-17-jdk-headless)"
	local dir=$CACHE_DIR/$KAFKA_VERSION
	local log=$dir/maven.log
	mkdir -p "$dir"
	rm -rf "$dir/lib.tmp"
	say "resolving Kafka $KAFKA_VERSION from Maven Central (log: $log)"
	local profile=kafka$(major)
	# shellcheck disable=SC2086
	if ! mvn -B -f "$TESTBED_DIR/pom.xml" -Dmaven.repo.local="$M2_REPO" $MVN_ARGS \
		-Dkafka.version="$KAFKA_VERSION" -P"$profile" \
		dependency:copy-dependencies -DincludeScope=runtime \
		-DoutputDirectory="$dir/lib.tmp" >"$log" 2>&1; then
		local cause="Maven failed"
		if grep -qE 'Could not find artifact|Failure to find|was not found in' "$log"; then
			cause="an artifact of Kafka $KAFKA_VERSION is missing on Maven Central ($(first_match '((Could not find artifact|Failure to find) [^ ]+|[^ ]+ was not found in)' "$log"))"
		elif grep -qiE 'Could not transfer|transfer failed|Connection refused|UnknownHost|Network is unreachable|timed out|Connect to .* failed' "$log"; then
			cause="Maven Central is unreachable ($(first_match '(transfer failed for [^ ]+|Connection refused|UnknownHost[^:]*|Network is unreachable|Connect to [^ ]+ failed|timed out)' "$log"))"
		fi
		rm -rf "$dir/lib.tmp"
		grep -E '^\[ERROR\]' "$log" | head -5 >&2 || true
		die "cannot resolve Kafka $KAFKA_VERSION: $cause; see $log"
	fi
	rm -rf "$LIB_DIR"
	mv "$dir/lib.tmp" "$LIB_DIR"
	fetch_stamp >"$LIB_DIR/.complete"
	say "Kafka $KAFKA_VERSION: $(find "$LIB_DIR" -name '*.jar' | wc -l) jars in $LIB_DIR"
}

# versions lists what Maven Central has: newest 3.9.x and 4.x with every
# artifact the test bed needs.
versions() {
	need mvn "install Maven 3"
	local tmp
	tmp=$(mktemp -d)
	# shellcheck disable=SC2086
	mvn -B -q -Dmaven.repo.local="$tmp/repo" $MVN_ARGS dependency:get \
		-Dartifact=org.apache.kafka:kafka_2.13:RELEASE:pom -Dtransitive=false >"$tmp/log" 2>&1 ||
		{
			cat "$tmp/log" >&2
			rm -rf "$tmp"
			die "cannot read Kafka versions from Maven Central"
		}
	local all
	all=$(grep -oE '<version>[0-9]+\.[0-9]+\.[0-9]+</version>' "$tmp"/repo/org/apache/kafka/kafka_2.13/maven-metadata-*.xml | sed -E 's/<\/?version>//g' | sort -uV)
	local line best v a ok
	for line in '^3\.9\.' '^4\.'; do
		best=""
		for v in $(grep -E "$line" <<<"$all" | sort -rV); do
			ok=1
			for a in kafka-tools connect-mirror connect-runtime; do
				# shellcheck disable=SC2086
				mvn -B -q -Dmaven.repo.local="$tmp/repo" $MVN_ARGS dependency:get \
					-Dartifact="org.apache.kafka:$a:$v:pom" -Dtransitive=false >/dev/null 2>&1 || {
					ok=0
					say "$v: org.apache.kafka:$a:$v is not on Maven Central, skipped"
					break
				}
			done
			if ((ok)); then
				best=$v
				break
			fi
		done
		echo "newest ${line//[\\^]/}x with broker, tools and MirrorMaker 2: ${best:-none}"
	done
	rm -rf "$tmp"
}

# ------------------------------------------------------------------ helpers

build_helpers() {
	need go "install Go (the module's go.mod names the version)"
	mkdir -p "$BIN_DIR"
	(cd "$REPO_ROOT" && go build -o "$BIN_DIR/" ./testbed/cmd/waitkafka ./testbed/cmd/freeport) ||
		die "cannot build testbed/cmd/waitkafka and testbed/cmd/freeport"
}

# java_args LOGFILE CONSOLE_LEVEL HEAP: the JVM arguments shared by every
# Kafka JVM of the test bed, into the JARGS array.
java_args() {
	local logfile=$1 level=$2 heap=$3
	JARGS=("$MARKER")
	# shellcheck disable=SC2206
	JARGS+=($heap $KAFKA_JVM_OPTS)
	JARGS+=("-Dswitchyard.log.file=$logfile" "-Dswitchyard.console.level=$level"
		"-Dkafka.logs.dir=$(dirname "$logfile")")
	if [[ $(major) == 3 ]]; then
		JARGS+=("-Dlog4j.configuration=file:$TESTBED_DIR/conf/log4j.properties")
	else
		JARGS+=("-Dlog4j2.configurationFile=$TESTBED_DIR/conf/log4j2.properties")
	fi
	JARGS+=(-cp "$LIB_DIR/*")
}

# marker_pids prints the pids of every JVM started for this state dir.
marker_pids() {
	local pat
	pat=$(printf '%s' "$MARKER" | sed 's/[][\.*^$(){}+?|]/\\&/g')
	pgrep -f -- "$pat( |\$)" || true
}

alive() { kill -0 "$1" 2>/dev/null && ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$1/stat" 2>/dev/null; }

# stop_pids PID...: TERM, wait up to STOP_TIMEOUT, then KILL and wait again.
stop_pids() {
	local pids=("$@") p left i
	((${#pids[@]})) || return 0
	kill -TERM "${pids[@]}" 2>/dev/null || true
	for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
		left=()
		for p in "${pids[@]}"; do alive "$p" && left+=("$p"); done
		((${#left[@]})) || return 0
		sleep 0.1
	done
	say "still running after ${STOP_TIMEOUT}s, killing: ${left[*]}"
	kill -KILL "${left[@]}" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do
		left=()
		for p in "${pids[@]}"; do alive "$p" && left+=("$p"); done
		((${#left[@]})) || return 0
		sleep 0.1
	done
	die "processes survived SIGKILL: ${left[*]}"
}

# --------------------------------------------------------------------- down

down() {
	local pids=() p f
	if [[ -d $RUN_DIR ]]; then
		while IFS= read -r f; do
			p=$(<"$f")
			[[ $p =~ ^[0-9]+$ ]] && alive "$p" && pids+=("$p")
		done < <(find "$RUN_DIR" -name pid -type f 2>/dev/null)
	fi
	for p in $(marker_pids); do
		[[ " ${pids[*]} " == *" $p "* ]] || pids+=("$p")
	done
	rm -f "$ENV_FILE"
	if ((${#pids[@]} == 0)); then
		say "nothing running"
		return 0
	fi
	say "stopping ${#pids[@]} JVM(s): ${pids[*]}"
	stop_pids "${pids[@]}"
	find "$RUN_DIR" -name pid -type f -delete 2>/dev/null || true
	say "stopped"
}

# ----------------------------------------------------------- restart-broker

# restart_broker CLUSTER N: stops broker bN of a running cluster with TERM
# (a controlled shutdown: its partitions' leadership moves to other brokers
# first), starts it again with the same configuration, and waits until the
# cluster answers Metadata with all its brokers again.
restart_broker() {
	local cluster=${1:-} n=${2:-} dir pid boot count
	[[ $cluster == source || $cluster == target ]] && [[ $n =~ ^[0-9]+$ ]] ||
		die "usage: kafka.sh restart-broker source|target N (N: the broker's directory b<N> under $RUN_DIR/<cluster>)"
	dir=$RUN_DIR/$cluster/b$n
	[[ -f $dir/pid && -f $ENV_FILE ]] || die "no broker $dir of a running test bed (kafka.sh up)"
	pid=$(<"$dir/pid")
	alive "$pid" || die "broker $dir (pid $pid) is not running"
	stop_pids "$pid"
	java_args "$dir/logs/server.log" OFF "$KAFKA_HEAP_OPTS"
	setsid "$JAVA" "${JARGS[@]}" kafka.Kafka "$dir/server.properties" >>"$dir/logs/stdout.log" 2>&1 </dev/null &
	echo $! >"$dir/pid"
	boot=$(sed -n "s/^export SWITCHYARD_TEST_${cluster^^}=//p" "$ENV_FILE")
	count=$(find "$RUN_DIR/$cluster" -maxdepth 1 -name 'b*' -type d | wc -l)
	"$BIN_DIR/waitkafka" -name "$cluster" -bootstrap "$boot" -brokers "$count" -timeout "${START_TIMEOUT}s" -pids "$!" >&2 ||
		die "broker $dir did not rejoin the $cluster cluster within START_TIMEOUT=${START_TIMEOUT}s; see $dir/logs/server.log"
}

# ------------------------------------------------------------------- status

status() {
	if [[ ! -f $CONF_FILE ]]; then
		echo "test bed: never started (no $CONF_FILE)"
		[[ -z $(marker_pids) ]] || echo "but JVMs with its marker run: $(marker_pids | tr '\n' ' ')"
		return 3
	fi
	local version secure
	version=$(sed -n 's/^version=//p' "$CONF_FILE")
	secure=$(sed -n 's/^secure=//p' "$CONF_FILE")
	local running=0 stopped=0 f p name known=()
	echo "test bed: Kafka $version, state $STATE_DIR$([[ $secure == 1 ]] && echo ', SASL_SSL on')"
	while IFS= read -r f; do
		name=$(basename "$(dirname "$(dirname "$f")")")/$(basename "$(dirname "$f")")
		p=$(<"$f")
		if alive "$p"; then
			running=$((running + 1))
			known+=("$p")
			local rss
			rss=$(awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$p/status" 2>/dev/null || true)
			echo "  $name: running, pid $p, $(grep -E '^listeners=' "$(dirname "$f")/server.properties" 2>/dev/null | cut -d= -f2-), RSS ${rss:-?} MiB"
		else
			stopped=$((stopped + 1))
			echo "  $name: not running (last pid $p)"
		fi
	done < <(find "$RUN_DIR" -name pid -type f 2>/dev/null | sort)
	for p in $(marker_pids); do
		[[ " ${known[*]} " == *" $p "* ]] && continue
		echo "  other test-bed JVM: pid $p: $(tr '\0' ' ' <"/proc/$p/cmdline" | grep -oE '[A-Za-z.]+(MirrorMaker|Performance|EndToEndLatency)' | head -1)"
	done
	((running + stopped)) || echo "  no broker running"
	if [[ -f $ENV_FILE ]]; then
		echo "env file: $ENV_FILE"
		sed 's/^/  /' "$ENV_FILE"
	fi
	((stopped == 0 && running > 0)) && return 0
	((running == 0)) && return 3
	return 1
}

env_cmd() {
	[[ -f $ENV_FILE ]] || die "the test bed is not up (no $ENV_FILE): run make kafka-up"
	cat "$ENV_FILE"
}

# ----------------------------------------------------------------------- up

# cluster_id prints a random base64url cluster id. One starting with '-'
# (1 draw in 64) is drawn again: kafka-storage would take it for an option.
cluster_id() {
	local id
	while :; do
		id=$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
		[[ $id == -* ]] || break
	done
	printf '%s\n' "$id"
}

allocate_ports() {
	local n=$1
	if [[ -n $BASE_PORT ]]; then
		[[ $BASE_PORT =~ ^[0-9]+$ ]] && ((BASE_PORT > 1023 && BASE_PORT + n < 65536)) ||
			die "BASE_PORT=$BASE_PORT: want a port number between 1024 and $((65535 - n))"
		PORTS=()
		local i
		for ((i = 0; i < n; i++)); do PORTS+=($((BASE_PORT + i))); done
		local msg
		# TESTBED_SKIP_PORT_CHECK=1 (tests only) lets the brokers meet a taken port.
		if [[ ${TESTBED_SKIP_PORT_CHECK:-0} != 1 ]] && ! msg=$("$BIN_DIR/freeport" -check "${PORTS[@]}" 2>&1); then
			local port holder
			port=$(grep -oE 'port [0-9]+' <<<"$msg" | head -1 | cut -d' ' -f2)
			holder=$(ss -Hltnp "sport = :$port" 2>/dev/null | grep -oE 'users:\(\(.*\)\)' | head -1 || true)
			die "$msg${holder:+ (held by $holder)}: the test bed needs ports $BASE_PORT-$((BASE_PORT + n - 1)); free them, choose another BASE_PORT, or unset BASE_PORT to pick free ports"
		fi
	else
		# shellcheck disable=SC2207
		PORTS=($("$BIN_DIR/freeport" -n "$n")) || die "cannot find $n free ports on 127.0.0.1"
	fi
}

# write_broker_config CLUSTER NODE DIR CLIENT CONTROLLER SASL VOTERS N
write_broker_config() {
	local cluster=$1 node=$2 dir=$3 pclient=$4 pctl=$5 psasl=$6 voters=$7 n=$8
	local rf=$((n < 3 ? n : 3)) isr=$((n < 2 ? 1 : 2))
	local listeners="PLAINTEXT://127.0.0.1:$pclient,CONTROLLER://127.0.0.1:$pctl"
	local advertised="PLAINTEXT://127.0.0.1:$pclient"
	if [[ $SECURE == 1 ]]; then
		listeners+=",SASL_SSL://127.0.0.1:$psasl"
		advertised+=",SASL_SSL://127.0.0.1:$psasl"
	fi
	cat >"$dir/server.properties" <<EOF
# Generated by testbed/kafka.sh for the $cluster cluster, node $node.
process.roles=broker,controller
node.id=$node
controller.quorum.voters=$voters
listeners=$listeners
advertised.listeners=$advertised
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=3
default.replication.factor=1
auto.create.topics.enable=true
delete.topic.enable=true
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
transaction.state.log.num.partitions=10
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
# An authorizer, so that ACLs are enforced (the mirror's ACL sync is tested
# against it), yet nothing changes for tests that create no ACL: resources
# without ACLs stay open to everyone, and unauthenticated clients (PLAINTEXT,
# including broker and controller traffic) and the SASL admin are super users.
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=true
super.users=User:ANONYMOUS;User:$SASL_ADMIN
EOF
	if [[ $(major) -ge 4 ]]; then
		cat >>"$dir/server.properties" <<EOF
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
EOF
	fi
	if [[ $SECURE == 1 ]]; then
		local s=$RUN_DIR/secure
		cat >>"$dir/server.properties" <<EOF
sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN,OAUTHBEARER
# OAUTHBEARER with Kafka's default validator for unsecured JWTs (alg "none",
# a "sub" claim): tests mint their own tokens.
listener.name.sasl_ssl.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub="$SASL_ADMIN";
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="$SASL_ADMIN" password="$SASL_ADMIN_PASSWORD" user_$SASL_ADMIN="$SASL_ADMIN_PASSWORD" user_$SASL_USER="$SASL_PASSWORD";
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PKCS12
ssl.keystore.location=$s/broker.p12
ssl.keystore.password=$STORE_PASSWORD
ssl.key.password=$STORE_PASSWORD
ssl.truststore.type=PEM
ssl.truststore.location=$s/ca.pem
ssl.client.auth=none
# Sessions expire after 10 s, so long-lived SASL connections must
# re-authenticate (KIP-368) during the tests.
connections.max.reauth.ms=$SASL_REAUTH_MS
EOF
	fi
	if [[ -n $EXTRA_BROKER_CONFIG ]]; then
		printf '# EXTRA_BROKER_CONFIG\n%s\n' "$EXTRA_BROKER_CONFIG" >>"$dir/server.properties"
	fi
}

# make_certs: a throw-away CA and one broker certificate for 127.0.0.1 and
# localhost (openssl), a PKCS12 broker keystore, and a PKCS12 truststore for
# Java clients (keytool). PEM files for Go, librdkafka and Python clients.
make_certs() {
	need openssl "apt-get install openssl"
	need keytool "install a JDK 17"
	local s=$RUN_DIR/secure log=$RUN_DIR/secure/certs.log
	mkdir -p "$s"
	{
		openssl req -x509 -newkey rsa:2048 -nodes -keyout "$s/ca.key" -out "$s/ca.pem" -days 30 \
			-subj "/CN=Switchyard Test CA" \
			-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" &&
			openssl req -newkey rsa:2048 -nodes -keyout "$s/broker.key" -out "$s/broker.csr" -subj "/CN=localhost" &&
			printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n' >"$s/broker.ext" &&
			openssl x509 -req -in "$s/broker.csr" -CA "$s/ca.pem" -CAkey "$s/ca.key" -CAcreateserial \
				-out "$s/broker.pem" -days 30 -extfile "$s/broker.ext" &&
			openssl pkcs12 -export -in "$s/broker.pem" -inkey "$s/broker.key" -certfile "$s/ca.pem" \
				-name broker -out "$s/broker.p12" -passout "pass:$STORE_PASSWORD" &&
			keytool -importcert -noprompt -alias switchyard-test-ca -file "$s/ca.pem" \
				-keystore "$s/truststore.p12" -storetype PKCS12 -storepass "$STORE_PASSWORD"
	} >"$log" 2>&1 || die "cannot create the test CA and broker certificate; see $log"
	local mech
	for mech in SCRAM-SHA-256 SCRAM-SHA-512 PLAIN; do
		local lm
		lm=$(tr 'A-Z-' 'a-z-' <<<"$mech")
		local module=org.apache.kafka.common.security.scram.ScramLoginModule
		[[ $mech == PLAIN ]] && module=org.apache.kafka.common.security.plain.PlainLoginModule
		cat >"$s/client-$lm.properties" <<EOF
# Java client settings for the SASL_SSL listener of the test bed ($mech).
security.protocol=SASL_SSL
sasl.mechanism=$mech
sasl.jaas.config=$module required username="$SASL_USER" password="$SASL_PASSWORD";
ssl.truststore.type=PKCS12
ssl.truststore.location=$s/truststore.p12
ssl.truststore.password=$STORE_PASSWORD
EOF
	done
}

# diagnose CLUSTER: explain why a cluster's brokers are not up, naming the log.
diagnose() {
	local cluster=$1 d p log out cause
	for d in "$RUN_DIR/$cluster"/b*; do
		log=$d/logs/server.log
		out=$d/logs/stdout.log
		p=$(cat "$d/pid" 2>/dev/null || echo 0)
		cause=""
		if grep -qsE 'Address already in use|BindException' "$log" "$out"; then
			cause="could not bind a port: $(cat "$log" "$out" 2>/dev/null | grep -oE '(Socket server failed to bind to [^:]+:[0-9]+|Address already in use[^.]*)' | head -1 || true)"
		elif grep -qsE 'ConfigException|Invalid value|Missing required configuration' "$log" "$out"; then
			cause="bad configuration: $(cat "$log" "$out" 2>/dev/null | grep -oE '(ConfigException|Invalid value|Missing required configuration)[^(]*' | head -1 || true)"
		elif grep -qsE 'OutOfMemoryError' "$log" "$out"; then
			cause="ran out of heap (KAFKA_HEAP_OPTS=$KAFKA_HEAP_OPTS)"
		fi
		if ! alive "$p"; then
			say "broker $cluster/$(basename "$d") exited${cause:+: $cause}; see $log (and $out)"
		elif [[ -n $cause ]]; then
			say "broker $cluster/$(basename "$d") is running but $cause; see $log"
		else
			say "broker $cluster/$(basename "$d") is running (pid $p) but the cluster did not answer; see $log"
		fi
		if [[ -s $log ]] && grep -qE 'ERROR|FATAL' "$log"; then
			grep -E 'ERROR|FATAL' "$log" | tail -3 | cut -c1-400 | sed 's/^/    /' >&2
		elif [[ -s $out ]]; then
			tail -5 "$out" | cut -c1-400 | sed 's/^/    /' >&2
		fi
	done
}

UP_OK=0
on_up_exit() {
	local rc=$?
	((UP_OK)) && return 0
	say "start failed; stopping every JVM started for $STATE_DIR"
	down >/dev/null 2>&1 || true
	local left
	left=$(marker_pids | tr '\n' ' ')
	[[ -z $left ]] || say "warning: JVMs still running: $left"
	exit $((rc == 0 ? 1 : rc))
}

up() {
	check_version
	[[ $SOURCE_BROKERS =~ ^[1-9][0-9]*$ && $TARGET_BROKERS =~ ^[1-9][0-9]*$ ]] ||
		die "SOURCE_BROKERS=$SOURCE_BROKERS TARGET_BROKERS=$TARGET_BROKERS: want positive numbers"
	[[ $START_TIMEOUT =~ ^[0-9]+$ ]] || die "START_TIMEOUT=$START_TIMEOUT: want seconds"
	need "$JAVA" "install a JDK 17 (apt-get install openjdk-17-jdk-headless)"
	need pgrep "apt-get install procps"

	# authz names the broker configuration's generation: a test bed started
	# by an older script (no authorizer) is not reused.
	local want="version=$KAFKA_VERSION source=$SOURCE_BROKERS target=$TARGET_BROKERS secure=$SECURE base=$BASE_PORT authz=standard extra=$(printf '%s' "$EXTRA_BROKER_CONFIG" | cksum | cut -d' ' -f1)"
	if [[ -n $(marker_pids) ]]; then
		if [[ -f $ENV_FILE && -f $CONF_FILE ]] && grep -qxF "want=$want" "$CONF_FILE" && status >/dev/null 2>&1; then
			say "already up (Kafka $KAFKA_VERSION); stop it with: make kafka-down"
			cat "$ENV_FILE"
			return 0
		fi
		say "a test bed with other settings (or a broken one) is running: stopping it first"
		down
	fi

	fetch
	build_helpers

	trap on_up_exit EXIT
	local t0=$SECONDS
	rm -rf "$RUN_DIR" "$ENV_FILE"
	mkdir -p "$RUN_DIR"
	local total=$((SOURCE_BROKERS + TARGET_BROKERS))
	allocate_ports $((total * 3))
	[[ $SECURE == 1 ]] && make_certs

	# Layout: broker k (source first, then target) uses PORTS[3k] for clients,
	# PORTS[3k+1] for its controller and PORTS[3k+2] for SASL_SSL.
	local cluster n i k=0 voters dir
	declare -gA BOOT=() SECBOOT=() CLUSTER_PIDS=()
	for cluster in source target; do
		n=$SOURCE_BROKERS
		[[ $cluster == target ]] && n=$TARGET_BROKERS
		voters=""
		for ((i = 1; i <= n; i++)); do
			voters+="${voters:+,}$i@127.0.0.1:${PORTS[$(((k + i - 1) * 3 + 1))]}"
		done
		local cid
		cid=$(cluster_id)
		for ((i = 1; i <= n; i++)); do
			dir=$RUN_DIR/$cluster/b$i
			mkdir -p "$dir/data" "$dir/logs"
			write_broker_config "$cluster" "$i" "$dir" "${PORTS[$((k * 3))]}" "${PORTS[$((k * 3 + 1))]}" "${PORTS[$((k * 3 + 2))]}" "$voters" "$n"
			echo "$cid" >"$dir/cluster-id"
			BOOT[$cluster]+="${BOOT[$cluster]:+,}127.0.0.1:${PORTS[$((k * 3))]}"
			SECBOOT[$cluster]+="${SECBOOT[$cluster]:+,}127.0.0.1:${PORTS[$((k * 3 + 2))]}"
			k=$((k + 1))
		done
	done
	{
		echo "version=$KAFKA_VERSION"
		echo "secure=$SECURE"
		echo "want=$want"
		echo "source=${BOOT[source]}"
		echo "target=${BOOT[target]}"
	} >"$CONF_FILE"

	# Format every broker's storage, in parallel.
	local scram=()
	if [[ $SECURE == 1 ]]; then
		local m u
		for m in SCRAM-SHA-256 SCRAM-SHA-512; do
			for u in "$SASL_USER=$SASL_PASSWORD" "$SASL_ADMIN=$SASL_ADMIN_PASSWORD"; do
				scram+=(--add-scram "$m=[name=${u%%=*},password=${u#*=}]")
			done
		done
	fi
	local fpids=() fdirs=()
	for dir in "$RUN_DIR"/source/b* "$RUN_DIR"/target/b*; do
		# Short-lived: C1 only starts faster.
		java_args "$dir/logs/format.log" WARN "-Xmx256m -XX:TieredStopAtLevel=1"
		"$JAVA" "${JARGS[@]}" kafka.tools.StorageTool format -t "$(<"$dir/cluster-id")" \
			-c "$dir/server.properties" "${scram[@]}" >"$dir/logs/format.out" 2>&1 &
		fpids+=($!)
		fdirs+=("$dir")
	done
	local failed=0
	for i in "${!fpids[@]}"; do
		if ! wait "${fpids[$i]}"; then
			dir=${fdirs[$i]}
			failed=1
			local why
			why=$(grep -hvE '^(SLF4J|\s*at )' "$dir/logs/format.out" | grep -E 'Exception|Error|rror:|Invalid|Missing' | head -2 | cut -c1-300 || true)
			say "formatting ${dir#"$RUN_DIR"/} failed${why:+: $why}; see $dir/logs/format.out"
		fi
	done
	((failed == 0)) || die "cannot format broker storage (Kafka $KAFKA_VERSION); read the log named above, config in $RUN_DIR/*/b*/server.properties"
	say "formatted $total brokers in $((SECONDS - t0))s"

	# Start the brokers, each in its own session so a Ctrl-C at the terminal
	# does not reach them.
	for cluster in source target; do
		CLUSTER_PIDS[$cluster]=""
		for dir in "$RUN_DIR/$cluster"/b*; do
			java_args "$dir/logs/server.log" OFF "$KAFKA_HEAP_OPTS"
			setsid "$JAVA" "${JARGS[@]}" kafka.Kafka "$dir/server.properties" \
				>"$dir/logs/stdout.log" 2>&1 </dev/null &
			echo $! >"$dir/pid"
			CLUSTER_PIDS[$cluster]+="${CLUSTER_PIDS[$cluster]:+,}$!"
		done
	done

	# Wait for both clusters at once.
	local wpids=() rc=0
	for cluster in source target; do
		n=$SOURCE_BROKERS
		[[ $cluster == target ]] && n=$TARGET_BROKERS
		"$BIN_DIR/waitkafka" -name "$cluster" -bootstrap "${BOOT[$cluster]}" -brokers "$n" \
			-timeout "${START_TIMEOUT}s" -pids "${CLUSTER_PIDS[$cluster]}" >"$RUN_DIR/wait-$cluster.log" 2>&1 &
		wpids+=($!)
	done
	local wrc=()
	for i in 0 1; do
		rc=0
		wait "${wpids[$i]}" || rc=$?
		wrc+=("$rc")
	done
	failed=0
	for i in 0 1; do
		cluster=$([[ $i == 0 ]] && echo source || echo target)
		if [[ ${wrc[$i]} != 0 ]]; then
			failed=1
			say "$(tail -1 "$RUN_DIR/wait-$cluster.log")"
			case ${wrc[$i]} in
			1) say "the $cluster cluster did not answer Metadata with all brokers within START_TIMEOUT=${START_TIMEOUT}s" ;;
			3) say "a broker of the $cluster cluster exited during start" ;;
			esac
			diagnose "$cluster"
		else
			cat "$RUN_DIR/wait-$cluster.log" >&2
		fi
	done
	((failed == 0)) || die "Kafka $KAFKA_VERSION test bed did not start; see the broker logs named above (all under $RUN_DIR)"

	if [[ $SECURE == 1 ]]; then
		for cluster in source target; do
			"$BIN_DIR/waitkafka" -q -name "$cluster SASL_SSL" -bootstrap "${SECBOOT[$cluster]}" -brokers 1 -timeout 60s \
				-tls-ca "$RUN_DIR/secure/ca.pem" -sasl SCRAM-SHA-512 -user "$SASL_USER" -password "$SASL_PASSWORD" ||
				{
					diagnose "$cluster"
					die "the SASL_SSL listener of the $cluster cluster does not accept a SCRAM-SHA-512 login"
				}
		done
	fi

	local tmp=$ENV_FILE.tmp
	{
		echo "# Written by testbed/kafka.sh up at $(date -u +%FT%TZ). Source it: . $ENV_FILE"
		echo "export SWITCHYARD_TEST_KAFKA=real"
		echo "export SWITCHYARD_TEST_KAFKA_VERSION=$KAFKA_VERSION"
		echo "export SWITCHYARD_TEST_SOURCE=${BOOT[source]}"
		echo "export SWITCHYARD_TEST_TARGET=${BOOT[target]}"
		echo "export SWITCHYARD_TEST_STATE_DIR=$STATE_DIR"
		echo "export SWITCHYARD_TEST_KAFKA_LIB=$LIB_DIR"
		if [[ $SECURE == 1 ]]; then
			local s=$RUN_DIR/secure
			echo "export SWITCHYARD_TEST_SOURCE_SASL_SSL=${SECBOOT[source]}"
			echo "export SWITCHYARD_TEST_TARGET_SASL_SSL=${SECBOOT[target]}"
			echo "export SWITCHYARD_TEST_SASL_MECHANISMS=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN,OAUTHBEARER"
			echo "export SWITCHYARD_TEST_SASL_REAUTH_MS=$SASL_REAUTH_MS"
			echo "export SWITCHYARD_TEST_SASL_USER=$SASL_USER"
			echo "export SWITCHYARD_TEST_SASL_PASSWORD=$SASL_PASSWORD"
			echo "export SWITCHYARD_TEST_CA_PEM=$s/ca.pem"
			echo "export SWITCHYARD_TEST_TRUSTSTORE=$s/truststore.p12"
			echo "export SWITCHYARD_TEST_TRUSTSTORE_PASSWORD=$STORE_PASSWORD"
			echo "export SWITCHYARD_TEST_CLIENT_PROPERTIES=$s/client-scram-sha-512.properties"
		fi
	} >"$tmp"
	mv "$tmp" "$ENV_FILE"
	UP_OK=1
	trap - EXIT
	say "Kafka $KAFKA_VERSION up in $((SECONDS - t0))s: source ${BOOT[source]} ($SOURCE_BROKERS brokers), target ${BOOT[target]} ($TARGET_BROKERS)$([[ $SECURE == 1 ]] && echo ", SASL_SSL source ${SECBOOT[source]} target ${SECBOOT[target]}")"
	say "logs: $RUN_DIR/<cluster>/b<N>/logs/server.log; env: $ENV_FILE"
	cat "$ENV_FILE"
}

# -------------------------------------------------------------------- tools

# load_env: the running test bed's settings, and its Kafka version (the jars
# of the running brokers serve the tools too).
load_env() {
	[[ -f $ENV_FILE ]] || return 1
	# shellcheck disable=SC1090
	. "$ENV_FILE"
	if [[ -z ${KAFKA_VERSION_SET:-} ]]; then
		KAFKA_VERSION=$SWITCHYARD_TEST_KAFKA_VERSION
		LIB_DIR=$CACHE_DIR/$KAFKA_VERSION/lib
	fi
}

default_bootstrap() {
	if [[ -z ${BOOTSTRAP:-} ]]; then
		load_env || die "BOOTSTRAP is not set and the test bed is not up (no $ENV_FILE): run make kafka-up or pass BOOTSTRAP=host:port"
		BOOTSTRAP=$SWITCHYARD_TEST_SOURCE
	else
		load_env || true
	fi
}

# run_tool NAME CLASS ARGS...: a Kafka tool in the foreground.
run_tool() {
	local name=$1
	shift
	fetch
	mkdir -p "$STATE_DIR/logs"
	java_args "$STATE_DIR/logs/$name.log" WARN "$TOOLS_HEAP_OPTS"
	"$JAVA" "${JARGS[@]}" "$@"
}

perf_producer() {
	default_bootstrap
	local topic=${TOPIC:-switchyard-perf} num=${NUM_RECORDS:-100000} size=${RECORD_SIZE:-1024}
	local args=(--topic "$topic" --num-records "$num" --record-size "$size" --throughput "${THROUGHPUT:--1}")
	if [[ $(major) == 3 ]]; then
		args+=(--producer-props "bootstrap.servers=$BOOTSTRAP" "acks=${ACKS:-all}")
		[[ -z ${CLIENT_CONFIG:-} ]] || args+=(--producer.config "$CLIENT_CONFIG")
	else
		args+=(--bootstrap-server "$BOOTSTRAP" --command-property "acks=${ACKS:-all}")
		[[ -z ${CLIENT_CONFIG:-} ]] || args+=(--command-config "$CLIENT_CONFIG")
	fi
	say "ProducerPerformance (Kafka $KAFKA_VERSION): $num x $size B to $topic at $BOOTSTRAP"
	# shellcheck disable=SC2086
	run_tool perf-producer org.apache.kafka.tools.ProducerPerformance "${args[@]}" ${PERF_ARGS:-}
}

perf_consumer() {
	default_bootstrap
	local topic=${TOPIC:-switchyard-perf} num=${NUM_RECORDS:-100000}
	local args=(--bootstrap-server "$BOOTSTRAP" --topic "$topic" --timeout "${PERF_TIMEOUT_MS:-60000}")
	if [[ $(major) == 3 ]]; then
		args+=(--messages "$num")
		[[ -z ${CLIENT_CONFIG:-} ]] || args+=(--consumer.config "$CLIENT_CONFIG")
	else
		args+=(--num-records "$num")
		[[ -z ${CLIENT_CONFIG:-} ]] || args+=(--command-config "$CLIENT_CONFIG")
	fi
	[[ -z ${GROUP:-} ]] || args+=(--group "$GROUP")
	say "ConsumerPerformance (Kafka $KAFKA_VERSION): $num records from $topic at $BOOTSTRAP"
	# shellcheck disable=SC2086
	run_tool perf-consumer org.apache.kafka.tools.ConsumerPerformance "${args[@]}" ${PERF_ARGS:-}
}

perf_e2e() {
	default_bootstrap
	local topic=${TOPIC:-switchyard-e2e} num=${NUM_RECORDS:-10000} size=${RECORD_SIZE:-512}
	local args=("$BOOTSTRAP" "$topic" "$num" "${ACKS:-all}" "$size")
	[[ -z ${CLIENT_CONFIG:-} ]] || args+=("$CLIENT_CONFIG")
	# EndToEndLatency creates a missing topic itself but then races its
	# metadata ("Consumer is not subscribed to any topics"): create it first.
	local targs=(--bootstrap-server "$BOOTSTRAP" --create --if-not-exists --topic "$topic" --partitions 1 --replication-factor 1)
	[[ -z ${CLIENT_CONFIG:-} ]] || targs+=(--command-config "$CLIENT_CONFIG")
	run_tool perf-e2e org.apache.kafka.tools.TopicCommand "${targs[@]}" >/dev/null
	say "EndToEndLatency (Kafka $KAFKA_VERSION): $num x $size B through $topic at $BOOTSTRAP"
	run_tool perf-e2e org.apache.kafka.tools.EndToEndLatency "${args[@]}"
}

# mirrormaker: MirrorMaker 2 (dedicated mode) from the source to the target
# cluster, in the foreground until Ctrl-C or MM2_DURATION seconds.
mirrormaker() {
	load_env || die "the test bed is not up (no $ENV_FILE): run make kafka-up first"
	fetch
	local d=$STATE_DIR/mm2
	mkdir -p "$d"
	local src=${MM2_SOURCE:-$SWITCHYARD_TEST_SOURCE} dst=${MM2_TARGET:-$SWITCHYARD_TEST_TARGET}
	local interval=${MM2_INTERVAL_SECONDS:-5}
	cat >"$d/mm2.properties" <<EOF
# Generated by testbed/kafka.sh mirrormaker.
clusters=source,target
source.bootstrap.servers=$src
target.bootstrap.servers=$dst
source->target.enabled=true
target->source.enabled=false
source->target.topics=${MM2_TOPICS:-.*}
source->target.groups=${MM2_GROUPS:-.*}
replication.policy.class=org.apache.kafka.connect.mirror.IdentityReplicationPolicy
sync.group.offsets.enabled=true
sync.group.offsets.interval.seconds=$interval
emit.checkpoints.enabled=true
emit.checkpoints.interval.seconds=$interval
emit.heartbeats.interval.seconds=$interval
refresh.topics.interval.seconds=$interval
refresh.groups.interval.seconds=$interval
sync.topic.configs.enabled=true
sync.topic.acls.enabled=false
tasks.max=${MM2_TASKS:-2}
replication.factor=1
checkpoints.topic.replication.factor=1
heartbeats.topic.replication.factor=1
offset-syncs.topic.replication.factor=1
offset.storage.replication.factor=1
status.storage.replication.factor=1
config.storage.replication.factor=1
# Read from the start of topics that exist before MirrorMaker starts.
source->target.consumer.auto.offset.reset=earliest
${MM2_EXTRA:-}
EOF
	java_args "$d/mm2.log" WARN "${MM2_HEAP_OPTS:--Xmx512m}"
	say "MirrorMaker 2 (Kafka $KAFKA_VERSION): source $src -> target $dst, topics '${MM2_TOPICS:-.*}', groups '${MM2_GROUPS:-.*}'"
	say "config $d/mm2.properties, log $d/mm2.log; ${MM2_DURATION:+runs ${MM2_DURATION}s, }Ctrl-C stops it"
	# Warnings and errors show on the terminal; everything is in mm2.log.
	"$JAVA" "${JARGS[@]}" org.apache.kafka.connect.mirror.MirrorMaker "$d/mm2.properties" \
		>>"$d/mm2.out" </dev/null &
	local pid=$! stop=0
	echo "$pid" >"$d/pid"
	trap 'stop=1' INT TERM
	local start=$SECONDS
	while alive "$pid"; do
		((stop)) && break
		if [[ -n ${MM2_DURATION:-} ]] && ((SECONDS - start >= MM2_DURATION)); then
			break
		fi
		sleep 1 || true
	done
	trap - INT TERM
	if alive "$pid"; then
		say "MirrorMaker 2 ran $((SECONDS - start))s; stopping it (pid $pid)"
		stop_pids "$pid"
		rm -f "$d/pid"
		say "MirrorMaker 2 stopped; log $d/mm2.log"
		return 0
	fi
	rm -f "$d/pid"
	local rc=0
	wait "$pid" || rc=$?
	grep -E 'ERROR' "$d/mm2.log" | tail -3 | cut -c1-300 | sed 's/^/    /' >&2 || true
	die "MirrorMaker 2 exited by itself (status $rc) after $((SECONDS - start))s; see $d/mm2.log and $d/mm2.out"
}

# streams_lib prints a lib dir holding Kafka Streams and its examples
# (WordCountDemo, internal/streamsbed) for a KAFKA_VERSION test bed: the
# bed's own on 4.x; on 3.x, which has no kafka-streams-examples on Maven
# Central, the newest supported 4.x's, resolved if needed.
streams_lib() {
	check_version
	local v=$KAFKA_VERSION
	if [[ $(major) != 4 ]]; then
		v=$(tr ' ' '\n' <<<"$SUPPORTED_VERSIONS" | grep '^4\.' | head -1)
		[[ -n $v ]] || die "no supported Kafka 4.x to run Kafka Streams from (supported: $SUPPORTED_VERSIONS)"
	fi
	KAFKA_VERSION=$v "${BASH_SOURCE[0]}" fetch
	echo "$CACHE_DIR/$v/lib"
}

usage() {
	cat <<EOF
usage: testbed/kafka.sh COMMAND

  up              start the source (SOURCE_BROKERS=3) and target (TARGET_BROKERS=1)
                  clusters and write $ENV_FILE
  down            stop every JVM of the test bed (TERM, then KILL after STOP_TIMEOUT)
  status          what runs (exit 0 all up, 1 partly, 3 nothing)
  restart-broker CLUSTER N
                  stop broker bN of CLUSTER (source|target) with TERM (a controlled
                  shutdown) and start it again; returns once it has rejoined
  env             print the env file (eval "\$(testbed/kafka.sh env)")
  mirrormaker     MirrorMaker 2 source -> target in the foreground (MM2_DURATION=s)
  perf-producer   ProducerPerformance  (BOOTSTRAP, TOPIC, NUM_RECORDS, RECORD_SIZE, ACKS)
  perf-consumer   ConsumerPerformance  (BOOTSTRAP, TOPIC, NUM_RECORDS, GROUP)
  perf-e2e        EndToEndLatency      (BOOTSTRAP, TOPIC, NUM_RECORDS, RECORD_SIZE, ACKS)
  fetch           resolve the jars of KAFKA_VERSION only
  streams-lib     print a lib dir with Kafka Streams' examples for a KAFKA_VERSION
                  test bed (on 3.x: the newest supported 4.x's, resolved if needed)
  versions        newest 3.9.x and 4.x on Maven Central with every needed artifact
  java CLASS ...  run any class from the Kafka $KAFKA_VERSION jars

settings: KAFKA_VERSION ($SUPPORTED_VERSIONS; default $DEFAULT_VERSION), SECURE=1 (SASL_SSL
listener), BASE_PORT (fixed ports from here; default: free ports), SOURCE_BROKERS,
TARGET_BROKERS, KAFKA_HEAP_OPTS ($KAFKA_HEAP_OPTS), KAFKA_JVM_OPTS, START_TIMEOUT
($START_TIMEOUT s), STOP_TIMEOUT ($STOP_TIMEOUT s), STATE_DIR, CACHE_DIR, M2_REPO, MVN_ARGS,
EXTRA_BROKER_CONFIG (lines appended to every server.properties), CLIENT_CONFIG (client
properties file for the perf tools, e.g. \$SWITCHYARD_TEST_CLIENT_PROPERTIES).
EOF
}

cmd=${1:-help}
shift || true
case "$cmd" in
up) up ;;
down) down ;;
status) status ;;
restart-broker) restart_broker "$@" ;;
env) env_cmd ;;
fetch) fetch ;;
streams-lib) streams_lib ;;
versions) versions ;;
supported) echo "$SUPPORTED_VERSIONS" ;;
mirrormaker | mm2) mirrormaker ;;
perf-producer) perf_producer ;;
perf-consumer) perf_consumer ;;
perf-e2e) perf_e2e ;;
java)
	[[ $# -ge 1 ]] || die "usage: kafka.sh java CLASS [ARGS...]"
	run_tool java "$@"
	;;
help | -h | --help) usage ;;
*)
	usage >&2
	die "unknown command: $cmd"
	;;
esac
