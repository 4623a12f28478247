#!/usr/bin/env bash
# bench/mirror/bench-mirror.sh: our mirror against MirrorMaker 2 on the same
# two real Kafka clusters and the same topic, in one run (make bench-mirror;
# see BENCHMARKS.md, "Mirror: switchyard mirror vs MirrorMaker 2"):
#
#   1. uses the running test bed (testbed/.state/env, or BENCH_MIRROR_ENV) if
#      both clusters answer, otherwise starts one with testbed/kafka.sh up in
#      a state dir of its own and stops it at the end;
#   2. fills a fresh source topic (a new name every run) with
#      BENCH_MIRROR_MB MiB of BENCH_MIRROR_RECORD-byte records, compressed
#      with BENCH_MIRROR_COMPRESSION by a franz-go producer (mirrorbench fill),
#      and commits offsets for a consumer group at half of every partition;
#   3. copies that topic with each tool of BENCH_MIRROR_TOOLS, one after the
#      other, never at once (mirrorbench run):
#        mm2         MirrorMaker 2, dedicated mode, the test bed's settings
#                    (testbed/kafka.sh mirrormaker), IdentityReplicationPolicy,
#                    only this topic and this group, cluster aliases unique to
#                    the run, producer compression BENCH_MIRROR_COMPRESSION;
#        switchyard  `switchyard mirror --config` with topic prefix
#                    BENCH_MIRROR_PREFIX (so it writes another target topic);
#      measuring the time until the first record is visible on the target and
#      until the target holds every record, and the CPU seconds of the tool's
#      process tree (/proc/PID/stat) at both moments; then stops the tool;
#   4. reads the source and both copies back to the end and compares counts
#      and keys+values per partition (mirrorbench verify), and runs
#      `switchyard verify` for our copy;
#   5. prints the report and writes it, the JSON of every step and every log
#      to BENCH_MIRROR_OUT; deletes the run's topics and groups.
#
# Everything it starts runs in a process group of its own; a trap stops all
# of it on exit, on failure and on SIGINT/SIGTERM.
#
# Settings (environment; make variables on the command line reach it):
#   BENCH_MIRROR_MB           MiB of record values in the topic (512)
#   BENCH_MIRROR_PARTITIONS   partitions (8)
#   BENCH_MIRROR_RECORD       bytes per record value (1024; each record also has a 16-byte key)
#   BENCH_MIRROR_COMPRESSION  codec of the source producer and of MM2's producer (lz4)
#   BENCH_MIRROR_BATCH_BYTES  source producer batch cap before compression (16384, the
#                             Java producer's default batch.size)
#   BENCH_MIRROR_LINGER_MS    source producer linger (5, the Java producer's 4.x default)
#   BENCH_MIRROR_REPLICATION  replication factor of the source topic (1)
#   BENCH_MIRROR_TOOLS        tools to run, in this order ("mm2 switchyard")
#   BENCH_MIRROR_PREFIX       target topic prefix of our mirror (sy.)
#   BENCH_MIRROR_MM2_TASKS    MirrorMaker 2 tasks.max (2, as the test bed)
#   BENCH_MIRROR_MM2_HEAP     MirrorMaker 2 JVM heap (-Xmx512m, as the test bed)
#   BENCH_MIRROR_MM2_EXTRA    more MM2 property lines; @SRC@ and @TGT@ stand for the
#                             run's cluster aliases (e.g. "@TGT@.producer.batch.size=262144")
#   BENCH_MIRROR_SY_EXTRA     more lines for our mirror's YAML (e.g. "txnMaxRecords: 50000")
#   BENCH_MIRROR_SY_LOG_LEVEL our mirror's --log-level (info, its default)
#   BENCH_MIRROR_SWITCHYARD_REV  build our mirror from this git commit (git archive into
#                             bench/out/mirror/src-<rev>) instead of the working tree, e.g.
#                             HEAD to leave uncommitted engine changes out
#   BENCH_MIRROR_PERF=1       perf record -g our mirror from its first record written to the
#                             end, and print its top functions (BENCH_MIRROR_PERF_FREQ Hz, 999)
#   BENCH_MIRROR_VERIFY=0     skip reading the topics back
#   BENCH_MIRROR_KEEP=1       keep the topics and groups (default: delete them)
#   BENCH_MIRROR_TIMEOUT      seconds allowed per copy (900)
#   BENCH_MIRROR_ENV          env file of a running test bed (default testbed/.state/env)
#   BENCH_MIRROR_OWN_TESTBED=1  always start a test bed of its own (and stop it at the end)
#   BENCH_MIRROR_STATE        state dir of a test bed it starts (bench/out/mirror-state)
#   BENCH_MIRROR_OUT          output dir (bench/out/mirror/<run id>; bench/out/mirror/latest links it)
#   KAFKA_VERSION             Kafka of a test bed it starts (newest supported 4.x); with a
#                             running test bed, its version
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD

