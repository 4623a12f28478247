# tools.sh: what the cutover scripts share, sourced after ROOT and LIB are
# set: background processes stopped on exit, and Apache Kafka's tools run
# from the test bed's jars.

PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	PIDS=()
}
trap cleanup EXIT

# jv DIR LOG CLASS ARGS...: a Kafka tool, logging to DIR/LOG; run it in a
# subshell or in the background (it execs).
jv() {
	local dir=$1 log=$2
	shift 2
	exec java -Xmx256m -XX:+UseSerialGC -Dlog4j2.configurationFile="$ROOT/testbed/conf/log4j2.properties" \
		-Dswitchyard.log.file="$dir/$log" -Dswitchyard.console.level=OFF -Dkafka.logs.dir="$dir" -cp "$LIB/*" "$@"
}

# stop_producer PID DIR: stops a VerifiableProducer, then waits until the
# consumer (DIR/consumer.out) has read as many distinct records as the
# producer had acknowledged (DIR/producer.jsonl) — at most 60 s; what it
# missed shows in the results.
stop_producer() {
	local pid=$1 d=$2 want
	kill -TERM "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	want=$(grep -c '"producer_send_success"' "$d/producer.jsonl" || true)
	for _ in $(seq 1 600); do
		(($(sort -u "$d/consumer.out" | wc -l) >= want)) && break
		sleep 0.1
	done
}
