package mirror

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/switchyard/switchyard/internal/kafkatest"
)

// rawBatches fetches every committed data batch of a partition as stored.
func rawBatches(t *testing.T, c *kafkatest.Cluster, topic string, partition int32) []kmsg.RecordBatch {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := c.Client(t, kgo.MaxVersions(clientVersions()))
	ends := c.SettledEnds(ctx, t, topic)
	end, _ := ends.Lookup(topic, partition)
	leaders := &leaderCache{cl: cl}
	var out []kmsg.RecordBatch
	for pos := int64(0); pos < end.Offset; {
		ls, err := leaders.leaders(ctx, []string{topic})
		if err != nil {
			t.Fatal(err)
		}
		req := kmsg.NewPtrFetchRequest()
		req.ReplicaID, req.MaxWaitMillis, req.MinBytes, req.MaxBytes, req.IsolationLevel, req.SessionEpoch = -1, 100, 1, 8<<20, 1, -1
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic = topic
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition, rp.CurrentLeaderEpoch, rp.FetchOffset, rp.LogStartOffset, rp.PartitionMaxBytes = partition, -1, pos, -1, 8<<20
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, cl.Broker(int(ls[topicPart{topic, partition}])))
		if err != nil {
			t.Fatalf("fetch %s/%d: %v", topic, partition, err)
		}
		p := resp.Topics[0].Partitions[0]
		if p.ErrorCode == kerr.OffsetOutOfRange.Code && p.LogStartOffset > pos {
			pos = p.LogStartOffset // kfake moves the log start when compaction empties the first batches
			continue
		}
		if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
			t.Fatalf("fetch %s/%d at %d: %v", topic, partition, pos, err)
		}
		tracker := newAbortTracker(p.AbortedTransactions)
		data, moved := p.RecordBatches, false
		for len(data) >= batchHeaderSize {
			var b kmsg.RecordBatch
			if err := b.ReadFrom(data); err != nil {
				break // truncated at the end of the response
			}
			data = data[batchLength+4+int(b.Length):]
			if next := b.FirstOffset + int64(b.LastOffsetDelta) + 1; next > pos {
				pos, moved = next, true
			}
			if !tracker.aborted(&b) && b.Attributes&attrControl == 0 && b.NumRecords > 0 {
				out = append(out, b)
			}
		}
		if !moved {
			t.Fatalf("fetch %s/%d at %d: no progress", topic, partition, pos)
		}
	}
	return out
}

// TestMirrorPreservesCompressedBatches copies topics compressed with every
// codec and checks the target stores the very compressed bytes the source
// does — no decompression and recompression — besides the records being
// equal.
func TestMirrorPreservesCompressedBatches(t *testing.T) {
	source, target := kafkatest.Pair(t)
	for _, codec := range []kgo.CompressionCodec{kgo.GzipCompression(), kgo.SnappyCompression(), kgo.Lz4Compression(), kgo.ZstdCompression(), kgo.NoCompression()} {
		topic := kafkatest.Topic(t, "codec")
		source.CreateTopic(t, topic, 2)
		// Several batches per partition.
		for from := 0; from < 600; from += 200 {
			produceRecords(t, source, topic, from, 200, kgo.ProducerBatchCompression(codec), kgo.ProducerBatchMaxBytes(2048))
		}
		rm := startMirror(t, kafkatest.Topic(t, "m"), source, target, []string{topic})
		rm.waitCaughtUp(t, source, topic)
		compareCopies(t, rm, readAll(t, source, topic), readAll(t, target, topic), topic)
		for p := int32(0); p < 2; p++ {
			src, dst := rawBatches(t, source, topic, p), rawBatches(t, target, topic, p)
			if len(src) < 2 || len(src) != len(dst) {
				t.Fatalf("%s/%d: %d source batches, %d target batches; want the same number, several", topic, p, len(src), len(dst))
			}
			for i := range src {
				s, d := src[i], dst[i]
				if s.Attributes&attrCodecMask != d.Attributes&attrCodecMask || !bytes.Equal(s.Records, d.Records) ||
					s.NumRecords != d.NumRecords || s.FirstTimestamp != d.FirstTimestamp || s.MaxTimestamp != d.MaxTimestamp {
					t.Errorf("%s/%d batch %d: target batch (codec %d, %d records, %d bytes) is not the source's (codec %d, %d records, %d bytes)",
						topic, p, i, d.Attributes&attrCodecMask, d.NumRecords, len(d.Records), s.Attributes&attrCodecMask, s.NumRecords, len(s.Records))
				}
			}
		}
		rm.stop(t)
	}
}

