#!/usr/bin/env python3
"""confluent-kafka (librdkafka) test client for the Switchyard client bed.

Produces N keyed records with an idempotent producer and/or consumes them in a
consumer group, then prints one JSON document on stdout (schema: see
testclients/README.md). Logs go to stderr. With --mode live it runs as a live
application instead: it produces and consumes until told to stop on stdin and
prints one JSON event per line (see internal/clientbed/live.go).

Exit status: 0 when the run completed with no error, 1 when it completed but
reported errors (the JSON is still printed), 2 on a usage error or crash.
"""

import argparse
import json
import sys
import threading
import time

import confluent_kafka
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

CLIENT = "confluent-kafka-python"


def log(msg):
    print(f"[{CLIENT}] {msg}", file=sys.stderr, flush=True)


def text(b):
    if b is None:
        return None
    if isinstance(b, str):
        return b
    return b.decode("utf-8", errors="backslashreplace")


def lib_version(v):
    # version() is a (str, int) tuple in most releases and a plain str in some.
    return v[0] if isinstance(v, tuple) else v


def produce(args, deadline):
    start = time.monotonic()
    errors = []
    acks = []

    conf = {
        "bootstrap.servers": args.bootstrap,
        "client.id": f"clientbed-{CLIENT}",
        "enable.idempotence": True,  # implies acks=all, max.in.flight<=5, retries
        "linger.ms": 5,
        "message.timeout.ms": max(1000, int((deadline - time.monotonic()) * 1000)),
        "error_cb": lambda err: errors.append(f"client error: {err}") if err.fatal() else log(f"client error: {err}"),
    }
    p = Producer(conf)

    def on_delivery(seq):
        def cb(err, msg):
            if err is not None:
                errors.append(f"seq {seq}: delivery failed: {err}")
            else:
                acks.append({"seq": seq, "partition": msg.partition(), "offset": msg.offset()})
        return cb

    for i in range(args.records):
        key = f"k-{i % args.keys}"
        value = f"{args.prefix}-{i}"
        headers = [("seq", str(i).encode()), ("client", args.prefix.encode())]
        while True:
            try:
                p.produce(args.topic, key=key.encode(), value=value.encode(), headers=headers,
                          on_delivery=on_delivery(i))
                break
            except BufferError:
                # Local queue full: serve delivery reports until there is room.
                if time.monotonic() > deadline:
                    errors.append(f"seq {i}: local queue full until the deadline")
                    break
                p.poll(0.1)
            except KafkaException as e:
                errors.append(f"seq {i}: produce: {e}")
                break
        p.poll(0)

    remaining = p.flush(max(0.0, deadline - time.monotonic()))
    if remaining:
        errors.append(f"{remaining} records still undelivered at the deadline")
    return {
        "prefix": args.prefix,
        "acked": len(acks),
        "errors": errors,
        "acks": acks,
        "elapsed_ms": int((time.monotonic() - start) * 1000),
    }


def consume(args, deadline):
    start = time.monotonic()
    errors = []
    records = []
    committed = False
    timed_out = False

    c = Consumer({
        "bootstrap.servers": args.bootstrap,
        "client.id": f"clientbed-{CLIENT}",
        "group.id": args.group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "error_cb": lambda err: errors.append(f"client error: {err}") if err.fatal() else log(f"client error: {err}"),
    })
    try:
        c.subscribe([args.topic])
        while len(records) < args.records:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            for m in c.consume(num_messages=1000, timeout=min(1.0, left)):
                if m.error() is not None:
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    errors.append(f"consume: {m.error()}")
                    continue
                records.append({
                    "partition": m.partition(),
                    "offset": m.offset(),
                    "key": text(m.key()),
                    "value": text(m.value()),
                    "headers": [{"key": k, "value": text(v)} for k, v in (m.headers() or [])],
                })
        if records:
            try:
                # Commits the positions of the assignment (last consumed + 1).
                c.commit(asynchronous=False)
                committed = True
            except KafkaException as e:
                errors.append(f"commit: {e}")
    finally:
        c.close()
    return {
        "records": records,
        "errors": errors,
        "committed": committed,
        "timed_out": timed_out,
        "elapsed_ms": int((time.monotonic() - start) * 1000),
    }


class Events:
    """Live mode's event stream: one JSON object per line on stdout."""

    def __init__(self):
        self.lock = threading.Lock()

    def emit(self, **ev):
        line = json.dumps(ev, separators=(",", ":"))
        with self.lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def error(self, side, msg, seq=-1, fatal=False):
        self.emit(ev="err", side=side, seq=seq, fatal=bool(fatal), msg=str(msg))