KAFKA_SH=$ROOT/testbed/kafka.sh
MB=${BENCH_MIRROR_MB:-512}
PARTITIONS=${BENCH_MIRROR_PARTITIONS:-8}
RECORD=${BENCH_MIRROR_RECORD:-1024}
COMPRESSION=${BENCH_MIRROR_COMPRESSION:-lz4}
BATCH_BYTES=${BENCH_MIRROR_BATCH_BYTES:-16384}
LINGER_MS=${BENCH_MIRROR_LINGER_MS:-5}
REPLICATION=${BENCH_MIRROR_REPLICATION:-1}
TOOLS=${BENCH_MIRROR_TOOLS:-mm2 switchyard}
PREFIX=${BENCH_MIRROR_PREFIX:-sy.}
MM2_TASKS=${BENCH_MIRROR_MM2_TASKS:-2}
MM2_HEAP=${BENCH_MIRROR_MM2_HEAP:--Xmx512m}
MM2_EXTRA=${BENCH_MIRROR_MM2_EXTRA:-}
SY_EXTRA=${BENCH_MIRROR_SY_EXTRA:-}
SY_LOG_LEVEL=${BENCH_MIRROR_SY_LOG_LEVEL:-info}
PERF=${BENCH_MIRROR_PERF:-0}
PERF_FREQ=${BENCH_MIRROR_PERF_FREQ:-999}
SY_REV=${BENCH_MIRROR_SWITCHYARD_REV:-}
VERIFY=${BENCH_MIRROR_VERIFY:-1}
KEEP=${BENCH_MIRROR_KEEP:-0}
TIMEOUT=${BENCH_MIRROR_TIMEOUT:-900}
ENV_FILE=${BENCH_MIRROR_ENV:-}
OWN_TESTBED=${BENCH_MIRROR_OWN_TESTBED:-0}
STATE=${BENCH_MIRROR_STATE:-$ROOT/bench/out/mirror-state}
RUN_ID=$(date -u +%Y%m%d%H%M%S)$$
OUT_ROOT=$ROOT/bench/out/mirror
OUT=${BENCH_MIRROR_OUT:-$OUT_ROOT/$RUN_ID}
case "$STATE" in /*) ;; *) STATE=$ROOT/$STATE ;; esac
case "$OUT" in /*) ;; *) OUT=$ROOT/$OUT ;; esac

say() { printf 'bench-mirror: %s\n' "$*" >&2; }
die() {
	printf 'bench-mirror: error: %s\n' "$*" >&2
	exit 1
}

for v in MB PARTITIONS RECORD BATCH_BYTES REPLICATION MM2_TASKS TIMEOUT PERF_FREQ; do
	[[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "BENCH_MIRROR_$v=${!v}: want a positive number"
done
[[ $LINGER_MS =~ ^[0-9]+$ ]] || die "BENCH_MIRROR_LINGER_MS=$LINGER_MS: want a number"
[[ $PREFIX =~ ^[A-Za-z0-9._-]+$ ]] || die "BENCH_MIRROR_PREFIX=$PREFIX: want characters of [A-Za-z0-9._-]"
for t in $TOOLS; do
	[[ $t == mm2 || $t == switchyard ]] || die "BENCH_MIRROR_TOOLS: unknown tool $t (want mm2 and/or switchyard)"
done
for c in go java getconf nproc; do
	command -v "$c" >/dev/null || die "$c not found on PATH"
done
if [[ $PERF == 1 ]]; then command -v perf >/dev/null || die "BENCH_MIRROR_PERF=1 needs perf on PATH"; fi

# ------------------------------------------------------------- processes

STARTED_TESTBED=0 # 1 once we ran kafka.sh up for our own state dir
CHILD_PID=""      # the running step, in a session of its own
TOOL_PIDFILE=""   # the tool's process group id, written by mirrorbench run
CLEAN_ARGS=()     # mirrorbench cleanup arguments, once there is something to delete
MM2_STATE=$OUT/mm2-state

alive() { kill -0 "$1" 2>/dev/null && ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$1/stat" 2>/dev/null; }

# group_alive PGID: a process of that group runs (zombies do not count).
group_alive() { ps -eo pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ {found = 1} END {exit !found}'; }

# stop_group PID: TERM the process group PID leads, KILL what is left of it
# after 40 s (mirrorbench run gives its tool 30 s to stop).
stop_group() {
	local pid=$1 i
	[[ -n $pid ]] || return 0
	kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < 400; i++)); do
		group_alive "$pid" || break
		sleep 0.1
	done
	kill -KILL -- "-$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

# marker_pids: JVMs that kafka.sh started with this run's MirrorMaker state
# dir (-Dswitchyard.testbed=<dir>, unique to the run).
marker_pids() {
	local pat
	# shellcheck disable=SC2016 # a sed expression, not shell
	pat=$(printf '%s' "-Dswitchyard.testbed=$MM2_STATE" | sed 's/[][\.*^$(){}+?|]/\\&/g')
	pgrep -f -- "$pat( |\$)" || true
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	set +e
	if [[ -n $CHILD_PID ]]; then
		say "stopping the running step (pid $CHILD_PID)"
		stop_group "$CHILD_PID"
	fi
	if [[ -n $TOOL_PIDFILE && -s $TOOL_PIDFILE ]]; then
		local tp
		tp=$(<"$TOOL_PIDFILE")
		# The group may outlive its leader (kafka.sh's shell around the JVM).
		if group_alive "$tp"; then
			say "stopping the tool (process group $tp)"
			stop_group "$tp"
		fi
	fi
	local left
	left=$(marker_pids | tr '\n' ' ')
	if [[ -n ${left// /} ]]; then
		say "stopping left-over MirrorMaker JVMs: $left"
		# shellcheck disable=SC2086
		kill -KILL $left 2>/dev/null
	fi
	if ((${#CLEAN_ARGS[@]})) && [[ $KEEP != 1 ]]; then
		say "deleting the run's topics and groups"
		"$BIN/mirrorbench" cleanup "${CLEAN_ARGS[@]}" >"$OUT/cleanup.log" 2>&1 ||
			say "warning: cleanup incomplete; see $OUT/cleanup.log"
	fi
	if ((STARTED_TESTBED)); then
		say "stopping the test bed in $STATE"
		STATE_DIR=$STATE "$KAFKA_SH" down >/dev/null 2>&1
		rm -rf "$STATE"/run/*/b*/data
	fi
	((rc == 0)) || say "failed (status $rc); logs in $OUT"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# step LOG CMD...: run CMD in a session of its own, stdout to LOG, stderr to
