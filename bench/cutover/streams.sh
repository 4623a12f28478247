#!/usr/bin/env bash
# streams.sh: issue 13's "streams" cutover scenario. Apache Kafka's
# WordCountDemo (Kafka Streams, STREAMS_GUARANTEE, default exactly_once_v2)
# behind a sidecar, its input written by Kafka's VerifiableProducer
# (retries=0) behind another, STREAMS_RUNS (default 20) cutovers at random
# moments (COMPAT_SEED repeats them) — each run is TestStreamsWordCount's
# cutover scenario, which checks every word's count on the cluster the
# sidecars ended on. Prints the producers' block window (the input
# producer's gate to release) per run and its p50/p99, and the runs that did
# not end DONE or whose counts were wrong.
#
#   make bench-cutover-streams [STREAMS_RUNS=20] [STREAMS_GUARANTEE=at_least_once] [KAFKA_VERSION=...]
#
# A test bed of its own (STREAMS_STATE_DIR, default
# /tmp/switchyard-streams-bench-bed), always stopped. Results: one JSON line
# per run in bench/out/cutover-streams/results-<time>.jsonl.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
RUNS=${STREAMS_RUNS:-20}
GUARANTEE=${STREAMS_GUARANTEE:-exactly_once_v2}
OUT=bench/out/cutover-streams
mkdir -p "$OUT"
RESULTS=$PWD/$OUT/results-$(date +%s).jsonl
rc=0
COMPAT_STATE_DIR=${STREAMS_STATE_DIR:-${TMPDIR:-/tmp}/switchyard-streams-bench-bed} COMPAT_STREAMS_RUNS=$RUNS \
	COMPAT_STREAMS_GUARANTEES=$GUARANTEE COMPAT_STREAMS_SCENARIOS=cutover COMPAT_RESULTS=$RESULTS \
	COMPAT_TIMEOUT=${STREAMS_TIMEOUT:-120m} internal/compat/run-real.sh --wordcount >"$OUT/test.log" 2>&1 || rc=$?
[[ -s $RESULTS ]] || { echo "streams.sh: no run finished (go test exit $rc; log: $OUT/test.log)" >&2; exit 1; }
version=$(grep -o '"kafka_version":"[^"]*"' "$RESULTS" 2>/dev/null | head -1 | cut -d'"' -f4 || true)
python3 - "$RESULTS" "$version" "$GUARANTEE" <<'PY'
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows = [r for r in rows if r.get("scenario") == "cutover"]
print(f"streams cutovers: Kafka {sys.argv[2]}, {sys.argv[3]}, {len(rows)} runs")
print("| run | cutover | producers' block window | steps | counts |")
print("|---|---|---:|---|---|")
for r in rows:
    c = r.get("check", {})
    print(f"| {r.get('run')} | {r.get('cutover') or '?'} | {r.get('block_window_ms', 0) / 1000:.3f} s | "
          f"{', '.join(r.get('history', []))} | {json.dumps(c, separators=(',', ':'))[:200]} |")
xs = sorted(r.get("block_window_ms", 0) / 1000 for r in rows if (r.get("cutover") or "").lower() == "done")
if xs:
    pct = lambda p: xs[max(0, math.ceil(p / 100 * len(xs)) - 1)]
    print(f"producers' block window over {len(xs)} DONE runs: p50 {pct(50):.3f} s, p99 {pct(99):.3f} s, max {xs[-1]:.3f} s")
PY
echo "streams.sh: go test exit $rc (log: $OUT/test.log; results: $RESULTS)"
exit "$rc"