// TestMirrorCopiesCompactedTopic copies a compacted source whose batches
// have offset gaps (records removed from inside them): a broker rejects
// such a batch produced as is, so the mirror re-encodes it.
func TestMirrorCopiesCompactedTopic(t *testing.T) {
	source, target := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "compacted")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	adm := kadm.NewClient(source.Client(t))
	// No retention, and tombstones kept for a long time
	// (delete.retention.ms counts from the record's time).
	cfg := map[string]*string{"cleanup.policy": kadm.StringPtr("compact"), "retention.ms": kadm.StringPtr("-1"),
		"delete.retention.ms": kadm.StringPtr("9000000000000")}
	if source.Fake == nil {
		cfg["min.cleanable.dirty.ratio"] = kadm.StringPtr("0.01")
		cfg["segment.ms"] = kadm.StringPtr("100")
	}
	if r, err := adm.CreateTopic(ctx, 1, -1, cfg, topic); err != nil || r.Err != nil {
		t.Fatalf("create %s: %v %v", topic, err, r.Err)
	}
	// 20 keys repeated, tombstones among them, in batches of ~20 records;
	// then 10 more that supersede half of the last full batch, which keeps
	// the other half: a batch with a gap inside.
	// A linger makes the batches' edges the byte limit's, whatever the
	// machine's load: without it the first records of each call leave
	// alone, the edges move, and a loaded run may compact whole batches
	// away and leave no gap (1 run of 8 at load 40).
	for from := 0; from < 400; from += 100 {
		produceRecords(t, source, topic, from, 100, kgo.ProducerBatchCompression(kgo.Lz4Compression()), kgo.ProducerBatchMaxBytes(1024),
			kgo.ProducerLinger(200*time.Millisecond))
	}
	produceRecords(t, source, topic, 400, 10, kgo.ProducerBatchCompression(kgo.Lz4Compression()))
	compact(ctx, t, source, topic, 410)
	gapped := 0
	for _, b := range rawBatches(t, source, topic, 0) {
		if b.NumRecords != b.LastOffsetDelta+1 {
			gapped++
		}
	}
	if gapped == 0 {
		t.Fatal("compaction left no batch with offset gaps: the test proves nothing")
	}
	t.Logf("source: %d batches with offset gaps", gapped)

	rm := startMirror(t, kafkatest.Topic(t, "m"), source, target, []string{topic})
	rm.waitCaughtUp(t, source, topic)
	compareCopies(t, rm, readAll(t, source, topic), readAll(t, target, topic), topic)
	for _, b := range rawBatches(t, target, topic, 0) {
		if b.NumRecords != b.LastOffsetDelta+1 {
			t.Errorf("target batch at %d has offset gaps", b.FirstOffset)
		}
	}
}