# LOG.err; `wait` lets a trapped signal through at once.
step() {
	local log=$1
	shift
	setsid "$@" >"$log" 2>"$log.err" </dev/null &
	CHILD_PID=$!
	local rc=0
	wait "$CHILD_PID" || rc=$?
	CHILD_PID=""
	return "$rc"
}

# ------------------------------------------------------------- build

mkdir -p "$OUT"
ln -sfn "$OUT" "$OUT_ROOT/latest" 2>/dev/null || true
BIN=$OUT_ROOT/bin
mkdir -p "$BIN"
T0=$SECONDS
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
say "run $RUN_ID, output in $OUT"
go build -o "$BIN/mirrorbench" ./bench/mirror/cmd/mirrorbench || die "cannot build ./bench/mirror/cmd/mirrorbench"
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $SY_REV ]]; then
	rev=$(git rev-parse --short "$SY_REV^{commit}" 2>/dev/null) || die "BENCH_MIRROR_SWITCHYARD_REV=$SY_REV: not a commit"
	src=$OUT_ROOT/src-$rev
	if [[ ! -f $src/go.mod ]]; then
		rm -rf "$src"
		mkdir -p "$src"
		git archive "$rev" | tar -x -C "$src" || die "cannot extract commit $rev into $src"
	fi
	say "building switchyard from commit $rev ($src)"
	(cd "$src" && go build -o "$BIN/switchyard-$rev" ./cmd/switchyard) || die "cannot build ./cmd/switchyard of commit $rev"
	SY_BIN=$BIN/switchyard-$rev
	SY_DESC="commit $rev (BENCH_MIRROR_SWITCHYARD_REV=$SY_REV)"