def live(args):
    """Produces continuously and consumes in a group with auto-commit, both
    with librdkafka's defaults (idempotence on), until told to stop on stdin.
    With --transactional-id the producer is transactional (a transaction per
    --txn-records records, every --txn-abort-every-th aborted) and the
    consumer reads read_committed. See internal/clientbed/live.go for the
    protocol."""
    ev = Events()
    ev.emit(ev="lib", library=f"confluent-kafka {lib_version(confluent_kafka.version())}, "
                              f"librdkafka {lib_version(confluent_kafka.libversion())}")
    stop_produce = threading.Event()
    stop = threading.Event()

    def commands():
        for line in sys.stdin:
            cmd = line.strip()
            if cmd == "stop-produce":
                stop_produce.set()
            elif cmd == "stop":
                break
        stop_produce.set()
        stop.set()

    threading.Thread(target=commands, daemon=True).start()

    def error_cb(side):
        return lambda err: ev.error(side, f"error callback: {err}", fatal=err.fatal())

    pconf = {
        "bootstrap.servers": args.bootstrap,
        "client.id": f"clientbed-live-{args.prefix}",
        "enable.idempotence": True,
        "error_cb": error_cb("produce"),
    }
    if args.transactional_id:
        # Everything else is the default (transaction.timeout.ms 60 s).
        pconf["transactional.id"] = args.transactional_id
    p = Producer(pconf)

    def send(seq, on_delivery):
        """Hands record seq to the producer. True: taken; False: refused
        (reported as a produce error); None: the queue is full, try again."""
        try:
            p.produce(args.topic, key=f"k-{seq % args.keys}".encode(), value=f"{args.prefix}-{seq}".encode(),
                      on_delivery=on_delivery)
            return True
        except BufferError:
            p.poll(0.1)
            return None
        except KafkaException as e:
            ev.error("produce", f"produce: {e}", seq=seq)
            return False

    def producer_loop():
        interval = args.interval_ms / 1000.0
        seq = 0
        next_at = time.monotonic()

        def on_delivery(seq):
            def cb(err, msg):
                if err is not None:
                    ev.error("produce", f"delivery failed: {err}", seq=seq, fatal=err.fatal())
                else:
                    ev.emit(ev="ack", seq=seq, p=msg.partition(), o=msg.offset())
            return cb

        while not stop_produce.is_set():
            now = time.monotonic()
            if now < next_at:
                p.poll(min(next_at - now, 0.05))
                continue
            taken = send(seq, on_delivery(seq))
            if taken is not None:
                seq += 1
                next_at += interval if taken else 0
            p.poll(0)
        # Every record handed over gets its delivery report (or, after
        # message.timeout.ms, a failed one).
        while p.flush(1.0) > 0 and not stop.is_set():
            pass
        ev.emit(ev="produced", sent=seq)

    def transactional_loop():
        """A transaction per --txn-records records, committed; every
        --txn-abort-every-th one aborted once its records are written. Acks
        are printed for committed records only, after the commit returned;
        the records of an aborted transaction as "abort" events."""
        interval = args.interval_ms / 1000.0
        seq = 0
        next_at = time.monotonic()
        number = 0
        txn = None

        def on_delivery(results, seq):
            def cb(err, msg):
                results[seq] = err if err is not None else (msg.partition(), msg.offset())
            return cb

        def end(t):
            """Ends transaction t and reports its records; False when the
            producer cannot go on."""
            what = "abort_transaction" if t["abort"] else "commit_transaction"
            try:
                if t["abort"]:
                    # The records are written before the abort: it has something to hide.
                    p.flush(60)
                    p.abort_transaction()
                else:
                    p.commit_transaction()
            except KafkaException as e:
                err = e.args[0]
                for s in t["seqs"]:
                    ev.error("produce", f"transaction {t['number']}: {what}: {err}", seq=s, fatal=err.fatal())
                try:
                    p.abort_transaction()
                    return True
                except KafkaException as e2:
                    ev.error("produce", f"transaction {t['number']}: abort_transaction after a failed {what}: {e2.args[0]}",
                             fatal=True)
                    return False
            # Delivery reports are served by poll (and by the flush inside
            # commit_transaction): collect the rest.
            deadline = time.monotonic() + 10
            while len(t["results"]) < len(t["seqs"]) and time.monotonic() < deadline:
                p.poll(0.01)
            for s in t["seqs"]:
                r = t["results"].get(s)
                if isinstance(r, tuple):
                    ev.emit(ev="abort" if t["abort"] else "ack", seq=s, p=r[0], o=r[1])
                elif r is None:
                    ev.error("produce", f"transaction {t['number']} ended ({what}) without its delivery report", seq=s)
                else:
                    ev.error("produce", f"transaction {t['number']}: delivery failed: {r}", seq=s, fatal=r.fatal())
            return True

        try:
            p.init_transactions()
            while True:
                stopping = stop_produce.is_set()
                now = time.monotonic()
                if not stopping and now < next_at:
                    p.poll(min(next_at - now, 0.05))
                    continue
                if txn is not None and (stopping or len(txn["seqs"]) >= args.txn_records):
                    t, txn = txn, None
                    if not end(t):
                        break
                if stopping:
                    break
                if txn is None:
                    number += 1
                    p.begin_transaction()
                    txn = {"number": number, "abort": args.txn_abort_every > 0 and number % args.txn_abort_every == 0,
                           "seqs": [], "results": {}}
                taken = send(seq, on_delivery(txn["results"], seq))
                if taken:
                    txn["seqs"].append(seq)
                if taken is not None:
                    seq += 1
                    next_at += interval if taken else 0
                p.poll(0)
        except KafkaException as e:
            # init_transactions or begin_transaction: the open transaction's
            # records get no other report.
            if txn is not None:
                for s in txn["seqs"]:
                    ev.error("produce", f"transaction {txn['number']} left open: {e.args[0]}", seq=s, fatal=True)
            ev.error("produce", f"producer: {e.args[0]}", fatal=True)
        ev.emit(ev="produced", sent=seq)

    cconf = {
        "bootstrap.servers": args.bootstrap,
        "client.id": f"clientbed-live-{args.prefix}",
        "group.id": args.group,
        "auto.offset.reset": "earliest",
        "error_cb": error_cb("consume"),
    }
    if args.transactional_id:
        # librdkafka's default, said out loud: records of aborted (and open)
        # transactions stay invisible.
        cconf["isolation.level"] = "read_committed"
    if args.group_protocol:
        # "consumer": KIP-848, the broker assigns (Kafka 4.0+).
        cconf["group.protocol"] = args.group_protocol
    if args.instance_id:
        # A static member.
        cconf["group.instance.id"] = args.instance_id
    c = Consumer(cconf)

    def consumer_loop():
        c.subscribe([args.topic])
        while not stop.is_set():
            for m in c.consume(num_messages=500, timeout=0.2):
                if m.error() is not None:
                    ev.error("consume", f"consume: {m.error()}", fatal=m.error().fatal())
                    continue
                ev.emit(ev="rec", p=m.partition(), o=m.offset(), k=text(m.key()), v=text(m.value()))
        # close() commits the auto-commit position and leaves the group.
        c.close()

    pt = threading.Thread(target=transactional_loop if args.transactional_id else producer_loop)
    pt.start()
    consumer_loop()
    pt.join()
    ev.emit(ev="done")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", required=True, help="comma-separated host:port list")
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", default="")
    ap.add_argument("--records", type=int, default=-1)
    ap.add_argument("--keys", type=int, default=10)
    ap.add_argument("--mode", choices=["produce", "consume", "both", "live"], default="both")
    ap.add_argument("--timeout-ms", type=int, default=60000)
    ap.add_argument("--prefix", default=CLIENT, help="value prefix and 'client' header")
    ap.add_argument("--interval-ms", type=int, default=5, help="live mode: pause between records")
    ap.add_argument("--transactional-id", default="", help="live mode: a transactional producer with this id")
    ap.add_argument("--txn-records", type=int, default=20, help="live mode: records per transaction")
    ap.add_argument("--txn-abort-every", type=int, default=0, help="live mode: abort every M-th transaction (0: none)")
    ap.add_argument("--group-protocol", default="", choices=["", "classic", "consumer"],
                    help="live mode: the consumer's group.protocol (consumer: KIP-848)")
    ap.add_argument("--instance-id", default="", help="live mode: group.instance.id (a static member)")
    args = ap.parse_args()
    if args.mode == "live":
        if not args.group or args.interval_ms < 1 or args.keys < 1:
            ap.error("live mode needs --group, --interval-ms >= 1 and --keys >= 1")
        if args.txn_records < 1 or args.txn_abort_every < 0:
            ap.error("--txn-records must be >= 1 and --txn-abort-every >= 0")
        return live(args)
    if args.transactional_id:
        ap.error("--transactional-id is for --mode live")
    if args.mode != "produce" and not args.group:
        ap.error("--group is required to consume")
    if args.records < 0 or args.keys < 1:
        ap.error("--records (required) must be >= 0 and --keys >= 1")

    deadline = time.monotonic() + args.timeout_ms / 1000.0
    out = {
        "client": CLIENT,
        "library": f"confluent-kafka {lib_version(confluent_kafka.version())}, "
                   f"librdkafka {lib_version(confluent_kafka.libversion())}",
    }
    if args.mode in ("produce", "both"):
        out["produce"] = produce(args, deadline)
    if args.mode in ("consume", "both"):
        out["consume"] = consume(args, deadline)
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()
    failed = bool(out.get("produce", {}).get("errors") or out.get("consume", {}).get("errors")
                  or out.get("consume", {}).get("timed_out"))
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # noqa: BLE001 - report any crash as exit 2 with a message
        log(f"crashed: {e!r}")
        sys.exit(2)
