#!/usr/bin/env node
// kafkajs test client for the Switchyard client bed.
//
// Produces N keyed records with an idempotent producer and/or consumes them in
// a consumer group, then prints one JSON document on stdout (schema: see
// testclients/README.md). Logs go to stderr. With --mode live it runs as a live
// application instead: it produces and consumes until told to stop on stdin and
// prints one JSON event per line (see internal/clientbed/live.go).
//
// Exit status: 0 when the run completed with no error, 1 when it completed but
// reported errors (the JSON is still printed), 2 on a usage error or crash.
'use strict';

const { Kafka, Partitioners, logLevel } = require('kafkajs');
const kafkajsVersion = require('kafkajs/package.json').version;

const CLIENT = 'kafkajs';

function log(msg) {
  process.stderr.write(`[${CLIENT}] ${msg}\n`);
}

function usage(msg) {
  process.stderr.write(`${msg}\nusage: client.js --bootstrap H:P[,H:P] --topic T [--group G] --records N ` +
    '[--keys K] [--mode produce|consume|both] [--timeout-ms MS] [--prefix P]\n' +
    '       client.js --mode live --bootstrap H:P --topic T --group G [--keys K] [--prefix P] [--interval-ms MS]\n');
  process.exit(2);
}

function parseArgs(argv) {
  const a = { group: '', keys: 10, mode: 'both', timeoutMs: 60000, prefix: CLIENT, intervalMs: 5 };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const val = argv[i + 1];
    if (val === undefined) usage(`missing value for ${flag}`);
    i++;
    switch (flag) {
      case '--bootstrap': a.bootstrap = val; break;
      case '--topic': a.topic = val; break;
      case '--group': a.group = val; break;
      case '--records': a.records = Number.parseInt(val, 10); break;
      case '--keys': a.keys = Number.parseInt(val, 10); break;
      case '--mode': a.mode = val; break;
      case '--timeout-ms': a.timeoutMs = Number.parseInt(val, 10); break;
      case '--prefix': a.prefix = val; break;
      case '--interval-ms': a.intervalMs = Number.parseInt(val, 10); break;
      default: usage(`unknown flag ${flag}`);
    }
  }
  if (!['produce', 'consume', 'both', 'live'].includes(a.mode)) usage(`bad --mode ${a.mode}`);
  if (!a.bootstrap || !a.topic) usage('--bootstrap and --topic are required');
  if (a.mode !== 'live' && (!Number.isInteger(a.records) || a.records < 0)) usage('--records is required');
  if (a.mode === 'live' && (!Number.isInteger(a.intervalMs) || a.intervalMs < 1)) usage('--interval-ms must be >= 1');
  if (a.mode !== 'produce' && !a.group) usage('--group is required to consume');
  if (!Number.isInteger(a.keys) || a.keys < 1) usage('--keys must be >= 1');
  return a;
}

// kafkajs logs through a JSON logCreator; route everything to stderr, and
// to a file of its own under $KAFKAJS_LOG_DIR when that is set (the client
// bed keeps only a tail of stderr). $KAFKAJS_LOG_LEVEL (ERROR, WARN, INFO,
// DEBUG; WARN by default) sets how much kafkajs says: INFO shows every group
// join with its member id, DEBUG every request.
const fs = require('fs');
const path = require('path');
let logFile = null;
if (process.env.KAFKAJS_LOG_DIR) {
  const prefixAt = process.argv.indexOf('--prefix');
  const name = `${prefixAt > 0 ? process.argv[prefixAt + 1] : CLIENT}-${process.pid}.log`;
  logFile = fs.openSync(path.join(process.env.KAFKAJS_LOG_DIR, name), 'a');
}
const logCreator = () => ({ level, log: entry }) => {
  const { message, ...extra } = entry;
  const line = `[${CLIENT}] ${logLevel[level] || level} ${message} ${JSON.stringify(extra)}\n`;
  process.stderr.write(line);
  if (logFile !== null) fs.writeSync(logFile, line);
};
const kafkajsLogLevel = logLevel[(process.env.KAFKAJS_LOG_LEVEL || 'WARN').toUpperCase()] ?? logLevel.WARN;