else
	say "building switchyard from the working tree"
	go build -o "$BIN/switchyard" ./cmd/switchyard || die "cannot build ./cmd/switchyard"
	SY_BIN=$BIN/switchyard
	DIRTY=$(git status --porcelain -- mirror cmd 2>/dev/null | wc -l)
	SY_DESC="the working tree at $COMMIT"
	((DIRTY == 0)) || SY_DESC+=" with $DIRTY uncommitted files under mirror/ and cmd/"
fi

# ------------------------------------------------------------- test bed

# answers ENVFILE: both clusters of that env file answer Metadata.
answers() {
	(
		# shellcheck disable=SC1090
		. "$1"
		"$BIN/mirrorbench" ping -source "$SWITCHYARD_TEST_SOURCE" -target "$SWITCHYARD_TEST_TARGET" -timeout 10s
	) >/dev/null 2>&1
}

if [[ $OWN_TESTBED != 1 && -n $ENV_FILE ]]; then
	case "$ENV_FILE" in /*) ;; *) ENV_FILE=$ROOT/$ENV_FILE ;; esac
	[[ -f $ENV_FILE ]] || die "BENCH_MIRROR_ENV=$ENV_FILE: no such file"
	answers "$ENV_FILE" || die "the test bed of $ENV_FILE does not answer"
	say "using the test bed of $ENV_FILE"
elif [[ $OWN_TESTBED != 1 && -f $ROOT/testbed/.state/env ]] && answers "$ROOT/testbed/.state/env"; then
	ENV_FILE=$ROOT/testbed/.state/env
	say "using the running test bed (testbed/.state/env)"
else
	if [[ $OWN_TESTBED == 1 ]]; then say "starting a test bed of its own in $STATE (testbed/kafka.sh up)"; else say "no running test bed: starting one in $STATE (testbed/kafka.sh up)"; fi
	STARTED_TESTBED=1
	mkdir -p "$STATE"
	env STATE_DIR="$STATE" "$KAFKA_SH" up >"$OUT/kafka-up.log" 2>&1 ||
		die "testbed/kafka.sh up failed; see $OUT/kafka-up.log: $(tail -3 "$OUT/kafka-up.log")"
	ENV_FILE=$STATE/env
fi
# shellcheck disable=SC1090
. "$ENV_FILE"
SOURCE=$SWITCHYARD_TEST_SOURCE
TARGET=$SWITCHYARD_TEST_TARGET
TB_STATE=$SWITCHYARD_TEST_STATE_DIR
if [[ -n ${KAFKA_VERSION:-} && $KAFKA_VERSION != "$SWITCHYARD_TEST_KAFKA_VERSION" ]]; then
	say "note: the test bed runs Kafka $SWITCHYARD_TEST_KAFKA_VERSION; MirrorMaker 2 runs from the $KAFKA_VERSION jars"
else
	KAFKA_VERSION=$SWITCHYARD_TEST_KAFKA_VERSION
fi
pids_of() { cat "$TB_STATE"/run/"$1"/b*/pid 2>/dev/null | paste -sd, -; }
SOURCE_PIDS=$(pids_of source)
TARGET_PIDS=$(pids_of target)
say "Kafka $KAFKA_VERSION: source $SOURCE (broker pids $SOURCE_PIDS), target $TARGET ($TARGET_PIDS)"

