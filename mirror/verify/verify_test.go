package verify_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/switchyard/switchyard/internal/kafkatest"
	"github.com/switchyard/switchyard/kafkasec"
	"github.com/switchyard/switchyard/mirror"
	"github.com/switchyard/switchyard/mirror/topics"
	"github.com/switchyard/switchyard/mirror/verify"
)

// runMirror runs a mirror of topic from source to target in the
// background until stop (or the end of the test) and returns its name.
func runMirror(t *testing.T, source, target *kafkatest.Cluster, topic string, mutate ...func(*mirror.Config)) (*mirror.Mirror, func()) {
	t.Helper()
	cfg := mirror.DefaultConfig()
	cfg.Name = kafkatest.Topic(t, "m")
	cfg.SourceBootstrap, cfg.TargetBootstrap = source.Bootstrap, target.Bootstrap
	cfg.Source, cfg.Target = source.Security, target.Security
	cfg.Topics = topics.Policy{Include: []string{topic}}
	cfg.TxnMaxRecords = 100
	cfg.TxnMaxInterval = 50 * time.Millisecond
	cfg.TopicSyncInterval = 200 * time.Millisecond
	for _, m := range mutate {
		m(&cfg)
	}
	mr, err := mirror.New(cfg, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)), prometheus.NewRegistry())
	if err != nil {
		t.Fatalf("new mirror: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mr.Run(ctx) }()
	stopped := false
	stop := func() {
		t.Helper()
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("mirror run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("mirror did not stop within 20s")
		}
	}
	t.Cleanup(stop)
	return mr, stop
}

// waitCaughtUp polls until every partition of topic is copied up to the
// source's end offsets once its transactions are settled.
func waitCaughtUp(t *testing.T, mr *mirror.Mirror, source, target *kafkatest.Cluster, topic string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ends := source.SettledEnds(ctx, t, topic)
	for {
		behind := ""
		ends.Each(func(o kadm.ListedOffset) {
			if om := mr.OffsetMap(topic, o.Partition); behind == "" && (om == nil || om.Next() < o.Offset) {
				behind = fmt.Sprintf("%s/%d", topic, o.Partition)
			}
		})
		if behind == "" {
			// Also in the committed checkpoint topic, which verify reads
			// (a broker answers EndTxn before it writes the markers that
			// make the last delta readable).
			sec, err := kafkasec.New(ctx, "target", target.Security)
			if err != nil {
				t.Fatal(err)
			}
			maps, err := mirror.ReadOffsetMaps(ctx, target.Bootstrap, mr.Status().Name, sec.KgoOpts(0)...)
			ends.Each(func(o kadm.ListedOffset) {
				if m := maps[mirror.TopicPartition{Topic: topic, Partition: o.Partition}]; behind == "" && (err != nil || m == nil || m.Next() < o.Offset) {
					behind = fmt.Sprintf("%s/%d (committed)", topic, o.Partition)
				}
			})
		}
		if behind == "" {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("mirror not caught up on %s within 60s: %+v", behind, mr.Status())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// produce writes n records per call to topic, spread over partitions by
// key, with headers, tombstones, and null and empty keys and values.
func produce(t *testing.T, c *kafkatest.Cluster, topic string, from, n int, opts ...kgo.Opt) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := c.Client(t, opts...)
	var rs []*kgo.Record
	for i := from; i < from+n; i++ {
		r := &kgo.Record{Topic: topic, Key: []byte(fmt.Sprintf("k-%d", i%20)), Value: []byte(fmt.Sprintf("v-%d", i)),
			Headers:   []kgo.RecordHeader{{Key: "seq", Value: []byte(fmt.Sprint(i))}, {Key: "trace", Value: nil}},
			Timestamp: time.UnixMilli(1_700_000_000_000 + int64(i))}
		switch i % 11 {
		case 3:
			r.Value = nil // a tombstone
		case 5:
			r.Value = []byte{}
		case 7:
			r.Key = []byte{}
		}
		rs = append(rs, r)
	}
	if err := cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

func runVerify(t *testing.T, cfg verify.Config) verify.Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rep, err := verify.Run(ctx, cfg)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	return rep
}

func configFor(source, target *kafkatest.Cluster, name string) verify.Config {
	cfg := verify.DefaultConfig()
	cfg.SourceBootstrap, cfg.TargetBootstrap, cfg.Mirror = source.Bootstrap, target.Bootstrap, name
	cfg.Source, cfg.Target = source.Security, target.Security
	cfg.PartitionTimeout = 30 * time.Second
	return cfg
}

func mirrorName(mr *mirror.Mirror) string { return mr.Status().Name }

func TestVerifyFaithfulCopy(t *testing.T) {
	source, target := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "verify")
	source.CreateTopic(t, topic, 3)
	produce(t, source, topic, 0, 600)
	// An aborted transaction and its markers: offsets the copy skips.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	txn := source.Client(t, kgo.TransactionalID("src-"+topic), kgo.DefaultProduceTopic(topic))
	for _, commit := range []bool{false, true} {
		if err := txn.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 30; i++ {
			if err := txn.ProduceSync(ctx, &kgo.Record{Key: []byte(fmt.Sprint("t", i)), Value: []byte(fmt.Sprint(commit, i))}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		if err := txn.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
			t.Fatal(err)
		}
	}
	mr, stop := runMirror(t, source, target, topic)
	waitCaughtUp(t, mr, source, target, topic)
	produce(t, source, topic, 600, 300)
	waitCaughtUp(t, mr, source, target, topic)
	stop()

	rep := runVerify(t, configFor(source, target, mirrorName(mr)))
	if !rep.OK() || len(rep.Partitions) != 3 {
		t.Fatalf("report not OK or not 3 partitions: %+v", rep)
	}
	var total int64
	for _, p := range rep.Partitions {
		if p.Status() != verify.StatusMatch || !p.DigestsEqual() || p.SourceCount != p.TargetCount || p.Matched != p.SourceCount {
			t.Errorf("%s/%d: %s, counts %d/%d, matched %d, digests equal %v", p.Topic, p.Partition, p.Detail(), p.SourceCount, p.TargetCount, p.Matched, p.DigestsEqual())
		}
		total += p.SourceCount
	}
	if total != 900+30 {
		t.Errorf("%d records verified, want the 930 committed", total)
	}

	// A filter that selects nothing is an error, not a pass.
	cfg := configFor(source, target, mirrorName(mr))
	cfg.Topics = "nothing-.*"
	if _, err := verify.Run(ctx, cfg); err == nil || !strings.Contains(err.Error(), "no mirrored partition") {
		t.Errorf("verify with a filter matching nothing: %v", err)
	}
	cfg.Topics = topic
	cfg.Mirror = ""
	if _, err := verify.Run(ctx, cfg); err == nil || !strings.Contains(err.Error(), "mirror") {
		t.Errorf("verify without a mirror name: %v", err)
	}
}

// TestVerifyDetectsRecordWrittenToTarget writes a record straight to the
// target between two of the mirror's transactions: the counts differ and
// the intruder is named.
func TestVerifyDetectsRecordWrittenToTarget(t *testing.T) {
	source, target := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "intruder")
	source.CreateTopic(t, topic, 1)
	produce(t, source, topic, 0, 200)
	mr, stop := runMirror(t, source, target, topic)
	waitCaughtUp(t, mr, source, target, topic)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := target.Client(t).ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: 0, Value: []byte("intruder")}).First()
	if err != nil {
		t.Fatal(err)
	}
	produce(t, source, topic, 200, 100) // copied after the intruder
	waitCaughtUp(t, mr, source, target, topic)
	stop()

	rep := runVerify(t, configFor(source, target, mirrorName(mr)))
	p := rep.Partitions[0]
	if rep.OK() || p.Status() != verify.StatusMismatch {
		t.Fatalf("verify passed a target with an extra record: %s", p.Detail())
	}
	if p.TargetCount != p.SourceCount+1 || p.DigestsEqual() {
		t.Errorf("counts %d/%d, digests equal %v: want one more on the target", p.SourceCount, p.TargetCount, p.DigestsEqual())
	}
	if m := p.FirstMismatch; m == nil || m.TargetOffset != res.Offset || m.SourceOffset != -1 || p.Mismatches != 1 {
		t.Errorf("first mismatch %v (%d in all), want the intruder at target offset %d", m, p.Mismatches, res.Offset)
	}
}