function withDeadline(promise, deadline, what) {
  const left = deadline - Date.now();
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: deadline exceeded`)), Math.max(0, left));
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function produce(kafka, a, deadline) {
  const start = Date.now();
  const errors = [];
  const acks = [];
  const sent = [];
  // Idempotence in kafkajs requires maxInFlightRequests: 1 (it refuses more).
  // The partitioner is named explicitly: it is kafkajs 2.x's default (murmur2,
  // Java-compatible), and naming it silences the v2 partitioner warning.
  const producer = kafka.producer({
    idempotent: true,
    maxInFlightRequests: 1,
    createPartitioner: Partitioners.DefaultPartitioner,
  });
  try {
    await withDeadline(producer.connect(), deadline, 'producer connect');
  } catch (e) {
    errors.push(`producer connect: ${e.message}`);
    errors.push(`${a.records} records not sent`);
    return { prefix: a.prefix, acked: 0, errors, acks, elapsed_ms: Date.now() - start };
  }
  try {
    const batch = 500;
    for (let first = 0; first < a.records; first += batch) {
      const seqs = [];
      const messages = [];
      for (let i = first; i < Math.min(a.records, first + batch); i++) {
        seqs.push(i);
        messages.push({
          key: `k-${i % a.keys}`,
          value: `${a.prefix}-${i}`,
          headers: { seq: String(i), client: a.prefix },
        });
      }
      try {
        // acks -1 is required with idempotence.
        const meta = await withDeadline(producer.send({ topic: a.topic, acks: -1, messages }), deadline, 'send');
        sent.push({ seqs, messages, meta });
      } catch (e) {
        for (const s of seqs) errors.push(`seq ${s}: send: ${e.message}`);
      }
    }
  } finally {
    await producer.disconnect().catch((e) => log(`producer disconnect: ${e.message}`));
  }
  if (sent.length > 0) {
    // kafkajs reports one base offset per partition for each send. It groups
    // the messages by partition, keeping their order, so the n-th message sent
    // to partition p in a send sits at base+n. Which partition a message went
    // to is recomputed with the producer's own partitioner, which needs the
    // topic's partitions: ask for them now that the topic surely exists.
    let partitions;
    try {
      partitions = await topicPartitions(kafka, a.topic, deadline);
    } catch (e) {
      errors.push(`topic metadata (to place the acks): ${e.message}`);
      return { prefix: a.prefix, acked: 0, errors, acks, elapsed_ms: Date.now() - start };
    }
    const partitioner = Partitioners.DefaultPartitioner();
    for (const { seqs, messages, meta } of sent) {
      const base = new Map(meta.map((m) => [m.partition, BigInt(m.baseOffset)]));
      const next = new Map();
      for (let j = 0; j < messages.length; j++) {
        const p = partitioner({ topic: a.topic, partitionMetadata: partitions, message: messages[j] });
        const n = next.get(p) || 0n;
        next.set(p, n + 1n);
        if (!base.has(p)) {
          errors.push(`seq ${seqs[j]}: send acknowledged no batch for partition ${p}`);
          continue;
        }
        acks.push({ seq: seqs[j], partition: p, offset: Number(base.get(p) + n) });
      }
    }
  }
  return { prefix: a.prefix, acked: acks.length, errors, acks, elapsed_ms: Date.now() - start };
}

async function topicPartitions(kafka, topic, deadline) {
  const admin = kafka.admin();
  await withDeadline(admin.connect(), deadline, 'admin connect');
  try {
    const md = await withDeadline(admin.fetchTopicMetadata({ topics: [topic] }), deadline, 'metadata');
    return md.topics[0].partitions;
  } finally {
    await admin.disconnect();
  }
}

async function consume(kafka, a, deadline) {
  const start = Date.now();
  const errors = [];
  const records = [];
  let committed = false;
  let timedOut = false;
  const consumer = kafka.consumer({ groupId: a.group, maxWaitTimeInMs: 500 });
  const highest = new Map(); // partition -> highest offset consumed
  let resolveDone;
  const done = new Promise((resolve) => { resolveDone = resolve; });
  consumer.on(consumer.events.CRASH, (e) => {
    errors.push(`consumer crashed: ${e.payload.error && e.payload.error.message}`);
    resolveDone();
  });
  try {
    await withDeadline(consumer.connect(), deadline, 'consumer connect');
    await consumer.subscribe({ topics: [a.topic], fromBeginning: true });
    await consumer.run({
      autoCommit: false,
      eachMessage: async ({ partition, message }) => {
        if (records.length >= a.records) return; // stop is pending: leave the rest uncommitted
        const headers = [];
        for (const [k, v] of Object.entries(message.headers || {})) {
          for (const one of Array.isArray(v) ? v : [v]) {
            headers.push({ key: k, value: one === null || one === undefined ? null : one.toString() });
          }
        }
        records.push({
          partition,
          offset: Number(message.offset),
          key: message.key === null ? null : message.key.toString(),
          value: message.value === null ? null : message.value.toString(),
          headers,
        });
        highest.set(partition, BigInt(message.offset));
        if (records.length >= a.records) resolveDone();
      },
    });
    try {
      await withDeadline(done, deadline, 'consume');
    } catch (e) {
      timedOut = true;
    }
    consumer.pause([{ topic: a.topic }]);
    if (highest.size > 0) {
      try {
        await consumer.commitOffsets([...highest].map(([partition, off]) => ({
          topic: a.topic, partition, offset: String(off + 1n),
        })));
        committed = true;
      } catch (e) {
        errors.push(`commit: ${e.message}`);
      }
    }
  } catch (e) {
    errors.push(`consumer: ${e.message}`);
  } finally {
    await consumer.disconnect().catch((e) => log(`consumer disconnect: ${e.message}`));
  }
  return { records, errors, committed, timed_out: timedOut, elapsed_ms: Date.now() - start };
}

// Live mode (see internal/clientbed/live.go): produce continuously with an
// idempotent producer and consume in a group with auto-commit, until told to
// stop on stdin; every ack, record and error is one JSON line on stdout.
function emit(ev) {
  process.stdout.write(`${JSON.stringify(ev)}\n`);
}

function liveError(side, msg, seq = -1, fatal = false) {
  emit({ ev: 'err', side, seq, fatal, msg: String(msg) });
}

async function live(kafka, a) {
  emit({ ev: 'lib', library: `kafkajs ${kafkajsVersion}` });
  let stopProduce = false;
  let stopAll;
  const stopped = new Promise((resolve) => { stopAll = resolve; });
  let buf = '';
  process.stdin.setEncoding('utf8');
  process.stdin.on('data', (chunk) => {
    buf += chunk;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const cmd = buf.slice(0, i).trim();
      buf = buf.slice(i + 1);
      if (cmd === 'stop-produce') stopProduce = true;
      if (cmd === 'stop') { stopProduce = true; stopAll(); }
    }
  });
  process.stdin.on('end', () => { stopProduce = true; stopAll(); });

  // What kafkajs requires for idempotence: maxInFlightRequests 1, acks -1.
  const producer = kafka.producer({
    idempotent: true,
    maxInFlightRequests: 1,
    createPartitioner: Partitioners.DefaultPartitioner,
  });
  const consumer = kafka.consumer({ groupId: a.group });
  consumer.on(consumer.events.CRASH, (e) => {
    liveError('consume', `consumer crashed: ${e.payload.error && e.payload.error.message}`, -1, true);
  });
  if (logFile !== null) {
    // Diagnostics ($KAFKAJS_LOG_DIR): the group's joins, commits and batches.
    for (const name of ['GROUP_JOIN', 'COMMIT_OFFSETS', 'REBALANCING', 'START_BATCH_PROCESS']) {
      consumer.on(consumer.events[name], (e) => {
        fs.writeSync(logFile, `[${CLIENT}] event ${name} ${new Date(e.timestamp).toISOString()} ${JSON.stringify(e.payload)}\n`);
      });
    }
  }
  await producer.connect();
  // The partitions, to place each record of a send (kafkajs reports one base
  // offset per partition per send; see produce()).
  const admin = kafka.admin();
  await admin.connect();
  const partitions = (await admin.fetchTopicMetadata({ topics: [a.topic] })).topics[0].partitions;
  await admin.disconnect();
  const partitioner = Partitioners.DefaultPartitioner();

  await consumer.connect();
  await consumer.subscribe({ topics: [a.topic], fromBeginning: true });
  // Auto-commit is kafkajs's default (after each batch is processed).
  await consumer.run({
    eachMessage: async ({ partition, message }) => {
      emit({
        ev: 'rec', p: partition, o: Number(message.offset),
        k: message.key === null ? null : message.key.toString(),
        v: message.value === null ? null : message.value.toString(),
      });
    },
  });

  // $KAFKAJS_SEND_PER_PARTITION=1: what docs/COMPATIBILITY.md advises
  // kafkajs users where partition leaders may move — one send() per
  // partition (each message given its partition), so that no send's retry
  // spans brokers. Otherwise one send() takes everything that accumulated.
  const perPartition = process.env.KAFKAJS_SEND_PER_PARTITION === '1';
  const sendsOf = (seqs, messages) => {
    if (!perPartition) return [{ seqs, messages }];
    const byPartition = new Map();
    for (let j = 0; j < messages.length; j++) {
      const p = partitioner({ topic: a.topic, partitionMetadata: partitions, message: messages[j] });
      if (!byPartition.has(p)) byPartition.set(p, { seqs: [], messages: [] });
      byPartition.get(p).seqs.push(seqs[j]);
      byPartition.get(p).messages.push({ ...messages[j], partition: p });
    }
    return [...byPartition.values()];
  };

  // The application's loop: records accumulate at the pace; each send takes
  // what accumulated (a send at a time: concurrent sends of one idempotent
  // producer are not supported by kafkajs).
  let seq = 0;
  const start = Date.now();
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  while (!stopProduce) {
    const due = Math.floor((Date.now() - start) / a.intervalMs) + 1;
    if (due <= seq) {
      await sleep(Math.max(1, a.intervalMs));
      continue;
    }
    const seqs = [];
    const messages = [];
    for (; seq < due; seq++) {
      seqs.push(seq);
      messages.push({ key: `k-${seq % a.keys}`, value: `${a.prefix}-${seq}` });
    }
    for (const send of sendsOf(seqs, messages)) {
      try {
        const meta = await producer.send({ topic: a.topic, acks: -1, messages: send.messages });
        const base = new Map(meta.map((m) => [m.partition, BigInt(m.baseOffset)]));
        const next = new Map();
        for (let j = 0; j < send.messages.length; j++) {
          const p = partitioner({ topic: a.topic, partitionMetadata: partitions, message: send.messages[j] });
          const n = next.get(p) || 0n;
          next.set(p, n + 1n);
          if (!base.has(p)) {
            liveError('produce', `send acknowledged no batch for partition ${p}`, send.seqs[j]);
            continue;
          }
          emit({ ev: 'ack', seq: send.seqs[j], p, o: Number(base.get(p) + n) });
        }
      } catch (e) {
        for (const s of send.seqs) liveError('produce', `send: ${e.message}`, s);
      }
    }
  }
  emit({ ev: 'produced', sent: seq });
  await producer.disconnect().catch((e) => log(`producer disconnect: ${e.message}`));
  await stopped;
  // disconnect stops the consumer, which commits what it processed.
  await consumer.disconnect().catch((e) => liveError('consume', `consumer disconnect: ${e.message}`));
  emit({ ev: 'done' });
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const deadline = Date.now() + a.timeoutMs;
  const kafka = new Kafka({
    clientId: `clientbed-${CLIENT}`,
    brokers: a.bootstrap.split(','),
    logLevel: kafkajsLogLevel,
    logCreator,
  });
  if (a.mode === 'live') {
    await live(kafka, a);
    process.stdout.write('', () => process.exit(0));
    return;
  }
  const out = { client: CLIENT, library: `kafkajs ${kafkajsVersion}` };
  if (a.mode !== 'consume') {
    out.produce = await produce(kafka, a, deadline);
  }
  if (a.mode !== 'produce') {
    out.consume = await consume(kafka, a, deadline);
  }
  const failed = (out.produce && out.produce.errors.length > 0) ||
    (out.consume && (out.consume.errors.length > 0 || out.consume.timed_out));
  // Exit once the report is written: kafkajs may still hold retry timers
  // (say, reconnecting to a dead broker) that would keep node alive.
  process.stdout.write(`${JSON.stringify(out)}\n`, () => process.exit(failed ? 1 : 0));
}

main().catch((e) => {
  log(`crashed: ${e.stack || e}`);
  process.exit(2);
});