# ------------------------------------------------------------- names

TOPIC=benchmirror-$RUN_ID
GROUP=benchmirror-$RUN_ID-app
SY_NAME=benchmirror-$RUN_ID
SY_TOPIC=$PREFIX$TOPIC
SRC_ALIAS=bmsrc$RUN_ID
TGT_ALIAS=bmtgt$RUN_ID
CLEAN_ARGS=(-source "$SOURCE" -target "$TARGET"
	-source-topics "$TOPIC" -target-topics "$TOPIC,$SY_TOPIC,__switchyard_mirror_$SY_NAME"
	-source-match ".*($SRC_ALIAS|$TGT_ALIAS).*" -target-match ".*($SRC_ALIAS|$TGT_ALIAS).*"
	-groups "$GROUP|.*($SRC_ALIAS|$TGT_ALIAS).*")

# ------------------------------------------------------------- fill

say "filling $TOPIC: $MB MiB of $RECORD-byte records, $PARTITIONS partitions, $COMPRESSION, batches ≤ $BATCH_BYTES B, linger $LINGER_MS ms"
step "$OUT/fill.json" "$BIN/mirrorbench" fill -source "$SOURCE" -topic "$TOPIC" -partitions "$PARTITIONS" \
	-replication "$REPLICATION" -mib "$MB" -record "$RECORD" -compression "$COMPRESSION" \
	-batch-bytes "$BATCH_BYTES" -linger "${LINGER_MS}ms" -group "$GROUP" -json - ||
	die "fill failed: $(tail -5 "$OUT/fill.json.err")"
say "filled: $(grep -E '"(records|seconds|mb_per_s)"' "$OUT/fill.json" | tr -d ' \n')"

# ------------------------------------------------------------- tools

mm2_config() {
	cat <<EOF
# bench-mirror: the settings of testbed/kafka.sh mirrormaker, with cluster
# aliases unique to this run, only the benchmark's topic and group, and the
# producer codec of the source topic.
clusters=$SRC_ALIAS,$TGT_ALIAS
$SRC_ALIAS.bootstrap.servers=$SOURCE
$TGT_ALIAS.bootstrap.servers=$TARGET
$SRC_ALIAS->$TGT_ALIAS.enabled=true
$TGT_ALIAS->$SRC_ALIAS.enabled=false
$SRC_ALIAS->$TGT_ALIAS.topics=$TOPIC
$SRC_ALIAS->$TGT_ALIAS.groups=$GROUP
replication.policy.class=org.apache.kafka.connect.mirror.IdentityReplicationPolicy
sync.group.offsets.enabled=true
sync.group.offsets.interval.seconds=5
emit.checkpoints.enabled=true
emit.checkpoints.interval.seconds=5
emit.heartbeats.interval.seconds=5
refresh.topics.interval.seconds=5
refresh.groups.interval.seconds=5
sync.topic.configs.enabled=true
sync.topic.acls.enabled=false
tasks.max=$MM2_TASKS
replication.factor=1
checkpoints.topic.replication.factor=1
heartbeats.topic.replication.factor=1
offset-syncs.topic.replication.factor=1
offset.storage.replication.factor=1
status.storage.replication.factor=1
config.storage.replication.factor=1
$SRC_ALIAS->$TGT_ALIAS.consumer.auto.offset.reset=earliest
$TGT_ALIAS.producer.compression.type=$COMPRESSION
EOF
	if [[ -n $MM2_EXTRA ]]; then
		printf '%s\n' "$MM2_EXTRA" | sed -e "s/@SRC@/$SRC_ALIAS/g" -e "s/@TGT@/$TGT_ALIAS/g"
	fi
}

