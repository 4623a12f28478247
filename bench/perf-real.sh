#!/usr/bin/env bash
# bench/perf-real.sh: what the Switchyard proxy costs on real Apache Kafka, in
# one run (make bench-proxy-real; see BENCHMARKS.md, "Real Apache Kafka"):
#
#   1. starts the real-Kafka test bed (testbed/kafka.sh up, newest supported
#      4.x) in a state dir of its own, or uses a running one named by
#      PERF_REAL_ENV (an env file written by kafka.sh up);
#   2. runs the franz-go driver, bin/benchproxy -bootstrap <source>, which
#      starts a proxy of its own;
#   3. starts `switchyard proxy` in front of the source cluster and runs
#      Kafka's own perf tools (kafka-tools: ProducerPerformance,
#      ConsumerPerformance, EndToEndLatency, through testbed/kafka.sh) direct
#      and through the proxy, alternating, PERF_RUNS times each, reading the
#      proxy's CPU (utime+stime from /proc/PID/stat) around every proxied run;
#   4. prints one Markdown table (tool, metric, direct, proxied, ratio) and
#      writes it, every tool's output and the proxy's log to PERF_REAL_OUT.
#
# Everything it starts (test bed JVMs, proxy, tools) is stopped when it exits,
# also on an error or on SIGINT/SIGTERM.
#
# Settings (environment; make variables on the command line reach it):
#   PERF_REAL_ENV      env file of a running test bed to use (default: start one)
#   PERF_REAL_STATE    state dir of the test bed it starts (bench/out/perf-real-state)
#   PERF_REAL_OUT      output dir (bench/out/perf-real)
#   KAFKA_VERSION      Kafka version of the test bed it starts (newest supported 4.x)
#   BENCH_MB, BENCH_RUNS, BENCH_FLAGS   franz-go driver: MiB per run, runs per mode, more flags (256, 3)
#   PERF_RUNS          runs per mode of each Kafka tool (3)
#   PERF_RECORDS       ProducerPerformance / ConsumerPerformance records (500000)
#   PERF_RECORD_SIZE   bytes per record (1024)
#   PERF_ACKS          producer acks (all)
#   PERF_PARTITIONS    partitions of the perf topics (6)
#   PERF_REPLICATION   replication factor of the perf topics (1)
#   E2E_MESSAGES       EndToEndLatency messages (5000)
#   PERF_PRODUCER_PROPS more producer properties for ProducerPerformance, e.g.
#                      "batch.size=1048576 linger.ms=10" (default: the client's)
#   SKIP_FRANZ=1       skip the franz-go driver
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

KAFKA_SH=$ROOT/testbed/kafka.sh
STATE=${PERF_REAL_STATE:-$ROOT/bench/out/perf-real-state}
OUT=${PERF_REAL_OUT:-$ROOT/bench/out/perf-real}
case "$STATE" in /*) ;; *) STATE=$ROOT/$STATE ;; esac
case "$OUT" in /*) ;; *) OUT=$ROOT/$OUT ;; esac
BENCH_MB=${BENCH_MB:-256}
BENCH_RUNS=${BENCH_RUNS:-3}
BENCH_FLAGS=${BENCH_FLAGS:-}
PERF_RUNS=${PERF_RUNS:-3}
PERF_RECORDS=${PERF_RECORDS:-500000}
PERF_RECORD_SIZE=${PERF_RECORD_SIZE:-1024}
PERF_ACKS=${PERF_ACKS:-all}
PERF_PARTITIONS=${PERF_PARTITIONS:-6}
PERF_REPLICATION=${PERF_REPLICATION:-1}
E2E_MESSAGES=${E2E_MESSAGES:-5000}
PERF_PRODUCER_PROPS=${PERF_PRODUCER_PROPS:-}
SKIP_FRANZ=${SKIP_FRANZ:-0}

say() { printf 'perf-real: %s\n' "$*" >&2; }
die() {
	printf 'perf-real: error: %s\n' "$*" >&2
	exit 1
}

for v in BENCH_MB BENCH_RUNS PERF_RUNS PERF_RECORDS PERF_RECORD_SIZE PERF_PARTITIONS PERF_REPLICATION E2E_MESSAGES; do
	[[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v=${!v}: want a positive number"
done
for c in curl ss jq awk getconf; do
	command -v "$c" >/dev/null || die "$c not found on PATH"
done

# ------------------------------------------------------------- processes

STARTED_TESTBED=0 # 1 once we ran kafka.sh up for our own state dir
PROXY_PID=""
CHILD_PID="" # the foreground step, in a process group (session) of its own

# alive PID: running and not a zombie.
alive() { kill -0 "$1" 2>/dev/null && ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$1/stat" 2>/dev/null; }

# stop_group PID: TERM the process group PID leads, KILL it after 10 s.
stop_group() {
	local pid=$1 i
	[[ -n $pid ]] || return 0
	kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < 100; i++)); do
		alive "$pid" || break
		sleep 0.1
	done
	kill -KILL -- "-$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

# tool_pids: JVMs started by kafka.sh for our state dir (tools run with it
# even when the test bed is someone else's).
tool_pids() {
	local pat
	pat=$(printf '%s' "-Dswitchyard.testbed=$STATE" | sed 's/[][\.*^$(){}+?|]/\\&/g')
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
	if [[ -n $PROXY_PID ]]; then
		stop_group "$PROXY_PID"
	fi
	if ((STARTED_TESTBED)); then
		say "stopping the test bed in $STATE"
		STATE_DIR=$STATE "$KAFKA_SH" down >/dev/null 2>&1
		# Keep the broker logs for reading, drop the GBs of topic data.
		[[ -n $(tool_pids) ]] || rm -rf "$STATE"/run/*/b*/data
	fi
	local left
	left=$(tool_pids | tr '\n' ' ')
	if [[ -n $left ]]; then
		say "stopping left-over JVMs: $left"
		kill -KILL $left 2>/dev/null
	fi
	((rc == 0)) || say "failed (status $rc); logs in $OUT"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# step LOG CMD...: run CMD in a session of its own (so cleanup can stop it
