#!/usr/bin/env bash
# hold-verifiable.sh: HOLD cutovers of Apache Kafka's own clients on the
# running test bed (make kafka-up): a VerifiableProducer (acks=all,
# retries=0: every error it gets reaches it) and a ConsoleConsumer group
# (auto-commit every 5 s), each behind a sidecar following a control plane
# with one mirror; producer and consumer are two applications (hold-producer,
# hold-consumer), moved by one cutover per run (`ctl cutover start --mode
# HOLD`, the group named), 15 s after the clients start; the producer stops
# 10 s after it. Prints, per run, the producers' block window (gate to
# release), the groups' (quiesce to release, two-phase cutovers), the records
# acknowledged, read and read twice, and the producer's errors by exception
# (issue 13: none under HOLD; the producers' window independent of the
# consumer's 5 s auto-commit).
#
#   make kafka-up && make bench-cutover-hold [HOLD_RUNS=3] [HOLD_BUDGET=1s] [HOLD_ONE_APP=1] [SWITCHYARD_BIN=...]; make kafka-down
#
# Output: bench/out/hold-verifiable/<run>/ (control plane, sidecar and
# client logs, the producer's JSON lines, the cutover's status).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${SWITCHYARD_BIN:-$ROOT/bin/switchyard}
RUNS=${HOLD_RUNS:-3}
PORT=${HOLD_PORT_BASE:-14100} # control PORT, sidecars PORT+100 and PORT+200 (+ their virtual brokers), admin +90
ENV_FILE=$ROOT/testbed/.state/env
# HOLD_ONE_APP=1: producer and consumer are one application (hold-app), as
# a service that produces and consumes is: the cutover has no producer
# phase and holds the producer from the group drain on.
APPS=hold-producer,hold-consumer
[[ ${HOLD_ONE_APP:-} == 1 ]] && APPS=hold-app
appOf() { if [[ $APPS == hold-app ]]; then echo hold-app; else echo "hold-$1"; fi; }
[[ -f $ENV_FILE ]] || { echo "hold-verifiable: the test bed is not up (no $ENV_FILE): make kafka-up" >&2; exit 1; }
# shellcheck disable=SC1090
. "$ENV_FILE"
LIB="$ROOT/testbed/.cache/$SWITCHYARD_TEST_KAFKA_VERSION/lib"
RF=$(tr ',' '\n' <<<"$SWITCHYARD_TEST_SOURCE" | wc -l)
((RF <= 3)) || RF=3
OUT=$ROOT/bench/out/hold-verifiable
STAMP=$(date +%s)
[[ -x $BIN ]] || { echo "hold-verifiable: no $BIN (make build, or set SWITCHYARD_BIN)" >&2; exit 1; }

# shellcheck source=bench/cutover/tools.sh
. "$ROOT/bench/cutover/tools.sh"
yamllist() { echo "[${1//,/, }]"; }

