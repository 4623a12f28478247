#!/usr/bin/env bash
# leader-moves.sh: leaders move on the active cluster under Apache Kafka's own
# clients behind a sidecar (issue 15), on the running test bed (make kafka-up,
# three source brokers): a VerifiableProducer (acks=all, retries=0: every
# error it gets reaches it) and a ConsoleConsumer group read and write a
# topic of 6 partitions (replication factor 2) through one sidecar; 10 s in,
# every partition's preferred leader is changed (a reassignment that only
# reorders the replicas) and a preferred-leader election moves all six
# leaders; 10 s later a reassignment drops each partition's leader from its
# replicas, which moves them again; 10 s later the broker leading partition 0
# restarts (TERM: a controlled shutdown; MOVES_NO_RESTART=1 skips it).
# Prints, per run, the records acknowledged, read and read twice, the
# acknowledged records never read, the producer's errors by exception and
# event, and the partitions the sidecar re-sent
# (produce_resent_partitions_total) and, of those the old leader had
# appended before refusing (no producer id: looked for on the new leader),
# the outcomes (produce_appended_refusals_total); the fetches it routed to
# leaders and the partitions it asked again (fetch_routed_total,
# fetch_rerouted_partitions_total); the consumer's WARN/ERROR log lines.
#
#   make kafka-up && bash bench/cutover/leader-moves.sh [MOVES_RUNS=3] [SWITCHYARD_BIN=...]; make kafka-down
#
# Output: bench/out/leader-moves/<run>/ (sidecar and client logs, the
# producer's JSON lines, the tools' output).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${SWITCHYARD_BIN:-$ROOT/bin/switchyard}
RUNS=${MOVES_RUNS:-3}
PORT=${MOVES_PORT:-14600} # sidecar PORT (+ its virtual brokers), admin PORT+90
ENV_FILE=$ROOT/testbed/.state/env
[[ -f $ENV_FILE ]] || { echo "leader-moves: the test bed is not up (no $ENV_FILE): make kafka-up" >&2; exit 1; }
# shellcheck disable=SC1090
. "$ENV_FILE"
LIB="$ROOT/testbed/.cache/$SWITCHYARD_TEST_KAFKA_VERSION/lib"
BOOT=${SWITCHYARD_TEST_SOURCE%%,*}
(($(tr ',' '\n' <<<"$SWITCHYARD_TEST_SOURCE" | wc -l) >= 3)) ||
	{ echo "leader-moves: the source needs three brokers (SOURCE_BROKERS=3, the default)" >&2; exit 1; }
[[ -x $BIN ]] || { echo "leader-moves: no $BIN (make build, or set SWITCHYARD_BIN)" >&2; exit 1; }
OUT=$ROOT/bench/out/leader-moves
STAMP=$(date +%s)

# shellcheck source=bench/cutover/tools.sh
. "$ROOT/bench/cutover/tools.sh"

