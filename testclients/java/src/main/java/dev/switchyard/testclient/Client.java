package dev.switchyard.testclient;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import org.apache.kafka.clients.consumer.CloseOptions;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * Java Kafka client (kafka-clients) for the Switchyard client bed.
 *
 * <p>Produces N keyed records with the default producer settings (idempotent since Kafka 3.0)
 * and/or consumes them in a consumer group, then prints one JSON document on stdout (schema: see
 * testclients/README.md). Logs go to stderr. With {@code --mode live} it runs as a live application
 * instead (see {@link Live}).
 *
 * <p>Exit status: 0 when the run completed with no error, 1 when it completed but reported errors
 * (the JSON is still printed), 2 on a usage error or crash.
 */
public final class Client {
    private static final String CLIENT = "java";

    private String bootstrap;
    private String topic;
    private String group = "";
    private int records = -1;
    private int keys = 10;
    private String mode = "both";
    private long timeoutMs = 60000;
    private String prefix = CLIENT;
    private long intervalMs = 5;
    private String transactionalId = "";
    private int txnRecords = 20;
    private int txnAbortEvery = 0;
    private String groupProtocol = "";
    private String instanceId = "";

    public static void main(String[] args) {
        int code;
        try {
            code = new Client().run(args);
        } catch (UsageException e) {
            System.err.println("[java] " + e.getMessage());
            System.err.println("usage: java -jar testclient.jar --bootstrap H:P[,H:P] --topic T [--group G] --records N"
                    + " [--keys K] [--mode produce|consume|both] [--timeout-ms MS] [--prefix P]");
            System.err.println("       java -jar testclient.jar --mode live --bootstrap H:P --topic T --group G"
                    + " [--keys K] [--prefix P] [--interval-ms MS]"
                    + " [--transactional-id ID [--txn-records N] [--txn-abort-every M]]"
                    + " [--group-protocol classic|consumer] [--instance-id ID]");
            code = 2;
        } catch (Exception e) {
            System.err.println("[java] crashed: " + e);
            e.printStackTrace(System.err);
            code = 2;
        }
        System.out.flush();
        System.exit(code);
    }

    private static final class UsageException extends Exception {
        UsageException(String msg) {
            super(msg);
        }
    }

    private void parse(String[] args) throws UsageException {
        for (int i = 0; i < args.length; i += 2) {
            if (i + 1 >= args.length) {
                throw new UsageException("missing value for " + args[i]);
            }
            String v = args[i + 1];
            try {
                switch (args[i]) {
                    case "--bootstrap" -> bootstrap = v;
                    case "--topic" -> topic = v;
                    case "--group" -> group = v;
                    case "--records" -> records = Integer.parseInt(v);
                    case "--keys" -> keys = Integer.parseInt(v);
                    case "--mode" -> mode = v;
                    case "--timeout-ms" -> timeoutMs = Long.parseLong(v);
                    case "--prefix" -> prefix = v;
                    case "--interval-ms" -> intervalMs = Long.parseLong(v);
                    case "--transactional-id" -> transactionalId = v;
                    case "--txn-records" -> txnRecords = Integer.parseInt(v);
                    case "--txn-abort-every" -> txnAbortEvery = Integer.parseInt(v);
                    case "--group-protocol" -> groupProtocol = v;
                    case "--instance-id" -> instanceId = v;
                    default -> throw new UsageException("unknown flag " + args[i]);
                }
            } catch (NumberFormatException e) {
                throw new UsageException("bad number for " + args[i] + ": " + v);
            }
        }
        if (!List.of("produce", "consume", "both", "live").contains(mode)) {
            throw new UsageException("bad --mode " + mode);
        }
        if (bootstrap == null || topic == null || (records < 0 && !mode.equals("live"))) {
            throw new UsageException("--bootstrap, --topic and --records are required");
        }
        if (intervalMs < 1) {
            throw new UsageException("--interval-ms must be >= 1");
        }
        if (!mode.equals("produce") && group.isEmpty()) {
            throw new UsageException("--group is required to consume");
        }
        if (keys < 1) {
            throw new UsageException("--keys must be >= 1");
        }
        if (!transactionalId.isEmpty() && !mode.equals("live")) {
            throw new UsageException("--transactional-id is for --mode live");
        }
        if (txnRecords < 1 || txnAbortEvery < 0) {
            throw new UsageException("--txn-records must be >= 1 and --txn-abort-every >= 0");
        }
    }