run() {
	local name=$1 d=$OUT/$1 topic=hold-$STAMP-$1 group=hold-$STAMP-$1
	rm -rf "$d"
	mkdir -p "$d"
	(jv "$d" topic.log org.apache.kafka.tools.TopicCommand --bootstrap-server "${SWITCHYARD_TEST_SOURCE%%,*}" --create \
		--if-not-exists --topic "$topic" --partitions 6 --replication-factor "$RF" >/dev/null)
	echo bench-token >"$d/token"
	cat >"$d/control.yaml" <<EOF
listen: 127.0.0.1:$PORT
tokenFile: $d/token
storeDir: $d/store
clusters:
  - name: source
    bootstrap: $(yamllist "$SWITCHYARD_TEST_SOURCE")
  - name: target
    bootstrap: $(yamllist "$SWITCHYARD_TEST_TARGET")
mirrors:
  - name: m
    source: source
    target: target
    topics: {include: ["$topic"]}
    txnMaxInterval: 100ms
    topicSyncInterval: 1s
EOF
	"$BIN" control --config "$d/control.yaml" >"$d/control.log" 2>&1 &
	PIDS+=($!)
	local i
	for i in producer consumer; do
		local p=$((PORT + 100))
		[[ $i == consumer ]] && p=$((PORT + 200))
		# Two applications, as in a real estate: the producing service and
		# the consuming one, each with its own sidecar.
		"$BIN" proxy --cluster "source=$SWITCHYARD_TEST_SOURCE" --cluster "target=$SWITCHYARD_TEST_TARGET" --active source \
			--listen "127.0.0.1:$p" --admin "127.0.0.1:$((p + 90))" --control "127.0.0.1:$PORT" --app "$(appOf "$i")" \
			--instance "$i" --control-token-file "$d/token" >"$d/sidecar-$i.log" 2>&1 &
		PIDS+=($!)
	done
	ctl() { "$BIN" ctl --server "127.0.0.1:$PORT" --token-file "$d/token" "$@"; }
	for i in $(seq 1 120); do
		if [[ $(ctl --output json sidecars 2>/dev/null | grep -Ec '"connected": *true') == 2 ]] &&
			ctl --output json mirrors 2>/dev/null | grep -Eq '"ready": *true'; then
			break
		fi
		sleep 0.5
	done
	jv "$d" producer.log org.apache.kafka.tools.VerifiableProducer --bootstrap-server "127.0.0.1:$((PORT + 100))" \
		--topic "$topic" --throughput 2000 --acks -1 >"$d/producer.jsonl" 2>"$d/producer.err" &
	local producer=$!
	PIDS+=($producer)
	jv "$d" consumer.log org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server "127.0.0.1:$((PORT + 200))" \
		--topic "$topic" --group "$group" --from-beginning >"$d/consumer.out" 2>"$d/consumer.err" &
	local consumer=$!
	PIDS+=($consumer)
	sleep 15
	ctl cutover start --app "$APPS" --from source --to target --topics "$topic" --groups "$group" --mode HOLD \
		--max-lag 100000 ${HOLD_BUDGET:+--hold-budget "$HOLD_BUDGET"} --watch >"$d/cutover.out" 2>&1 || true
	local id
	id=$(grep -o 'c-[0-9]*-[0-9]*-[0-9a-f]*' "$d/cutover.out" | head -1)
	ctl cutover status "$id" >"$d/status.out" 2>&1 || true
	ctl --output json cutover status "$id" >"$d/status.json" 2>/dev/null || true
	sleep 10
	stop_producer "$producer" "$d"
	cleanup
	local step window gwindow errors
	read -r step window gwindow < <(python3 - "$d/status.json" <<'PY' || echo "? ? ?"
import json, sys
try:
    c = json.load(open(sys.argv[1])).get("cutover", {})
except Exception:
    print("? ? ?"); sys.exit(0)
print((c.get("step") or "?").replace("CUTOVER_STEP_", ""), c.get("blockWindow") or "-", c.get("groupBlockWindow") or "-")
PY
	)
	errors=$({ grep '"producer_send_error"' "$d/producer.jsonl" || true; } | { grep -o 'errors\.[A-Za-z]*' || true; } |
		sort | uniq -c | awk '{printf "%s%s %d", sep, substr($2, 8), $1; sep=", "}')
	local read distinct
	read=$(wc -l <"$d/consumer.out")
	distinct=$(sort -u "$d/consumer.out" | wc -l)
	printf '| %s | %s | %s | %s | %d | %d | %d | %s |\n' "$name" "$step" "$window" "$gwindow" \
		"$(grep -c '"producer_send_success"' "$d/producer.jsonl")" "$distinct" "$((read - distinct))" "${errors:-none}"
	printf '%s %s %s %d %s\n' "$step" "${window%s}" "${gwindow%s}" "$((read - distinct))" "${errors:-none}" >>"$SUMMARY"
}

# summarize: the producers' and groups' block windows over every run
# (nearest-rank percentiles), and the runs that did not end DONE, read a
# record twice or gave the producer an error.
summarize() {
	python3 - "$SUMMARY" <<'PY'
import math, sys
rows = [l.split(None, 4) for l in open(sys.argv[1]) if l.strip()]
def pct(xs, p):
    xs = sorted(xs)
    return xs[max(0, math.ceil(p / 100 * len(xs)) - 1)] if xs else float("nan")
def num(s):
    try:
        return float(s)
    except ValueError:
        return None
for col, what in ((1, "producers' block window"), (2, "groups' block window")):
    xs = [x for x in (num(r[col]) for r in rows) if x is not None]
    if xs:
        print(f"{what} over {len(xs)} runs: p50 {pct(xs, 50):.3f} s, p99 {pct(xs, 99):.3f} s, max {max(xs):.3f} s")
bad = [(i + 1, r) for i, r in enumerate(rows) if r[0] != "DONE" or r[3] != "0" or r[4].strip() != "none"]
print(f"{len(rows) - len(bad)} of {len(rows)} runs DONE with no record read twice and no producer error")
for i, r in bad:
    print(f"  run{i}: {r[0]}, read twice {r[3]}, producer errors {r[4].strip()}")
PY
}

echo "hold-verifiable: $RUNS HOLD cutover(s), Kafka $SWITCHYARD_TEST_KAFKA_VERSION, hold budget ${HOLD_BUDGET:-default (10s)}, $BIN"
echo "| run | cutover | producers' block window | groups' block window | acknowledged | distinct records read | read twice | producer errors |"
echo "|---|---|---|---|---|---|---|---|"
SUMMARY=$OUT/summary-$STAMP.txt
mkdir -p "$OUT"
: >"$SUMMARY"
for r in $(seq 1 "$RUNS"); do
	run "run$r"
done
summarize