// compact makes the source compact topic and waits until fewer than
// produced records remain.
func compact(ctx context.Context, t *testing.T, c *kafkatest.Cluster, topic string, produced int) {
	t.Helper()
	if c.Fake != nil {
		c.Fake.Compact()
		return
	}
	// A real broker cleans closed segments only: segment.ms (100) rolls the
	// active segment on the next write after it, so keep writing (one key
	// more each time) until the cleaner has run.
	for {
		produceRecords(t, c, topic, produced, 1)
		produced++
		n := 0
		for _, rs := range readAll(t, c, topic) {
			n += len(rs)
		}
		if n < produced {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the source did not compact %s (still %d records); is log.cleaner.backoff.ms small on the test bed?", topic, n)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// TestMirrorIsolatesFailingPartition: a partition the target rejects (its
// batches exceed the target topic's max.message.bytes) fails with a clear
// error in Status while every other partition is copied.
func TestMirrorIsolatesFailingPartition(t *testing.T) {
	source, target := kafkatest.Pair(t)
	good, bad := kafkatest.Topic(t, "good"), kafkatest.Topic(t, "bad")
	source.CreateTopic(t, good, 2)
	source.CreateTopic(t, bad, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rm := startMirror(t, kafkatest.Topic(t, "m"), source, target, []string{good, bad}, func(c *Config) {
		c.TopicSyncInterval = time.Hour // the first sync only: it would undo the smaller limit below
	})
	for rm.OffsetMap(bad, 0) == nil || rm.OffsetMap(good, 1) == nil {
		select {
		case <-ctx.Done():
			t.Fatalf("topics not synced: %+v", rm.Status())
		case <-time.After(20 * time.Millisecond):
		}
	}
	// The target now takes batches of at most 200 bytes for bad.
	alter := []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "max.message.bytes", Value: kadm.StringPtr("200")}}
	if rs, err := kadm.NewClient(target.Client(t)).AlterTopicConfigs(ctx, alter, bad); err != nil || rs[0].Err != nil {
		t.Fatalf("alter %s on the target: %v %v", bad, err, rs)
	}
	produceRecords(t, source, good, 0, 300)
	produceRecords(t, source, bad, 0, 300)
	rm.waitCaughtUp(t, source, good)
	compareCopies(t, rm, readAll(t, source, good), readAll(t, target, good), good)
	for {
		var ps *PartitionStatus
		for _, p := range rm.Status().Partitions {
			if p.Topic == bad {
				ps = &p
			}
		}
		// It may fail first for another reason (no leader yet for a topic
		// the mirror just created): wait for the broker's reason.
		if ps != nil && ps.Failing && (strings.Contains(ps.LastError, "MESSAGE_TOO_LARGE") || strings.Contains(ps.LastError, "RECORD_LIST_TOO_LARGE")) {
			if ps.Next != 0 || ps.LagRecords == 0 {
				t.Errorf("%s: next %d, lag %d; want nothing copied and the lag shown", bad, ps.Next, ps.LagRecords)
			}
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s never reported failing because the target refuses its batches: %+v", bad, rm.Status())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestMirrorFollowsPartitionIncrease adds partitions to a mirrored source
// topic while the mirror runs: the target grows too and the new partitions
// are copied.
func TestMirrorFollowsPartitionIncrease(t *testing.T) {
	source, target := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "grow")
	source.CreateTopic(t, topic, 2)
	produceRecords(t, source, topic, 0, 200)
	rm := startMirror(t, kafkatest.Topic(t, "m"), source, target, []string{topic})
	rm.waitCaughtUp(t, source, topic)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if rs, err := kadm.NewClient(source.Client(t)).UpdatePartitions(ctx, 4, topic); err != nil || rs[topic].Err != nil {
		t.Fatalf("add partitions to %s: %v %v", topic, err, rs[topic].Err)
	}
	// A real broker learns of the new partitions asynchronously; a producer
	// whose first metadata still shows two refuses partition 2 outright.
	source.WaitPartitions(t, topic, 4)
	// Write to every partition explicitly, the new ones included.
	cl := source.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for i := 0; i < 400; i++ {
		r := &kgo.Record{Topic: topic, Partition: int32(i % 4), Key: []byte(fmt.Sprint(i)), Value: []byte(fmt.Sprint(i))}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatalf("produce to partition %d: %v", i%4, err)
		}
	}
	for rm.OffsetMap(topic, 3) == nil {
		select {
		case <-ctx.Done():
			t.Fatalf("the mirror never picked up the new partitions: %+v", rm.Status())
		case <-time.After(20 * time.Millisecond):
		}
	}
	rm.waitCaughtUp(t, source, topic)
	src, dst := readAll(t, source, topic), readAll(t, target, topic)
	if len(src) != 4 {
		t.Fatalf("source has records in %d partitions, want 4", len(src))
	}
	compareCopies(t, rm, src, dst, topic)
}

// TestBrokerRejectsGappedBatch records why gapped batches are re-encoded:
// a real broker refuses a batch whose record count does not match its
// offset range (Kafka's LogValidator: "Inconsistent batch offset range").
func TestBrokerRejectsGappedBatch(t *testing.T) {
	_, target := kafkatest.Pair(t)
	if target.Fake != nil {
		t.Skip("the rule is the real broker's")
	}
	topic := kafkatest.Topic(t, "gapped")
	target.CreateTopic(t, topic, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := target.Client(t, kgo.MaxVersions(clientVersions()))
	leaders, err := (&leaderCache{cl: cl}).leaders(ctx, []string{topic})
	if err != nil {
		t.Fatal(err)
	}
	for codec, name := range map[int16]string{0: "uncompressed", 3: "lz4"} {
		raw := sourceBatch(t, 0, codec, time.Now().UnixMilli(), -1,
			testRecord{offsetDelta: 0, key: []byte("a")}, testRecord{offsetDelta: 2, key: []byte("b")})
		binary.BigEndian.PutUint16(raw[batchProducerEpoch:], 0xffff)
		binary.BigEndian.PutUint32(raw[batchBaseSequence:], 0xffffffff)
		binary.BigEndian.PutUint32(raw[batchCRC:], crc32.Checksum(raw[batchAttributes:], castagnoli))
		req := kmsg.NewPtrProduceRequest()
		req.Acks, req.TimeoutMillis = -1, 10000
		rt := kmsg.NewProduceRequestTopic()
		rt.Topic = topic
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Records = raw
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, cl.Broker(int(leaders[topicPart{topic, 0}])))
		if err != nil {
			t.Fatal(err)
		}
		code := resp.Topics[0].Partitions[0].ErrorCode
		if code == 0 {
			t.Errorf("%s gapped batch accepted: the re-encode rule can be relaxed", name)
			continue
		}
		msg := ""
		if m := resp.Topics[0].Partitions[0].ErrorMessage; m != nil {
			msg = *m
		}
		t.Logf("%s gapped batch: %v %s", name, kerr.ErrorForCode(code), msg)
	}
}

// TestMirrorScaleOutSharesPartitions runs two processes of one mirror:
// they split the partitions through the group, one stops mid-copy, the
// other takes its partitions over from the committed checkpoint, and the
// copy ends exact — no gap, no duplicate.
func TestMirrorScaleOutSharesPartitions(t *testing.T) {
	source, target := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "scale")
	source.CreateTopic(t, topic, 6)
	target.CreateTopic(t, topic, 6)
	produceRecords(t, source, topic, 0, 3000, kgo.ProducerBatchMaxBytes(1024))
	name := kafkatest.Topic(t, "m")
	scale := func(instance string) func(*Config) {
		return func(c *Config) {
			c.ScaleOut, c.Instance = true, instance
			c.TxnMaxRecords = 40 // many small transactions: the stop lands mid-copy
			c.TxnTimeout = 5 * time.Second
			c.GroupSessionTimeout = 6 * time.Second
		}
	}
	a := startMirror(t, name, source, target, []string{topic}, scale("a"))
	b := startMirror(t, name, source, target, []string{topic}, scale("b"))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	owned := func(rm *runningMirror) map[int32]bool {
		out := map[int32]bool{}
		for _, p := range rm.Status().Partitions {
			out[p.Partition] = true
		}
		return out
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			select {
			case <-ctx.Done():
				t.Fatalf("%s: not within 90s (a owns %v, b owns %v)", what, owned(a), owned(b))
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	waitFor("both copy a share", func() bool {
		oa, ob := owned(a), owned(b)
		if len(oa) == 0 || len(ob) == 0 || len(oa)+len(ob) != 6 {
			return false
		}
		for p := range oa {
			if ob[p] {
				t.Fatalf("partition %d copied by both processes", p)
			}
		}
		return true
	})
	t.Logf("a copies %v, b copies %v", owned(a), owned(b))
	produceRecords(t, source, topic, 3000, 1000, kgo.ProducerBatchMaxBytes(1024))
	b.stop(t)
	waitFor("a takes every partition over", func() bool { return len(owned(a)) == 6 })
	produceRecords(t, source, topic, 4000, 1000, kgo.ProducerBatchMaxBytes(1024))
	ends := source.SettledEnds(ctx, t, topic)
	waitFor("the copy completes", func() bool {
		done := true
		ends.Each(func(o kadm.ListedOffset) {
			if om := a.OffsetMap(topic, o.Partition); om == nil || om.Next() < o.Offset {
				done = false
			}
		})
		return done
	})
	if ok, behind, err := a.CaughtUp(ctx, topic); !ok || err != nil {
		t.Errorf("CaughtUp (from the committed checkpoints): false at %s (%v)", behind, err)
	}
	compareCopies(t, a, readAll(t, source, topic), readAll(t, target, topic), topic)
}