sy_config() {
	cat <<EOF
# bench-mirror: our mirror of the benchmark topic, under a prefix.
name: $SY_NAME
sourceBootstrap: [${SOURCE//,/, }]
targetBootstrap: [${TARGET//,/, }]
topics:
  include: ["$TOPIC"]
  prefix: "$PREFIX"
groups: ["$GROUP"]
EOF
	if [[ -n $SY_EXTRA ]]; then printf '%s\n' "$SY_EXTRA"; fi
}

# run_tool NAME: copy the topic with one tool, measured by mirrorbench run.
run_tool() {
	local tool=$1 ttopic status=() perf=() cmd=()
	case $tool in
	mm2)
		ttopic=$TOPIC
		mkdir -p "$MM2_STATE"
		mm2_config >"$OUT/mm2.properties"
		cmd=(env STATE_DIR="$MM2_STATE" KAFKA_VERSION="$KAFKA_VERSION" TOOLS_HEAP_OPTS="$MM2_HEAP"
			"$KAFKA_SH" java org.apache.kafka.connect.mirror.MirrorMaker "$OUT/mm2.properties")
		;;
	switchyard)
		ttopic=$SY_TOPIC
		sy_config >"$OUT/switchyard.yaml"
		local port
		port=$("$BIN/mirrorbench" port)
		status=(-status "http://127.0.0.1:$port/v1/status")
		[[ $PERF == 1 ]] && perf=(-perf "$OUT/switchyard.perf.data" -perf-freq "$PERF_FREQ")
		cmd=("$SY_BIN" mirror --config "$OUT/switchyard.yaml" --http "127.0.0.1:$port" --log-level "$SY_LOG_LEVEL")
		;;
	esac
	say "$tool: copying $TOPIC → $ttopic"
	TOOL_PIDFILE=$OUT/$tool.pid
	step "$OUT/run-$tool.json" "$BIN/mirrorbench" run -tool "$tool" -source "$SOURCE" -target "$TARGET" \
		-topic "$TOPIC" -target-topic "$ttopic" "${status[@]}" "${perf[@]}" -timeout "${TIMEOUT}s" \
		-log "$OUT/$tool.log" -pid-file "$TOOL_PIDFILE" -source-pids "$SOURCE_PIDS" -target-pids "$TARGET_PIDS" \
		-json - -- "${cmd[@]}" ||
		die "$tool: the copy failed: $(tail -20 "$OUT/run-$tool.json.err")"
	TOOL_PIDFILE=""
	say "$(tail -1 "$OUT/run-$tool.json.err")"
}

RUNS=()
for tool in $TOOLS; do
	run_tool "$tool"
	RUNS+=(-run "$tool=$OUT/run-$tool.json")
done

# ------------------------------------------------------------- verify

VERIFY_ARGS=()
SYV="not run"
if [[ $VERIFY == 1 ]]; then
	copies=""
	for tool in $TOOLS; do
		t=$TOPIC
		[[ $tool == switchyard ]] && t=$SY_TOPIC
		copies+="${copies:+,}$tool=$t"
	done
	say "reading back the source and the copies ($copies)"
	if ! step "$OUT/verify.json" "$BIN/mirrorbench" verify -source "$SOURCE" -target "$TARGET" -topic "$TOPIC" -copies "$copies" -json -; then
		cat "$OUT/verify.json.err" >&2
		[[ -s $OUT/verify.json ]] || die "verify failed: $(tail -5 "$OUT/verify.json.err")"
		say "warning: a copy differs from the source; the report shows which"
	fi
	sed 's/^/  /' "$OUT/verify.json.err" >&2
	VERIFY_ARGS=(-verify "$OUT/verify.json")
	if [[ " $TOOLS " == *" switchyard "* ]]; then
		if step "$OUT/switchyard-verify.txt" "$SY_BIN" verify --source "$SOURCE" --target "$TARGET" \
			--mirror "$SY_NAME" --topics "$TOPIC" --prefix "$PREFIX"; then
			SYV="passed: $(tail -1 "$OUT/switchyard-verify.txt")"
		else
			SYV="FAILED (see $OUT/switchyard-verify.txt): $(tail -1 "$OUT/switchyard-verify.txt") $(tail -1 "$OUT/switchyard-verify.txt.err")"
		fi
		say "switchyard verify: $SYV"
	fi
fi

# ------------------------------------------------------------- profile

PERF_TOP=""
if [[ $PERF == 1 && -f $OUT/switchyard.perf.data ]]; then
	PERF_TOP=$OUT/switchyard-perf-top.txt
	{
		echo "perf report --no-children (self time, top 40):"
		# head closes the pipe early; with pipefail that SIGPIPE would fail the script.
		perf report -i "$OUT/switchyard.perf.data" --no-children --sort dso,symbol --stdio -g none 2>/dev/null | grep '%' | sed 's/ *- *- *$//' | head -40 || true
		echo
		echo "perf report --children (inclusive, Go symbols, top 40):"
		perf report -i "$OUT/switchyard.perf.data" --children --sort symbol --stdio -g none 2>/dev/null | grep '%' | grep -v '\[k\]' | sed 's/ *- *- *$//' | head -40 || true
	} >"$PERF_TOP"
fi

# ------------------------------------------------------------- report

REPORT=$OUT/report.md
JAVA_VERSION=$(java -version 2>&1 | head -1)
{
	echo "## bench-mirror: $(date -u +%FT%TZ), run $RUN_ID"
	echo
	echo "Machine: $(nproc) CPUs, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(awk '/^MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), Linux $(uname -r); $(go version | cut -d' ' -f3-); $JAVA_VERSION; load average $LOAD_BEFORE at the start."
	echo "Kafka $KAFKA_VERSION (test bed: source ${SOURCE//,/, } = $(tr -cd ',' <<<"$SOURCE" | wc -c | awk '{print $1 + 1}') brokers, target $TARGET$( ((STARTED_TESTBED)) && echo ", started by this run" || echo ", already running"))."
	echo "switchyard built from $SY_DESC."
	echo
	# shellcheck disable=SC2016 # the quotes are literal text; the variables do expand
	echo "Command: \`BENCH_MIRROR_MB=$MB BENCH_MIRROR_PARTITIONS=$PARTITIONS BENCH_MIRROR_RECORD=$RECORD BENCH_MIRROR_COMPRESSION=$COMPRESSION BENCH_MIRROR_BATCH_BYTES=$BATCH_BYTES BENCH_MIRROR_LINGER_MS=$LINGER_MS BENCH_MIRROR_TOOLS='$TOOLS'${SY_REV:+ BENCH_MIRROR_SWITCHYARD_REV=$SY_REV}${MM2_EXTRA:+ BENCH_MIRROR_MM2_EXTRA='$MM2_EXTRA'}${SY_EXTRA:+ BENCH_MIRROR_SY_EXTRA='$SY_EXTRA'} make bench-mirror\`"
	echo
	echo "Source topic \`$TOPIC\`: $(awk -F': *' '/"records"/ {gsub(/,/, "", $2); r = $2} /"mb_per_s"/ {gsub(/,/, "", $2); m = $2} /"seconds"/ {gsub(/,/, "", $2); s = $2} END {printf "%d records, filled in %.1f s (%.0f MB/s)", r, s, m}' "$OUT/fill.json"), replication $REPLICATION, franz-go producer: $COMPRESSION, batches ≤ $BATCH_BYTES B before compression, linger $LINGER_MS ms, acks=all. MirrorMaker 2: \`$OUT/mm2.properties\` (tasks.max=$MM2_TASKS, $MM2_HEAP). Ours: \`$OUT/switchyard.yaml\`, target topic \`$SY_TOPIC\`."
	echo
	"$BIN/mirrorbench" report -fill "$OUT/fill.json" "${VERIFY_ARGS[@]}" "${RUNS[@]}"
	[[ " $TOOLS " == *" switchyard "* ]] && echo "\`switchyard verify\` of our copy: $SYV" && echo
	[[ -n $PERF_TOP ]] && echo "Profile of our mirror (perf, first record to done): \`$PERF_TOP\`" && echo
	echo "Total time $((SECONDS - T0)) s. Files: $OUT."
} >"$REPORT"
cat "$REPORT"
[[ -n $PERF_TOP ]] && cat "$PERF_TOP"
say "report: $REPORT"