# assignment DIR TOPIC: the topic's partitions as "partition leader r1,r2".
assignment() {
	(jv "$1" describe.log org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOT" --describe --topic "$2") |
		sed -n 's/.*Partition: *\([0-9]*\).*Leader: *\([0-9-]*\).*Replicas: *\([0-9,]*\).*/\1 \2 \3/p'
}

# reassign DIR TOPIC MODE: a reassignment of every partition — MODE reorder
# (the second replica first: the preferred leader changes, the leader not
# yet) or drop (the leader leaves the replicas for the broker outside them)
# — executed and waited for.
reassign() {
	local d=$1 topic=$2 mode=$3
	assignment "$d" "$topic" | python3 -c '
import json, sys
topic, mode = sys.argv[1], sys.argv[2]
rows = [line.split() for line in sys.stdin if line.strip()]
# The brokers: every replica of the topic (6 partitions over 3 brokers).
brokers = sorted({int(r) for _, _, replicas in rows for r in replicas.split(",")})
parts = []
for p, leader, replicas in rows:
    rs = [int(r) for r in replicas.split(",")]
    if mode == "reorder":
        rs = rs[1:] + rs[:1]
    else:
        rest = [r for r in rs if r != int(leader)]
        rs = rest + [b for b in brokers if b not in rs][:1]
    parts.append({"topic": topic, "partition": int(p), "replicas": rs})
json.dump({"version": 1, "partitions": parts}, open(sys.argv[3], "w"))
' "$topic" "$mode" "$d/$mode.json"
	(jv "$d" "$mode.log" org.apache.kafka.tools.reassign.ReassignPartitionsCommand --bootstrap-server "$BOOT" \
		--reassignment-json-file "$d/$mode.json" --execute >"$d/$mode.out" 2>&1)
	for _ in $(seq 1 120); do
		if (jv "$d" "$mode.log" org.apache.kafka.tools.reassign.ReassignPartitionsCommand --bootstrap-server "$BOOT" \
			--reassignment-json-file "$d/$mode.json" --verify 2>&1) | grep -q 'is still in progress'; then
			sleep 0.5
			continue
		fi
		return 0
	done
	echo "leader-moves: the $mode reassignment did not finish" >&2
}

run() {
	local name=$1 d=$OUT/$1 topic=moves-$STAMP-$1 group=moves-$STAMP-$1
	rm -rf "$d"
	mkdir -p "$d"
	(jv "$d" topic.log org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOT" --create \
		--if-not-exists --topic "$topic" --partitions 6 --replication-factor 2 >/dev/null)
	"$BIN" proxy --cluster "source=$SWITCHYARD_TEST_SOURCE" --active source \
		--listen "127.0.0.1:$PORT" --admin "127.0.0.1:$((PORT + 90))" >"$d/sidecar.log" 2>&1 &
	PIDS+=($!)
	for _ in $(seq 1 100); do
		curl -fs "http://127.0.0.1:$((PORT + 90))/readyz" >/dev/null 2>&1 && break
		sleep 0.1
	done
	jv "$d" producer.log org.apache.kafka.tools.VerifiableProducer --bootstrap-server "127.0.0.1:$PORT" \
		--topic "$topic" --throughput 2000 --acks -1 >"$d/producer.jsonl" 2>"$d/producer.err" &
	local producer=$!
	PIDS+=($producer)
	jv "$d" consumer.log org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server "127.0.0.1:$PORT" \
		--topic "$topic" --group "$group" --from-beginning >"$d/consumer.out" 2>"$d/consumer.err" &
	PIDS+=($!)
	sleep 10
	assignment "$d" "$topic" >"$d/before.txt"
	date +%s%3N >"$d/election.at"
	reassign "$d" "$topic" reorder
	python3 -c 'import json, sys; json.dump({"partitions": [{"topic": sys.argv[1], "partition": p} for p in range(6)]}, sys.stdout)' \
		"$topic" >"$d/election.json"
	(jv "$d" election.log org.apache.kafka.tools.LeaderElectionCommand --bootstrap-server "$BOOT" \
		--election-type PREFERRED --path-to-json-file "$d/election.json" >"$d/election.out" 2>&1) || true
	assignment "$d" "$topic" >"$d/elected.txt"
	sleep 10
	date +%s%3N >"$d/drop.at"
	reassign "$d" "$topic" drop
	assignment "$d" "$topic" >"$d/dropped.txt"
	sleep 10
	if [[ -z ${MOVES_NO_RESTART:-} ]]; then
		# The broker leading partition 0 restarts: a controlled shutdown
		# moves its leaders away, then it comes back.
		date +%s%3N >"$d/restart.at"
		"$ROOT/testbed/kafka.sh" restart-broker source "$(awk '$1 == 0 {print $2}' "$d/dropped.txt")" >"$d/restart.out" 2>&1 ||
			echo "leader-moves: the broker restart failed: $d/restart.out" >&2
		assignment "$d" "$topic" >"$d/restarted.txt"
		sleep 10
	fi
	stop_producer "$producer" "$d"
	local metrics resent routed warns
	metrics=$(curl -fs "http://127.0.0.1:$((PORT + 90))/metrics" || true)
	resent=$(awk '/^switchyard_proxy_produce_resent_partitions_total /{r=$2} /^switchyard_proxy_produce_appended_refusals_total/{split($1, a, "\""); o = o sep a[2] " " $2; sep=", "} END{if (r != "") print r (o == "" ? "" : " (appended: " o ")")}' <<<"$metrics")
	# The consumer's side: fetches the sidecar routed to leaders, and
	# partitions it asked again of a new leader; the consumer's WARN and
	# ERROR lines while the sidecar ran (it is stopped next).
	routed=$(awk '/^switchyard_proxy_fetch_routed_total /{r=$2} /^switchyard_proxy_fetch_rerouted_partitions_total /{a=$2} END{print (r+0) " / " (a+0)}' <<<"$metrics")
	warns=$(grep -c "WARN\|ERROR" "$d/consumer.log" || true)
	cleanup
	local moved1 moved2
	moved1=$(join <(awk '{print $1, $2}' "$d/before.txt") <(awk '{print $1, $2}' "$d/elected.txt") | awk '$2 != $3' | wc -l)
	moved2=$(join <(awk '{print $1, $2}' "$d/elected.txt") <(awk '{print $1, $2}' "$d/dropped.txt") | awk '$2 != $3' | wc -l)
	local moved3=-
	[[ -f $d/restarted.txt ]] && moved3=$(join <(awk '{print $1, $2}' "$d/dropped.txt") <(awk '{print $1, $2}' "$d/restarted.txt") | awk '$2 != $3' | wc -l)
	python3 - "$d" "$name" "$moved1" "$moved2/$moved3" "${resent:-?}" "$routed" "${warns:-?}" >>"$SUMMARY" <<'PY'
import collections, json, re, sys
d, name, moved1, moved2, resent, routed, warns = sys.argv[1:]
drop_at = int(open(f"{d}/drop.at").read())
try:
    restart_at = int(open(f"{d}/restart.at").read())
except OSError:
    restart_at = None
acked, errors = set(), collections.Counter()
for line in open(f"{d}/producer.jsonl"):
    try:
        e = json.loads(line)
    except ValueError:
        continue
    if e.get("name") == "producer_send_success":
        acked.add(e["value"])
    elif e.get("name") == "producer_send_error":
        m = re.search(r"errors\.(\w+)", e.get("exception", ""))
        window = "election" if e["timestamp"] < drop_at else "reassignment"
        if restart_at and e["timestamp"] >= restart_at:
            window = "restart"
        errors[f"{m.group(1) if m else e.get('exception', '?')} at the {window}"] += 1
read = [l.rstrip("\n") for l in open(f"{d}/consumer.out")]
distinct = set(read)
missing = len(acked - distinct)
errs = ", ".join(f"{k} {v}" for k, v in sorted(errors.items())) or "none"
print(f"| {name} | {moved1} | {moved2} | {len(acked)} | {len(distinct)} | {len(read) - len(distinct)} | {missing} | {errs} | {resent} | {routed} | {warns} |")
PY
}

echo "leader-moves: $RUNS run(s), Kafka $SWITCHYARD_TEST_KAFKA_VERSION, $BIN"
echo "| run | leaders moved by the election | by the reassignment / the restart | acknowledged | distinct read | read twice | acknowledged never read | producer errors | partitions re-sent (refused after the append, by outcome) | fetches routed / partitions asked again | consumer WARN/ERROR lines |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
SUMMARY=$OUT/summary-$STAMP.txt
mkdir -p "$OUT"
: >"$SUMMARY"
for r in $(seq 1 "$RUNS"); do
	run "run$r" >/dev/null
	tail -1 "$SUMMARY"
done