# and everything it started), stdout to LOG, stderr to LOG.err. The script
# waits with `wait`, which a trapped signal interrupts at once.
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

# ------------------------------------------------------------- measuring

TICKS=$(getconf CLK_TCK)

# proc_cpu PID: utime+stime in clock ticks (fields 14 and 15 of stat; the
# command name in parentheses may contain spaces, so count after the ')').
proc_cpu() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
proc_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }

# proxy_counters: wire bytes (requests + responses, all API keys), requests,
# Produce requests and Fetch requests the proxy counted so far.
proxy_counters() {
	curl -sf "http://$ADMIN/metrics" | awk '
		/^switchyard_proxy_(request|response)_bytes_total\{/ { w += $NF }
		/^switchyard_proxy_requests_total\{/ { r += $NF }
		/^switchyard_proxy_requests_total\{.*api_key="Produce"/ { p += $NF }
		/^switchyard_proxy_requests_total\{.*api_key="Fetch"/ { f += $NF }
		END { printf "%.0f %.0f %.0f %.0f\n", w, r, p, f }'
}

# free_block N: first port of N consecutive free loopback ports below the
# ephemeral range (the proxy's virtual broker k listens on base+k).
free_block() {
	local n=$1 lo hi base p ok tries
	lo=20000
	hi=$(awk '{print $1 - 1}' /proc/sys/net/ipv4/ip_local_port_range)
	((hi > lo + 1000)) || hi=32000
	for ((tries = 0; tries < 100; tries++)); do
		base=$((lo + RANDOM % (hi - lo - n)))
		ok=1
		for ((p = base; p < base + n; p++)); do
			if [[ -n $(ss -Hltn "sport = :$p") ]]; then
				ok=0
				break
			fi
		done
		((ok)) && {
			echo "$base"
			return 0
		}
	done
	die "no block of $n free ports"
}

# ------------------------------------------------------------- test bed

mkdir -p "$OUT"
rm -rf "$OUT"/franz-logs "$OUT"/franz.json "$OUT"/franz.md
rm -f "$OUT"/*.out "$OUT"/*.err "$OUT"/*.log "$OUT"/*.tsv "$OUT"/*.killed "$OUT"/*.failed "$OUT"/incidents.txt
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
T0=$SECONDS
say "building bin/switchyard, bin/proxybench, bin/benchproxy"
go build -o bin/switchyard ./cmd/switchyard
go build -o bin/proxybench ./bench/cmd/proxybench
go build -o bin/benchproxy ./bench/cmd/benchproxy

if [[ -n ${PERF_REAL_ENV:-} ]]; then
	[[ -f $PERF_REAL_ENV ]] || die "PERF_REAL_ENV=$PERF_REAL_ENV: no such file"
	# shellcheck disable=SC1090
	. "$PERF_REAL_ENV"
	say "using the running test bed of $PERF_REAL_ENV (Kafka $SWITCHYARD_TEST_KAFKA_VERSION)"
else
	if [[ -z ${KAFKA_VERSION:-} ]]; then
		KAFKA_VERSION=$(tr ' ' '\n' <<<"$("$KAFKA_SH" supported)" | grep -m1 '^4\.') ||
			die "no supported 4.x version in testbed/kafka.sh"
	fi
	[[ -z $(tool_pids) ]] || die "JVMs of $STATE already run ($(tool_pids | tr '\n' ' ')); stop them: STATE_DIR=$STATE testbed/kafka.sh down"
	say "starting the test bed (Kafka $KAFKA_VERSION) in $STATE"
	STARTED_TESTBED=1
	t=$SECONDS
	rc=0
	step "$OUT/kafka-up.out" env STATE_DIR="$STATE" KAFKA_VERSION="$KAFKA_VERSION" "$KAFKA_SH" up || rc=$?
	if ((rc != 0)) && grep -q 'cluster-id/-t: expected one argument' "$OUT/kafka-up.out.err"; then
		# kafka.sh's random cluster id starts with '-' one time in 64, and
		# kafka-storage then takes it for an option: try again.
		say "warning: kafka.sh up drew a cluster id starting with '-' (kafka-storage refuses it); starting again"
		echo "kafka.sh up: random cluster id began with '-', storage format refused it; retried" >>"$OUT/incidents.txt"
		mv "$OUT/kafka-up.out.err" "$OUT/kafka-up.out.err.failed"
		rc=0
		step "$OUT/kafka-up.out" env STATE_DIR="$STATE" KAFKA_VERSION="$KAFKA_VERSION" "$KAFKA_SH" up || rc=$?
	fi
	((rc == 0)) ||
		{
			cat "$OUT/kafka-up.out.err" >&2
			die "the test bed did not start; see $OUT/kafka-up.out.err"
		}
	UP_SECONDS=$((SECONDS - t))
	# shellcheck disable=SC1091
	. "$STATE/env"
	say "test bed up in ${UP_SECONDS}s: source $SWITCHYARD_TEST_SOURCE"
fi
SOURCE=$SWITCHYARD_TEST_SOURCE
export KAFKA_VERSION=$SWITCHYARD_TEST_KAFKA_VERSION
NBROKERS=$(tr ',' '\n' <<<"$SOURCE" | wc -l)

# ------------------------------------------------------------- franz-go

FRANZ_SECONDS=0
if [[ $SKIP_FRANZ != 1 ]]; then
	say "franz-go driver: bin/benchproxy -bootstrap $SOURCE -mb $BENCH_MB -runs $BENCH_RUNS $BENCH_FLAGS"
	t=$SECONDS
	# shellcheck disable=SC2086
	step "$OUT/franz.md" bin/benchproxy -bootstrap "$SOURCE" -mb "$BENCH_MB" -runs "$BENCH_RUNS" $BENCH_FLAGS \
		-json "$OUT/franz.json" -log-dir "$OUT/franz-logs" ||
		{
			tail -n 20 "$OUT/franz.md.err" >&2
			die "bin/benchproxy failed; see $OUT/franz.md.err and $OUT/franz-logs/"
		}
	FRANZ_SECONDS=$((SECONDS - t))
	say "franz-go driver done in ${FRANZ_SECONDS}s"
fi

# ------------------------------------------------------------- proxy

PORT=$(free_block $((NBROKERS + 3)))
LISTEN=127.0.0.1:$PORT
ADMIN=127.0.0.1:$(free_block 1)
say "starting switchyard proxy on $LISTEN (admin $ADMIN) in front of $SOURCE"
setsid bin/switchyard proxy --cluster "source=$SOURCE" --active source \
	--listen "$LISTEN" --admin "$ADMIN" --log-level warn >"$OUT/proxy.log" 2>&1 </dev/null &
PROXY_PID=$!
for ((i = 0; ; i++)); do
	alive "$PROXY_PID" || die "the proxy exited at start; see $OUT/proxy.log: $(tail -3 "$OUT/proxy.log")"
	[[ $(curl -s -o /dev/null -w '%{http_code}' "http://$ADMIN/readyz" || true) == 200 ]] && break
	((i < 300)) || die "the proxy was not ready within 30 s; see $OUT/proxy.log"
	sleep 0.1
done
PROXY_IDLE_RSS_KB=$(proc_kb "$PROXY_PID" VmRSS)

# ------------------------------------------------------------- Kafka tools

# Results, one line per measurement: tool mode run metric value.
RES=$OUT/results.tsv
: >"$RES"
rec() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RES"; }

addr_of() { [[ $1 == direct ]] && echo "$SOURCE" || echo "$LISTEN"; }

# measured TOOL MODE RUN BYTES LOG CMD...: run a tool step, and for proxied
# runs record the proxy's CPU seconds and wire bytes around it.
measured() {
	local tool=$1 mode=$2 run=$3 bytes=$4 log=$5
	shift 5
	local c0 w0 r0 p0 f0 rc=0
	c0=$(proc_cpu "$PROXY_PID")
	read -r w0 r0 p0 f0 < <(proxy_counters)
	step "$log" "$@" || rc=$?
	if ((rc == 143 || rc == 137)); then
		# Killed by a signal that did not come from this script (its own
		# signals end it in cleanup). On the shared machine that has
		# happened; retry once and say so in the report.
		say "warning: $tool $mode run $run was killed from outside (signal $((rc - 128))); retrying it once"
		echo "$tool $mode run $run: killed from outside (signal $((rc - 128))) and retried" >>"$OUT/incidents.txt"
		mv "$log" "$log.killed"
		mv "$log.err" "$log.err.killed"
		c0=$(proc_cpu "$PROXY_PID")
		read -r w0 r0 p0 f0 < <(proxy_counters)
		rc=0
		step "$log" "$@" || rc=$?
	fi
	if ((rc != 0)); then
		say "$tool $mode run $run FAILED (status $rc); output:"
		tail -n 30 "$log" "$log.err" >&2
		((rc == 143 || rc == 137)) && say "the tool was killed from outside (signal $((rc - 128)))"
		if ((STARTED_TESTBED)) && [[ ! -f $STATE/env ]]; then
			say "$STATE/env is gone: something else ran kafka.sh down on this script's test bed"
		fi
		if [[ $mode == proxied ]]; then
			say "proxy log ($OUT/proxy.log), last lines:"
			tail -n 30 "$OUT/proxy.log" >&2
		fi
		die "$tool failed $mode; see $log, $log.err and $OUT/proxy.log"
	fi
	alive "$PROXY_PID" || die "the proxy died during $tool $mode run $run; see $OUT/proxy.log"
	local c1 w1 r1 p1 f1
	c1=$(proc_cpu "$PROXY_PID")
	read -r w1 r1 p1 f1 < <(proxy_counters)
	rec "$tool" "$mode" "$run" proxy_cpu_s "$(awk -v a="$c0" -v b="$c1" -v t="$TICKS" 'BEGIN {printf "%.3f", (b - a) / t}')"
	rec "$tool" "$mode" "$run" proxy_wire_bytes "$((w1 - w0))"
	rec "$tool" "$mode" "$run" proxy_requests "$((r1 - r0))"
	rec "$tool" "$mode" "$run" proxy_produce_requests "$((p1 - p0))"
	rec "$tool" "$mode" "$run" proxy_fetch_requests "$((f1 - f0))"
	rec "$tool" "$mode" "$run" bytes "$bytes"
}

kafka_tool() { env STATE_DIR="$STATE" KAFKA_VERSION="$KAFKA_VERSION" "$KAFKA_SH" "$@"; }

BYTES=$((PERF_RECORDS * PERF_RECORD_SIZE))
TAG=$$
t=$SECONDS
for ((run = 1; run <= PERF_RUNS; run++)); do
	order="direct proxied"
	((run % 2 == 0)) && order="proxied direct"
	for mode in $order; do
		addr=$(addr_of "$mode")
		topic=perfreal-$TAG-$run-$mode
		# The topic is created and deleted directly (franz-go, no JVM start).
		step "$OUT/create-$run-$mode.log" bin/proxybench -bootstrap "$SOURCE" -topic "$topic" -phases create \
			-partitions "$PERF_PARTITIONS" -replication "$PERF_REPLICATION" ||
			die "cannot create $topic: $(cat "$OUT/create-$run-$mode.log.err")"

		say "run $run/$PERF_RUNS $mode: ProducerPerformance $PERF_RECORDS x $PERF_RECORD_SIZE B acks=$PERF_ACKS via $addr"
		log=$OUT/producer-$run-$mode.out
		pargs=""
		if [[ -n $PERF_PRODUCER_PROPS ]]; then
			# A repeated option replaces the wrapper's, so repeat acks too.
			if [[ ${KAFKA_VERSION%%.*} == 3 ]]; then
				pargs="--producer-props bootstrap.servers=$addr acks=$PERF_ACKS $PERF_PRODUCER_PROPS"
			else
				pargs="--command-property acks=$PERF_ACKS $PERF_PRODUCER_PROPS"
			fi
		fi
		measured producer "$mode" "$run" "$BYTES" "$log" env BOOTSTRAP="$addr" TOPIC="$topic" \
			NUM_RECORDS="$PERF_RECORDS" RECORD_SIZE="$PERF_RECORD_SIZE" ACKS="$PERF_ACKS" THROUGHPUT=-1 \
			PERF_ARGS="$pargs" "$KAFKA_SH" perf-producer
		# Final line: "N records sent, R records/sec (M MB/sec), A ms avg latency,
		# X ms max latency, P50 ms 50th, P95 ms 95th, P99 ms 99th, P999 ms 99.9th."
		line=$(grep -E 'records sent.*50th' "$log" | tail -1) || die "no ProducerPerformance summary in $log"
		read -r n rps mbps avg max p50 p95 p99 p999 < <(sed -E 's/^([0-9]+) records sent, ([0-9.]+) records\/sec \(([0-9.]+) MB\/sec\), ([0-9.]+) ms avg latency, ([0-9.]+) ms max latency, ([0-9]+) ms 50th, ([0-9]+) ms 95th, ([0-9]+) ms 99th, ([0-9]+) ms 99.9th.*/\1 \2 \3 \4 \5 \6 \7 \8 \9/' <<<"$line")
		[[ $n == "$PERF_RECORDS" ]] || die "ProducerPerformance sent $n records, want $PERF_RECORDS: $line"
		rec producer "$mode" "$run" mb_per_s "$mbps"
		rec producer "$mode" "$run" records_per_s "$rps"
		rec producer "$mode" "$run" avg_ms "$avg"
		rec producer "$mode" "$run" p50_ms "$p50"
		rec producer "$mode" "$run" p99_ms "$p99"
		say "  $mbps MB/s, avg $avg ms, p99 $p99 ms"

		say "run $run/$PERF_RUNS $mode: ConsumerPerformance $PERF_RECORDS records via $addr"
		log=$OUT/consumer-$run-$mode.out
		measured consumer "$mode" "$run" "$BYTES" "$log" env BOOTSTRAP="$addr" TOPIC="$topic" \
			NUM_RECORDS="$PERF_RECORDS" GROUP="perfreal-$TAG-$run-$mode" PERF_TIMEOUT_MS=60000 \
			"$KAFKA_SH" perf-consumer
		# A header line "start.time, end.time, data.consumed.in.MB, MB.sec, ..."
		# and one line of values.
		vals=$(awk -F', *' '
			/^start\.time/ { for (i = 1; i <= NF; i++) col[$i] = i; hdr = 1; next }
			hdr && NF >= 10 { printf "%s %s %s %s %s %s\n", $col["data.consumed.in.nMsg"], $col["MB.sec"], $col["fetch.MB.sec"], $col["rebalance.time.ms"], $col["fetch.time.ms"], $col["data.consumed.in.MB"]; exit }
		' "$log")
		[[ -n $vals ]] || die "no ConsumerPerformance result in $log"
		read -r n mbps fmbps reb fetchms mb <<<"$vals"
		[[ $n == "$PERF_RECORDS" ]] || die "ConsumerPerformance consumed $n records, want $PERF_RECORDS (timeout?); see $log"
		rec consumer "$mode" "$run" mb_per_s "$mbps"
		rec consumer "$mode" "$run" fetch_mb_per_s "$fmbps"
		rec consumer "$mode" "$run" rebalance_ms "$reb"
		say "  $mbps MB/s ($fmbps MB/s fetching, ${reb} ms joining the group)"

		step "$OUT/delete-$run-$mode.log" bin/proxybench -bootstrap "$SOURCE" -topic "$topic" -phases delete ||
			say "warning: cannot delete $topic"
	done
	for mode in $order; do
		addr=$(addr_of "$mode")
		topic=perfreal-e2e-$TAG-$run-$mode
		say "run $run/$PERF_RUNS $mode: EndToEndLatency $E2E_MESSAGES x $PERF_RECORD_SIZE B acks=$PERF_ACKS via $addr"
		log=$OUT/e2e-$run-$mode.out
		# kafka.sh perf-e2e creates the 1-partition topic first (TopicCommand,
		# through the same address).
		measured e2e "$mode" "$run" $((E2E_MESSAGES * PERF_RECORD_SIZE)) "$log" env BOOTSTRAP="$addr" TOPIC="$topic" \
			NUM_RECORDS="$E2E_MESSAGES" RECORD_SIZE="$PERF_RECORD_SIZE" ACKS="$PERF_ACKS" \
			"$KAFKA_SH" perf-e2e
		# "Avg latency: A ms" and "Percentiles: 50th = X, 99th = Y, 99.9th = Z"
		avg=$(sed -nE 's/^Avg latency: ([0-9.]+) ms.*/\1/p' "$log" | tail -1)
		read -r p50 p99 p999 < <(sed -nE 's/^Percentiles: 50th = ([0-9.]+), 99th = ([0-9.]+), 99\.9th = ([0-9.]+).*/\1 \2 \3/p' "$log" | tail -1)
		[[ -n $avg && -n ${p99:-} ]] || die "no EndToEndLatency result in $log"
		rec e2e "$mode" "$run" avg_ms "$avg"
		rec e2e "$mode" "$run" p50_ms "$p50"
		rec e2e "$mode" "$run" p99_ms "$p99"
		rec e2e "$mode" "$run" p999_ms "$p999"
		say "  avg $avg ms, p50 $p50, p99 $p99, p99.9 $p999 ms"
		step "$OUT/delete-e2e-$run-$mode.log" bin/proxybench -bootstrap "$SOURCE" -topic "$topic" -phases delete ||
			say "warning: cannot delete $topic"
	done
done
TOOLS_SECONDS=$((SECONDS - t))
PROXY_PEAK_RSS_KB=$(proc_kb "$PROXY_PID" VmHWM)
PROXY_ERRORS=$(grep -ciE '"level":"(error|warn)"|\b(ERROR|WARN)\b' "$OUT/proxy.log" || true)
stop_group "$PROXY_PID"
PROXY_PID=""
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ------------------------------------------------------------- report

# med TOOL MODE METRIC: median over the runs.
med() {
	awk -F'\t' -v t="$1" -v m="$2" -v k="$3" '$1 == t && $2 == m && $4 == k {v[n++] = $5}
		END {
			if (n == 0) { print "n/a"; exit }
			for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (v[j] < v[i]) { x = v[i]; v[i] = v[j]; v[j] = x }
			print (n % 2) ? v[int(n / 2)] : (v[n / 2 - 1] + v[n / 2]) / 2
		}' "$RES"
}
# runs TOOL MODE METRIC: the values of every run, in run order.
runs() { awk -F'\t' -v t="$1" -v m="$2" -v k="$3" '$1 == t && $2 == m && $4 == k {printf "%s%s", s, $5; s = ", "}' "$RES"; }
# cpu_per_gb TOOL: proxied runs' proxy CPU-s / GB of record values.
cpu_per_gb() {
	awk -F'\t' -v t="$1" '$1 == t && $2 == "proxied" && $4 == "proxy_cpu_s" {c += $5}
		$1 == t && $2 == "proxied" && $4 == "bytes" {b += $5}
		END { if (b > 0) printf "%.2f", c / (b / 1e9); else print "n/a" }' "$RES"
}
# us_per_req TOOL: proxied runs' proxy CPU µs per request forwarded.
us_per_req() {
	awk -F'\t' -v t="$1" '$1 == t && $2 == "proxied" && $4 == "proxy_cpu_s" {c += $5}
		$1 == t && $2 == "proxied" && $4 == "proxy_requests" {r += $5}
		END { if (r > 0) printf "%.0f", c / r * 1e6; else print "n/a" }' "$RES"
}
# kib_per_produce: ProducerPerformance's mean Produce request size, KiB.
kib_per_produce() {
	awk -F'\t' '$1 == "producer" && $2 == "proxied" && $4 == "proxy_produce_requests" {p += $5}
		END { if (p > 0) printf "%.0f", '"$PERF_RUNS"' * '"$BYTES"' / 1024 / p; else print "n/a" }' "$RES"
}
ratio() { awk -v d="$1" -v p="$2" 'BEGIN { if (d + 0 > 0 && p != "n/a") printf "%.2f×", p / d; else print "n/a" }'; }
fmt() { awk -v x="$1" 'BEGIN { if (x == "n/a") print x; else if (x + 0 >= 100) printf "%.0f", x; else if (x + 0 >= 10) printf "%.1f", x; else printf "%.3g", x }'; }

TABLE=$OUT/table.md
{
	echo "| tool | metric | direct | proxied | proxied / direct |"
	echo "|---|---|---:|---:|---:|"
	row() { # tool metric direct proxied [note]
		printf '| %s | %s | %s | %s | %s |\n' "$1" "$2" "$(fmt "$3")" "$(fmt "$4")" "$(ratio "$3" "$4")${5:+ ($5)}"
	}
	if [[ $SKIP_FRANZ != 1 ]]; then
		J=$OUT/franz.json
		fm() { jq -r --arg m "$1" "[.runs[] | select(.mode == \$m) | $2] | sort | if length == 0 then \"n/a\" elif length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end" "$J"; }
		fr() { jq -r --arg m "$1" "[.runs[] | select(.mode == \$m) | $2 | tostring] | join(\", \")" "$J"; }
		F="franz-go proxybench ($BENCH_MB MiB × $BENCH_RUNS)"
		row "$F" "produce MB/s" "$(fm direct .produce.mb_per_s)" "$(fm proxied .produce.mb_per_s)"
		row "$F" "consume MB/s" "$(fm direct .consume.mb_per_s)" "$(fm proxied .consume.mb_per_s)"
		row "$F" "ProduceSync p50 ms" "$(fm direct .latency.p50_ms)" "$(fm proxied .latency.p50_ms)"
		row "$F" "ProduceSync p99 ms" "$(fm direct .latency.p99_ms)" "$(fm proxied .latency.p99_ms)"
		fcpu=$(jq -r '[.runs[] | select(.mode == "proxied") | .produce.proxy_cpu_s, .consume.proxy_cpu_s] | add' "$J")
		fbytes=$(jq -r '[.runs[] | select(.mode == "proxied") | .produce.bytes, .consume.bytes] | add' "$J")
		printf '| %s | proxy CPU-s per GB (produce + consume) | | %s | |\n' "$F" "$(awk -v c="$fcpu" -v b="$fbytes" 'BEGIN {printf "%.2f", c / (b / 1e9)}')"
		printf '| %s | proxy RSS idle / peak, MiB | | %s / %s | |\n' "$F" \
			"$(jq -r '.proxy_idle_rss_bytes / 1048576 * 10 | round / 10' "$J")" "$(jq -r '.proxy_peak_rss_bytes / 1048576 * 10 | round / 10' "$J")"
	fi
	P="ProducerPerformance ($PERF_RECORDS × $PERF_RECORD_SIZE B, acks=$PERF_ACKS${PERF_PRODUCER_PROPS:+, $PERF_PRODUCER_PROPS})"
	row "$P" "MB/s" "$(med producer direct mb_per_s)" "$(med producer proxied mb_per_s)"
	row "$P" "avg latency ms" "$(med producer direct avg_ms)" "$(med producer proxied avg_ms)"
	row "$P" "p99 latency ms" "$(med producer direct p99_ms)" "$(med producer proxied p99_ms)"
	printf '| %s | proxy CPU-s per GB | | %s | |\n' "$P" "$(cpu_per_gb producer)"
	printf '| %s | proxy CPU µs per request; KiB per Produce | | %s; %s | |\n' "$P" "$(us_per_req producer)" "$(kib_per_produce)"
	C="ConsumerPerformance ($PERF_RECORDS records, group)"
	row "$C" "MB/s (incl. group join)" "$(med consumer direct mb_per_s)" "$(med consumer proxied mb_per_s)"
	row "$C" "fetch MB/s (excl. join)" "$(med consumer direct fetch_mb_per_s)" "$(med consumer proxied fetch_mb_per_s)"
	row "$C" "group join ms" "$(med consumer direct rebalance_ms)" "$(med consumer proxied rebalance_ms)"
	printf '| %s | proxy CPU-s per GB | | %s | |\n' "$C" "$(cpu_per_gb consumer)"
	printf '| %s | proxy CPU µs per request | | %s | |\n' "$C" "$(us_per_req consumer)"
	E="EndToEndLatency ($E2E_MESSAGES × $PERF_RECORD_SIZE B, acks=$PERF_ACKS)"
	row "$E" "avg ms" "$(med e2e direct avg_ms)" "$(med e2e proxied avg_ms)"
	row "$E" "p50 ms" "$(med e2e direct p50_ms)" "$(med e2e proxied p50_ms)"
	row "$E" "p99 ms" "$(med e2e direct p99_ms)" "$(med e2e proxied p99_ms)"
	row "$E" "p99.9 ms" "$(med e2e direct p999_ms)" "$(med e2e proxied p999_ms)"
	printf '| %s | proxy CPU µs per request | | %s | |\n' "$E" "$(us_per_req e2e)"
	printf '| Kafka tools proxy | RSS idle / peak, MiB | | %s / %s | |\n' \
		"$(awk -v k="$PROXY_IDLE_RSS_KB" 'BEGIN {printf "%.1f", k / 1024}')" "$(awk -v k="$PROXY_PEAK_RSS_KB" 'BEGIN {printf "%.1f", k / 1024}')"
} >"$TABLE"

REPORT=$OUT/report.md
{
	echo "## bench-proxy-real: $(date -u +%FT%TZ)"
	echo
	echo "Kafka $KAFKA_VERSION, source $SOURCE ($NBROKERS brokers); proxy $LISTEN; $(nproc) CPUs, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1); load average $LOAD_BEFORE → $LOAD_AFTER."
	echo "Medians of the runs; proxied / direct is the ratio of the medians. Throughput: MB = 10^6 B for franz-go, 2^20 B for the Kafka tools (the ratio is the same)."
	echo
	cat "$TABLE"
	echo
	echo "Per run (in run order; direct and proxied alternate, D P then P D):"
	echo
	echo "| tool | metric | direct runs | proxied runs |"
	echo "|---|---|---|---|"
	for m in mb_per_s avg_ms p99_ms; do echo "| producer | $m | $(runs producer direct $m) | $(runs producer proxied $m) |"; done
	for m in mb_per_s fetch_mb_per_s rebalance_ms; do echo "| consumer | $m | $(runs consumer direct $m) | $(runs consumer proxied $m) |"; done
	for m in avg_ms p50_ms p99_ms p999_ms; do echo "| e2e | $m | $(runs e2e direct $m) | $(runs e2e proxied $m) |"; done
	for t in producer consumer e2e; do echo "| $t | proxy CPU-s | $(runs $t direct proxy_cpu_s) | $(runs $t proxied proxy_cpu_s) |"; done
	for t in producer consumer e2e; do
		echo "| $t | proxy wire bytes | | $(runs $t proxied proxy_wire_bytes) |"
		echo "| $t | requests through the proxy (Produce, Fetch) | | $(awk -F'\t' -v t="$t" '$1 == t && $2 == "proxied" && $4 ~ /^proxy_(requests|produce_requests|fetch_requests)$/ {v[$3, $4] = $5; if ($3 > n) n = $3}
			END {for (i = 1; i <= n; i++) printf "%s%d (%d, %d)", (i > 1 ? ", " : ""), v[i, "proxy_requests"], v[i, "proxy_produce_requests"], v[i, "proxy_fetch_requests"]}' "$RES") |"
	done
	if [[ $SKIP_FRANZ != 1 ]]; then
		echo
		echo "franz-go per run (mode: produce MB/s, consume MB/s, p50 / p99 ms):"
		echo
		jq -r '.runs[] | "- \(.index + 1) \(.mode): \(.produce.mb_per_s | . * 10 | round / 10), \(.consume.mb_per_s | . * 10 | round / 10), \(.latency.p50_ms) / \(.latency.p99_ms)"' "$OUT/franz.json"
	fi
	echo
	echo "Times: test bed start ${UP_SECONDS:-n/a} s, franz-go driver $FRANZ_SECONDS s, Kafka tools $TOOLS_SECONDS s, total $((SECONDS - T0)) s. Proxy log lines at WARN/ERROR: $PROXY_ERRORS ($OUT/proxy.log)."
	if [[ -s $OUT/incidents.txt ]]; then
		echo
		echo "Incidents (processes of this run killed by something else on the machine):"
		echo
		sed 's/^/- /' "$OUT/incidents.txt"
	fi
} >"$REPORT"
cat "$REPORT"
say "report: $REPORT (franz-go driver's own report: $OUT/franz.md)"