// TestVerifyDetectsDifferentBytes verifies one mirror's offset map against
// another mirror's copy of the same topic, laid out differently: records
// paired through the map differ.
func TestVerifyDetectsDifferentBytes(t *testing.T) {
	source, target := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "bytes")
	source.CreateTopic(t, topic, 1)
	// One record per batch, and one batch per transaction: source offset i
	// lands at target 2i (a commit marker after each). The target topic
	// exists beforehand, so no first transaction aborts waiting for it.
	for i := range 40 {
		produce(t, source, topic, i, 1)
	}
	target.CreateTopic(t, topic, 1)
	one, stopOne := runMirror(t, source, target, topic, func(c *mirror.Config) { c.TxnMaxRecords = 1 })
	waitCaughtUp(t, one, source, target, topic)
	stopOne()
	// Another copy, prefixed, under another name, behind a record written
	// to it first: source offset i lands at target i+1 or later.
	target.CreateTopic(t, "x."+topic, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := target.Client(t).ProduceSync(ctx, &kgo.Record{Topic: "x." + topic, Value: []byte("first")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	other, stopOther := runMirror(t, source, target, topic, func(c *mirror.Config) { c.Topics.Prefix = "x." })
	waitCaughtUp(t, other, source, target, topic)
	stopOther()

	cfg := configFor(source, target, mirrorName(one))
	if rep := runVerify(t, cfg); !rep.OK() {
		t.Fatalf("the first mirror's own copy: %s", rep.Partitions[0].Detail())
	}
	cfg.TargetPrefix = "x."
	rep := runVerify(t, cfg)
	p := rep.Partitions[0]
	if rep.OK() {
		t.Fatalf("verify passed the wrong copy: %s", p.Detail())
	}
	// Source 0 maps to target 0, which in the other copy holds "first".
	if m := p.FirstMismatch; m == nil || m.SourceOffset != 0 || m.TargetOffset != 0 ||
		!strings.HasPrefix(m.Reason, "key (null on the target only), value, headers and timestamp (1700000000000 vs ") {
		t.Errorf("first mismatch %v, want source 0 / target 0 with every field differing", m)
	}
}

// TestVerifySourceCleanedSinceCopy: compaction and retention on the source
// after the copy leave records on the target only; verify says so and
// passes.
func TestVerifySourceCleanedSinceCopy(t *testing.T) {
	source, target := kafkatest.Pair(t)
	if source.Fake == nil {
		t.Skip("compaction on demand needs kfake")
	}
	topic := kafkatest.Topic(t, "compact")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	adm := kadm.NewClient(source.Client(t))
	if _, err := adm.CreateTopic(ctx, 2, 1, map[string]*string{"cleanup.policy": kadm.StringPtr("compact"),
		"retention.ms": kadm.StringPtr("-1")}, topic); err != nil {
		t.Fatal(err)
	}
	// Several batches with the same 20 keys (kfake keeps the last batch).
	for from := 0; from < 400; from += 100 {
		produce(t, source, topic, from, 100)
	}
	mr, stop := runMirror(t, source, target, topic)
	waitCaughtUp(t, mr, source, target, topic)
	stop()

	cfg := configFor(source, target, mirrorName(mr))
	before := runVerify(t, cfg)
	if !before.OK() || before.Partitions[0].Status() != verify.StatusMatch {
		t.Fatalf("before compaction: %s", before.Partitions[0].Detail())
	}
	source.Fake.Compact()

	after := runVerify(t, cfg)
	if !after.OK() {
		t.Fatalf("after compaction: not OK: %s / %s", after.Partitions[0].Detail(), after.Partitions[1].Detail())
	}
	for i, p := range after.Partitions {
		was := before.Partitions[i]
		gone := was.SourceCount - p.SourceCount
		if p.Status() != verify.StatusCleaned || gone == 0 || p.SourceCount == 0 || p.SourceRemoved != (verify.Removed{Compacted: gone}) || p.TargetCount != was.TargetCount {
			t.Errorf("%s/%d: %s; source %d → %d records, removed %+v", p.Topic, p.Partition, p.Detail(), was.SourceCount, p.SourceCount, p.SourceRemoved)
		}
		t.Logf("%s/%d after compaction: %d/%d records, %s", p.Topic, p.Partition, p.SourceCount, p.TargetCount, p.Detail())
		if !strings.Contains(p.Detail(), "source compacted since copy") {
			t.Errorf("detail %q does not say what happened", p.Detail())
		}
	}
}

// TestVerifySourceRetentionSinceCopy: records deleted from the source
// (retention, DeleteRecords) after the copy are reported as such.
func TestVerifySourceRetentionSinceCopy(t *testing.T) {
	source, target := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "retention")
	source.CreateTopic(t, topic, 1)
	produce(t, source, topic, 0, 100)
	mr, stop := runMirror(t, source, target, topic)
	waitCaughtUp(t, mr, source, target, topic)
	stop()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var below kadm.Offsets
	below.AddOffset(topic, 0, 5, -1)
	resp, err := kadm.NewClient(source.Client(t)).DeleteRecords(ctx, below)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
	rep := runVerify(t, configFor(source, target, mirrorName(mr)))
	p := rep.Partitions[0]
	if !rep.OK() || p.Status() != verify.StatusCleaned || p.SourceRemoved != (verify.Removed{Retention: 5}) || p.SourceCount != 95 || p.TargetCount != 100 {
		t.Errorf("%s: removed %+v, counts %d/%d", p.Detail(), p.SourceRemoved, p.SourceCount, p.TargetCount)
	}
}

// TestVerifySASLSSLTarget verifies a copy onto a SASL_SSL cluster, reading
// the target with its TLS and SASL settings.
// TestVerifyGap: the source deleted records before the mirror copied
// them, and the mirror went on after the gap (gap policy continue). Verify
// compares every record outside the lost offsets and names them.
func TestVerifyGap(t *testing.T) {
	source, target := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "verify-gap")
	source.CreateTopic(t, topic, 1)
	continueGaps := func(c *mirror.Config) { c.Gaps.Default = mirror.GapContinue }
	// Begun while empty, then stopped: everything produced meanwhile up
	// to 150 is deleted before it is copied, so the map begins with lost
	// offsets.
	mr, stop := runMirror(t, source, target, topic, continueGaps)
	waitCaughtUp(t, mr, source, target, topic)
	stop()
	produce(t, source, topic, 0, 300)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	del := kadm.Offsets{}
	del.Add(kadm.Offset{Topic: topic, Partition: 0, At: 150, LeaderEpoch: -1})
	if resp, err := kadm.NewClient(source.Client(t)).DeleteRecords(ctx, del); err != nil || resp.Error() != nil {
		t.Fatalf("delete records: %v %v", err, resp.Error())
	}
	mr, _ = runMirror(t, source, target, topic, func(c *mirror.Config) { c.Name = mirrorName(mr) }, continueGaps)
	waitCaughtUp(t, mr, source, target, topic)

	rep := runVerify(t, configFor(source, target, mirrorName(mr)))
	if len(rep.Partitions) != 1 {
		t.Fatalf("%d partitions verified, want 1", len(rep.Partitions))
	}
	p := rep.Partitions[0]
	if !rep.OK() || p.Status() != verify.StatusMatch || p.SourceCount != 150 || p.Matched != 150 || !p.DigestsEqual() {
		t.Errorf("%s: counts %d/%d, matched %d, digests equal %v; want the 150 records after the gap matched", p.Detail(), p.SourceCount, p.TargetCount, p.Matched, p.DigestsEqual())
	}
	if p.Source != (verify.OffsetRange{From: 0, To: 300}) || p.Target.From != 0 {
		t.Errorf("ranges: source %v target %v; want [0, 300) and the target from 0", p.Source, p.Target)
	}
	if len(p.Lost) != 1 || p.Lost[0].From != 0 || p.Lost[0].To != 150 {
		t.Errorf("lost %v, want 0..149", p.Lost)
	}
	if want := "deleted on the source before they were mirrored: 150 offsets (0..149)"; !strings.Contains(p.Detail(), want) {
		t.Errorf("detail %q does not say %q", p.Detail(), want)
	}
}

func TestVerifySASLSSLTarget(t *testing.T) {
	source, target := kafkatest.PlainToSecure(t, kafkasec.MechScramSHA256)
	topic := kafkatest.Topic(t, "verify-secure")
	source.CreateTopic(t, topic, 2)
	produce(t, source, topic, 0, 300)
	mr, stop := runMirror(t, source, target, topic)
	waitCaughtUp(t, mr, source, target, topic)
	stop()
	rep := runVerify(t, configFor(source, target, mirrorName(mr)))
	if !rep.OK() || len(rep.Partitions) != 2 {
		t.Fatalf("verify: ok=%v, %d partitions: %+v", rep.OK(), len(rep.Partitions), rep)
	}
}