    private int run(String[] args) throws Exception {
        parse(args);
        if (mode.equals("live")) {
            return new Live().run();
        }
        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMs);
        Json out = new Json().beginObject();
        out.field("client").value(CLIENT);
        out.field("library").value("kafka-clients " + kafkaVersion());
        boolean failed = false;
        if (!mode.equals("consume")) {
            failed |= produce(out, deadline);
        }
        if (!mode.equals("produce")) {
            failed |= consume(out, deadline);
        }
        out.endObject();
        System.out.println(out);
        return failed ? 1 : 0;
    }

    /** The kafka-clients version, from the properties file its jar carries. */
    private static String kafkaVersion() {
        try (InputStream in = KafkaProducer.class.getResourceAsStream("/kafka/kafka-version.properties")) {
            Properties p = new Properties();
            if (in != null) {
                p.load(in);
            }
            return p.getProperty("version", "unknown");
        } catch (IOException e) {
            return "unknown (" + e + ")";
        }
    }

    private static long leftMs(long deadline) {
        return Math.max(0, TimeUnit.NANOSECONDS.toMillis(deadline - System.nanoTime()));
    }

    private record Ack(int seq, int partition, long offset) {}

    /** Produces the records; returns true if any error was reported. */
    private boolean produce(Json out, long deadline) {
        long start = System.nanoTime();
        ConcurrentLinkedQueue<String> errors = new ConcurrentLinkedQueue<>();
        ConcurrentLinkedQueue<Ack> acks = new ConcurrentLinkedQueue<>();
        AtomicInteger pending = new AtomicInteger();

        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.CLIENT_ID_CONFIG, "clientbed-" + CLIENT);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        // Everything else is the default: enable.idempotence=true, acks=all,
        // max.in.flight.requests.per.connection=5. Only the delivery timeout
        // follows the run's budget (it must be >= linger.ms + request.timeout.ms).
        // max.block.ms bounds a send() waiting for metadata (a dead broker).
        long budget = Math.max(leftMs(deadline), 30_000 + 5);
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, (int) Math.min(Integer.MAX_VALUE, budget));
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, Math.max(1, Math.min(60_000, leftMs(deadline))));

        CountDownLatch reported = new CountDownLatch(records);
        KafkaProducer<byte[], byte[]> producer = null;
        try {
            producer = new KafkaProducer<>(p);
            for (int i = 0; i < records; i++) {
                final int seq = i;
                if (leftMs(deadline) == 0) {
                    errors.add((records - i) + " records not sent: deadline");
                    for (int j = i; j < records; j++) {
                        reported.countDown();
                    }
                    break;
                }
                RecordHeaders headers = new RecordHeaders();
                headers.add("seq", bytes(Integer.toString(i)));
                headers.add("client", bytes(prefix));
                ProducerRecord<byte[], byte[]> rec = new ProducerRecord<>(topic, null,
                        bytes("k-" + (i % keys)), bytes(prefix + "-" + i), headers);
                pending.incrementAndGet();
                try {
                    producer.send(rec, (md, err) -> {
                        if (err != null) {
                            errors.add("seq " + seq + ": delivery failed: " + err);
                        } else {
                            acks.add(new Ack(seq, md.partition(), md.offset()));
                        }
                        pending.decrementAndGet();
                        reported.countDown();
                    });
                } catch (RuntimeException e) {
                    pending.decrementAndGet();
                    reported.countDown();
                    errors.add("seq " + seq + ": send: " + e);
                }
            }
            // Wait for every delivery report, but not past the deadline.
            if (!reported.await(leftMs(deadline), TimeUnit.MILLISECONDS)) {
                errors.add(pending.get() + " records had no delivery report by the deadline");
            }
        } catch (RuntimeException e) {
            errors.add("producer: " + e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            errors.add("producer: interrupted");
        } finally {
            if (producer != null) {
                // Records still pending fail (with a callback) when the close times out.
                producer.close(Duration.ofMillis(leftMs(deadline)));
            }
        }

        out.field("produce").beginObject();
        out.field("prefix").value(prefix);
        out.field("acked").value(acks.size());
        out.field("errors").beginArray();
        for (String e : errors) {
            out.value(e);
        }
        out.endArray();
        out.field("acks").beginArray();
        for (Ack a : acks) {
            out.beginObject();
            out.field("seq").value(a.seq());
            out.field("partition").value(a.partition());
            out.field("offset").value(a.offset());
            out.endObject();
        }
        out.endArray();
        out.field("elapsed_ms").value(TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - start));
        out.endObject();
        return !errors.isEmpty();
    }

    /** Consumes the records in the group; returns true if any error was reported. */
    private boolean consume(Json out, long deadline) {
        long start = System.nanoTime();
        List<String> errors = new ArrayList<>();
        List<ConsumerRecord<byte[], byte[]>> got = new ArrayList<>();
        boolean committed = false;
        boolean timedOut = false;

        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ConsumerConfig.CLIENT_ID_CONFIG, "clientbed-" + CLIENT);
        p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());

        KafkaConsumer<byte[], byte[]> consumer = null;
        try {
            consumer = new KafkaConsumer<>(p);
            consumer.subscribe(List.of(topic));
            while (got.size() < records) {
                long left = leftMs(deadline);
                if (left == 0) {
                    timedOut = true;
                    break;
                }
                ConsumerRecords<byte[], byte[]> batch = consumer.poll(Duration.ofMillis(Math.min(left, 1000)));
                for (ConsumerRecord<byte[], byte[]> r : batch) {
                    got.add(r);
                }
            }
            if (!got.isEmpty()) {
                // Commits the positions of the last poll: every record returned was recorded.
                try {
                    consumer.commitSync(Duration.ofMillis(Math.max(leftMs(deadline), 10_000)));
                    committed = true;
                } catch (RuntimeException e) {
                    errors.add("commit: " + e);
                }
            }
        } catch (RuntimeException e) {
            errors.add("consumer: " + e);
        } finally {
            if (consumer != null) {
                // Leaves the group; bounded, as the coordinator may be gone.
                consumer.close(CloseOptions.timeout(Duration.ofSeconds(5)));
            }
        }

        out.field("consume").beginObject();
        out.field("records").beginArray();
        for (ConsumerRecord<byte[], byte[]> r : got) {
            out.beginObject();
            out.field("partition").value(r.partition());
            out.field("offset").value(r.offset());
            out.field("key").value(string(r.key()));
            out.field("value").value(string(r.value()));
            out.field("headers").beginArray();
            for (Header h : r.headers()) {
                out.beginObject();
                out.field("key").value(h.key());
                out.field("value").value(string(h.value()));
                out.endObject();
            }
            out.endArray();
            out.endObject();
        }
        out.endArray();
        out.field("errors").beginArray();
        for (String e : errors) {
            out.value(e);
        }
        out.endArray();
        out.field("committed").value(committed);
        out.field("timed_out").value(timedOut);
        out.field("elapsed_ms").value(TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - start));
        out.endObject();
        return !errors.isEmpty() || timedOut;
    }

    /**
     * Live mode (see internal/clientbed/live.go): produces continuously with the default producer
     * settings (idempotent) and consumes in a group with the default auto-commit, until told to
     * stop on stdin. Every ack, record and error is one JSON line on stdout. With
     * --transactional-id the producer is transactional (a transaction per --txn-records records,
     * every --txn-abort-every-th aborted) and the consumer reads read_committed.
     */
    private final class Live {
        private final Object out = new Object();
        private final CountDownLatch stopProduce = new CountDownLatch(1);
        private final CountDownLatch stop = new CountDownLatch(1);

        private void emit(Json ev) {
            synchronized (out) {
                System.out.println(ev);
                System.out.flush();
            }
        }

        private void error(String side, int seq, boolean fatal, String msg) {
            emit(new Json().beginObject().field("ev").value("err").field("side").value(side).field("seq").value(seq)
                    .field("fatal").value(fatal).field("msg").value(msg).endObject());
        }

        int run() throws Exception {
            emit(new Json().beginObject().field("ev").value("lib").field("library").value("kafka-clients " + kafkaVersion()).endObject());
            Thread commands = new Thread(() -> {
                try (var in = new java.io.BufferedReader(new java.io.InputStreamReader(System.in, StandardCharsets.UTF_8))) {
                    String line;
                    while ((line = in.readLine()) != null) {
                        if (line.trim().equals("stop-produce")) {
                            stopProduce.countDown();
                        } else if (line.trim().equals("stop")) {
                            break;
                        }
                    }
                } catch (IOException e) {
                    System.err.println("[java] stdin: " + e);
                }
                stopProduce.countDown();
                stop.countDown();
            }, "commands");
            commands.setDaemon(true);
            commands.start();

            Thread consumerThread = new Thread(this::consume, "consumer");
            consumerThread.start();
            produce();
            consumerThread.join();
            emit(new Json().beginObject().field("ev").value("done").endObject());
            return 0;
        }

        private void produce() throws InterruptedException {
            if (!transactionalId.isEmpty()) {
                produceTransactional();
                return;
            }
            Properties p = new Properties();
            p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            p.put(ProducerConfig.CLIENT_ID_CONFIG, "clientbed-live-" + prefix);
            p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
            p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
            // Everything else is the default: enable.idempotence=true, acks=all, 5 in flight,
            // delivery.timeout.ms=120000.
            int seq = 0;
            try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
                long next = System.nanoTime();
                while (!stopProduce.await(Math.max(0, next - System.nanoTime()), TimeUnit.NANOSECONDS)) {
                    final int s = seq++;
                    next += TimeUnit.MILLISECONDS.toNanos(intervalMs);
                    try {
                        producer.send(new ProducerRecord<>(topic, bytes("k-" + (s % keys)), bytes(prefix + "-" + s)), (md, err) -> {
                            if (err != null) {
                                error("produce", s, false, "delivery failed: " + err);
                            } else {
                                emit(new Json().beginObject().field("ev").value("ack").field("seq").value(s)
                                        .field("p").value(md.partition()).field("o").value(md.offset()).endObject());
                            }
                        });
                    } catch (RuntimeException e) {
                        error("produce", s, false, "send: " + e);
                    }
                }
                // Every record sent gets its delivery report.
                producer.flush();
            } catch (RuntimeException e) {
                error("produce", -1, true, "producer: " + e);
            }
            emit(new Json().beginObject().field("ev").value("produced").field("sent").value(seq).endObject());
        }

        /** One transaction of the transactional producer: its records and their delivery reports. */
        private static final class Txn {
            final int number;
            final boolean abort;
            final List<Integer> seqs = new ArrayList<>();
            /** seq -> RecordMetadata, or the Exception its callback or send() gave. */
            final Map<Integer, Object> results = new ConcurrentHashMap<>();

            Txn(int number, boolean abort) {
                this.number = number;
                this.abort = abort;
            }
        }

        /**
         * The transactional producer: transactional.id --transactional-id, a transaction per
         * --txn-records records, committed; every --txn-abort-every-th one is aborted once its
         * records are written. Acks are printed for committed records only, after the commit
         * returned; the records of an aborted transaction as "abort" events.
         */
        private void produceTransactional() throws InterruptedException {
            Properties p = new Properties();
            p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            p.put(ProducerConfig.CLIENT_ID_CONFIG, "clientbed-live-" + prefix);
            p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
            p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
            p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, transactionalId);
            // Everything else is the default: idempotent, acks=all, 5 in flight,
            // transaction.timeout.ms=60000, max.block.ms=60000 (bounds the commit).
            int seq = 0;
            Txn txn = null;
            try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
                producer.initTransactions();
                long next = System.nanoTime();
                int number = 0;
                boolean broken = false;
                while (!broken) {
                    boolean stopping = stopProduce.await(Math.max(0, next - System.nanoTime()), TimeUnit.NANOSECONDS);
                    if (txn != null && (stopping || txn.seqs.size() >= txnRecords)) {
                        Txn t = txn;
                        txn = null;
                        broken = !end(producer, t);
                    }
                    if (stopping || broken) {
                        break;
                    }
                    if (txn == null) {
                        number++;
                        producer.beginTransaction();
                        txn = new Txn(number, txnAbortEvery > 0 && number % txnAbortEvery == 0);
                    }
                    final int s = seq++;
                    final Txn t = txn;
                    next += TimeUnit.MILLISECONDS.toNanos(intervalMs);
                    t.seqs.add(s);
                    try {
                        producer.send(new ProducerRecord<>(topic, bytes("k-" + (s % keys)), bytes(prefix + "-" + s)),
                                (md, err) -> t.results.put(s, err != null ? err : md));
                    } catch (RuntimeException e) {
                        t.results.put(s, e);
                    }
                }
            } catch (RuntimeException e) {
                // initTransactions, beginTransaction or close: the open transaction's records
                // get no other report.
                if (txn != null) {
                    for (int s : txn.seqs) {
                        error("produce", s, true, "transaction " + txn.number + " left open: " + e);
                    }
                }
                error("produce", -1, true, "producer: " + e);
            }
            emit(new Json().beginObject().field("ev").value("produced").field("sent").value(seq).endObject());
        }

        /**
         * Ends a transaction (commit, or flush and abort) and reports its records. Returns false
         * when the producer cannot go on (a transaction that failed and could not be aborted).
         */
        private boolean end(KafkaProducer<byte[], byte[]> producer, Txn t) throws InterruptedException {
            String what = t.abort ? "abortTransaction" : "commitTransaction";
            try {
                if (t.abort) {
                    // The records are written before the abort: it has something to hide.
                    producer.flush();
                    producer.abortTransaction();
                } else {
                    producer.commitTransaction();
                }
            } catch (RuntimeException e) {
                for (int s : t.seqs) {
                    error("produce", s, false, "transaction " + t.number + ": " + what + ": " + e);
                }
                try {
                    producer.abortTransaction();
                    return true;
                } catch (RuntimeException e2) {
                    error("produce", -1, true, "transaction " + t.number + ": abortTransaction after a failed "
                            + what + ": " + e2);
                    return false;
                }
            }
            // Both flush first, and a flush returns once the callbacks ran; wait a little anyway.
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
            while (t.results.size() < t.seqs.size() && System.nanoTime() < deadline) {
                Thread.sleep(1);
            }
            for (int s : t.seqs) {
                Object r = t.results.get(s);
                if (r instanceof RecordMetadata md) {
                    emit(new Json().beginObject().field("ev").value(t.abort ? "abort" : "ack").field("seq").value(s)
                            .field("p").value(md.partition()).field("o").value(md.offset()).endObject());
                } else if (r == null) {
                    error("produce", s, false, "transaction " + t.number + " ended (" + what + ") without its delivery report");
                } else {
                    error("produce", s, false, "transaction " + t.number + ": delivery failed: " + r);
                }
            }
            return true;
        }

        private void consume() {
            Properties p = new Properties();
            p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            p.put(ConsumerConfig.CLIENT_ID_CONFIG, "clientbed-live-" + prefix);
            p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
            p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
            if (!transactionalId.isEmpty()) {
                // Records of aborted (and open) transactions stay invisible.
                p.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
            }
            if (!groupProtocol.isEmpty()) {
                // "consumer": KIP-848, the broker assigns (Kafka 4.0+).
                p.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, groupProtocol);
            }
            if (!instanceId.isEmpty()) {
                // A static member.
                p.put(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, instanceId);
            }
            p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
            p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
            // Default: enable.auto.commit=true, every 5 s, in poll and on close.
            try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(p)) {
                consumer.subscribe(List.of(topic));
                while (stop.getCount() > 0) {
                    try {
                        for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(200))) {
                            emit(new Json().beginObject().field("ev").value("rec").field("p").value(r.partition())
                                    .field("o").value(r.offset()).field("k").value(string(r.key()))
                                    .field("v").value(string(r.value())).endObject());
                        }
                    } catch (RuntimeException e) {
                        error("consume", -1, false, "poll: " + e);
                    }
                }
                // close() commits the position (auto-commit) and leaves the group.
            } catch (RuntimeException e) {
                error("consume", -1, true, "consumer: " + e);
            }
        }
    }

    private static byte[] bytes(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    private static String string(byte[] b) {
        return b == null ? null : new String(b, StandardCharsets.UTF_8);
    }

    /** A minimal streaming JSON writer (no dependency beyond kafka-clients). */
    static final class Json {
        private final StringBuilder sb = new StringBuilder(1 << 16);
        private final Map<Integer, Boolean> first = new HashMap<>();
        private int depth;
        private boolean afterField;

        Json beginObject() {
            sep();
            sb.append('{');
            first.put(++depth, true);
            return this;
        }

        Json endObject() {
            sb.append('}');
            depth--;
            return this;
        }

        Json beginArray() {
            sep();
            sb.append('[');
            first.put(++depth, true);
            return this;
        }

        Json endArray() {
            sb.append(']');
            depth--;
            return this;
        }

        Json field(String name) {
            sep();
            str(name);
            sb.append(':');
            afterField = true;
            return this;
        }

        Json value(String s) {
            sep();
            if (s == null) {
                sb.append("null");
            } else {
                str(s);
            }
            return this;
        }

        Json value(long n) {
            sep();
            sb.append(n);
            return this;
        }

        Json value(boolean b) {
            sep();
            sb.append(b);
            return this;
        }

        private void sep() {
            if (afterField) {
                afterField = false;
                return;
            }
            if (depth > 0) {
                if (!first.get(depth)) {
                    sb.append(',');
                }
                first.put(depth, false);
            }
        }

        private void str(String s) {
            sb.append('"');
            for (int i = 0; i < s.length(); i++) {
                char c = s.charAt(i);
                switch (c) {
                    case '"' -> sb.append("\\\"");
                    case '\\' -> sb.append("\\\\");
                    case '\n' -> sb.append("\\n");
                    case '\r' -> sb.append("\\r");
                    case '\t' -> sb.append("\\t");
                    default -> {
                        if (c < 0x20) {
                            sb.append(String.format("\\u%04x", (int) c));
                        } else {
                            sb.append(c);
                        }
                    }
                }
            }
            sb.append('"');
        }

        @Override
        public String toString() {
            return sb.toString();
        }
    }
}
