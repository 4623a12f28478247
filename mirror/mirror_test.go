package mirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/switchyard/switchyard/internal/kafkatest"
	"github.com/switchyard/switchyard/mirror/offsetmap"
	"github.com/switchyard/switchyard/mirror/topics"
)

// runningMirror is a mirror running in the background of a test.
type runningMirror struct {
	*Mirror
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func startMirror(t *testing.T, name string, src, dst *kafkatest.Cluster, topicNames []string, mutate ...func(*Config)) *runningMirror {
	t.Helper()
	return runMirror(t, newMirror(t, name, src, dst, topicNames, mutate...))
}

// newMirror makes a mirror as startMirror does, without running it.
func newMirror(t *testing.T, name string, src, dst *kafkatest.Cluster, topicNames []string, mutate ...func(*Config)) *Mirror {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Name = name
	cfg.SourceBootstrap, cfg.TargetBootstrap = src.Bootstrap, dst.Bootstrap
	cfg.Source, cfg.Target = src.Security, dst.Security
	cfg.Topics = topics.Policy{Include: topicNames}
	cfg.TxnMaxRecords = 200
	cfg.TxnMaxInterval = 100 * time.Millisecond
	cfg.TopicSyncInterval = 200 * time.Millisecond
	for _, m := range mutate {
		m(&cfg)
	}
	mr, err := New(cfg, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)), prometheus.NewRegistry())
	if err != nil {
		t.Fatalf("new mirror: %v", err)
	}
	return mr
}

// runMirror runs mr in the background until the test ends.
func runMirror(t *testing.T, mr *Mirror) *runningMirror {
	ctx, cancel := context.WithCancel(context.Background())
	rm := &runningMirror{Mirror: mr, cancel: cancel, done: make(chan error, 1)}
	go func() { rm.done <- mr.Run(ctx) }()
	t.Cleanup(func() { rm.stop(t) })
	return rm
}

func (rm *runningMirror) stop(t *testing.T) {
	t.Helper()
	rm.once.Do(func() {
		rm.cancel()
		select {
		case err := <-rm.done:
			if err != nil {
				t.Errorf("mirror run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("mirror did not stop within 20s")
		}
	})
}

// waitCaughtUp waits until every partition of topic has been copied up to
// the source's last stable offset as of the call.
func (rm *runningMirror) waitCaughtUp(t *testing.T, src *kafkatest.Cluster, topic string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ends := src.SettledEnds(ctx, t, topic)
	for {
		behind := ""
		ends.Each(func(o kadm.ListedOffset) {
			om := rm.OffsetMap(topic, o.Partition)
			if behind == "" && (om == nil || om.Next() < o.Offset) {
				behind = fmt.Sprintf("%s/%d", topic, o.Partition)
			}
		})
		if behind == "" {
			return
		}
		select {
		case <-ctx.Done():
			st := rm.Status()
			t.Fatalf("mirror not caught up on %s within 60s: %+v (last error %q, topic errors %v)", behind, st.Partitions, st.LastError, st.TopicErrors)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

type rec struct {
	partition int32
	offset    int64
	key       string
	value     *string
	headers   string
	ts        int64
}

// readAll reads every committed record of topic on a cluster, from its
// log start. Control records are delivered (and dropped here) so the
// reader knows it passed every offset below the end, also where aborted
// records or only markers lie at the end of a partition.
func readAll(t *testing.T, c *kafkatest.Cluster, topic string) map[int32][]rec {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := c.Client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())
	ends := c.SettledEnds(ctx, t, topic)
	starts, err := kadm.NewClient(c.Client(t)).ListStartOffsets(ctx, topic)
	if err != nil {
		t.Fatalf("read %s on %s: log start offsets: %v", topic, c.Name, err)
	}
	out := map[int32][]rec{}
	seen := map[int32]int64{} // next offset per partition
	starts.Each(func(o kadm.ListedOffset) { seen[o.Partition] = o.Offset })
	done := func() bool {
		ok := true
		ends.Each(func(o kadm.ListedOffset) {
			if seen[o.Partition] < o.Offset {
				ok = false
			}
		})
		return ok
	}
	for !done() {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %s on %s: timed out (read up to %v, end %v)", topic, c.Name, seen, ends)
		}
		fs.EachRecord(func(r *kgo.Record) {
			seen[r.Partition] = r.Offset + 1
			if r.Attrs.IsControl() {
				return
			}
			x := rec{partition: r.Partition, offset: r.Offset, key: string(r.Key), ts: r.Timestamp.UnixMilli()}
			if r.Value != nil {
				v := string(r.Value)
				x.value = &v
			}
			for _, h := range r.Headers {
				x.headers += h.Key + "=" + string(h.Value) + ";"
			}
			out[r.Partition] = append(out[r.Partition], x)
		})
	}
	return out
}

// testBaseMilli is the timestamp of the tests' first record: an hour
// ago. Records stamped years back (2023, as they were) are past a real
// broker's default 7-day retention, whose check — 30 s after the broker
// starts, then every 5 min — deleted them before the mirror read them, and
// the mirror rightly began such a partition at its new log start: the
// target stayed empty (TestMirrorDiscoversTopicsAtOnce, 2 runs in ~100).
var testBaseMilli = time.Now().Add(-time.Hour).UnixMilli()

func produceRecords(t *testing.T, c *kafkatest.Cluster, topic string, from, n int, opts ...kgo.Opt) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := c.Client(t, opts...)
	var rs []*kgo.Record
	for i := from; i < from+n; i++ {
		r := &kgo.Record{Topic: topic, Key: []byte(fmt.Sprintf("k-%d", i%20)), Value: []byte(fmt.Sprintf("v-%d", i)),
			Headers:   []kgo.RecordHeader{{Key: "seq", Value: []byte(fmt.Sprint(i))}},
			Timestamp: time.UnixMilli(testBaseMilli + int64(i))}
		if i%97 == 0 {
			r.Value = nil // a tombstone
		}
		rs = append(rs, r)
	}
	if err := cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

// compareCopies asserts the target holds exactly the source's records,
// partition by partition, in order, and that the offset map translates
// every source offset to the target offset of the same record.
func compareCopies(t *testing.T, rm *runningMirror, src, dst map[int32][]rec, topic string) {
	t.Helper()
	for p, srs := range src {
		drs := dst[p]
		if len(drs) != len(srs) {
			t.Errorf("partition %d: %d records on the target, %d on the source", p, len(drs), len(srs))
			continue
		}
		om := rm.OffsetMap(topic, p)
		if om == nil {
			t.Fatalf("no offset map for %s/%d", topic, p)
		}
		for i := range srs {
			s, d := srs[i], drs[i]
			sv, dv := "<nil>", "<nil>"
			if s.value != nil {
				sv = *s.value
			}
			if d.value != nil {
				dv = *d.value
			}
			if s.key != d.key || sv != dv || s.headers != d.headers || s.ts != d.ts || (s.value == nil) != (d.value == nil) {
				t.Errorf("partition %d record %d: source %+v (%s), target %+v (%s)", p, i, s, sv, d, dv)
				continue
			}
			tgt, err := om.Translate(s.offset)
			if err != nil || tgt != d.offset {
				t.Errorf("partition %d: source offset %d translates to %d (%v), the record is at %d", p, s.offset, tgt, err, d.offset)
			}
		}
	}
}

func TestMirrorCopiesRecordsExactly(t *testing.T) {
	source, target := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "mirror")
	source.CreateTopic(t, topic, 3)
	produceRecords(t, source, topic, 0, 1500)
	rm := startMirror(t, kafkatest.Topic(t, "m"), source, target, []string{topic})
	rm.waitCaughtUp(t, source, topic)
	produceRecords(t, source, topic, 1500, 500) // and it follows new records
	rm.waitCaughtUp(t, source, topic)
	compareCopies(t, rm, readAll(t, source, topic), readAll(t, target, topic), topic)
	ctx0, cancel0 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel0()
	if ok, behind, err := rm.CaughtUp(ctx0, topic); !ok || err != nil {
		t.Errorf("CaughtUp: false at %s (%v) after the copy completed", behind, err)
	}
	if _, _, err := rm.CaughtUp(ctx0, "not-mirrored"); err == nil {
		t.Errorf("CaughtUp of a topic that is not mirrored: no error")
	}

	// Every transaction's commit marker takes a target offset: the offsets
	// differ, which is why the map exists.
	om := rm.OffsetMap(topic, 0)
	if len(om.Ranges()) < 2 {
		t.Errorf("partition 0: %d ranges; several transactions should have made several", len(om.Ranges()))
	}
	if _, err := om.Translate(om.Next() + 1); !errors.Is(err, offsetmap.ErrBeyondMirrored) {
		t.Errorf("translate beyond the mirrored position: %v, want ErrBeyondMirrored", err)
	}

	// What the mirror committed is readable by others (verify, a control
	// plane) and equal to what it holds.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	persisted, err := ReadOffsetMaps(ctx, target.Bootstrap, rm.cfg.Name)
	if err != nil {
		t.Fatalf("read offset maps: %v", err)
	}
	for p := int32(0); p < 3; p++ {
		live, got := rm.OffsetMap(topic, p), persisted[TopicPartition{topic, p}]
		if got == nil || got.Next() != live.Next() || got.TargetNext() != live.TargetNext() || len(got.Ranges()) != len(live.Ranges()) {
			t.Errorf("partition %d: persisted map %+v differs from the live one (next %d, target next %d, %d ranges)",
				p, got, live.Next(), live.TargetNext(), len(live.Ranges()))
		}
	}
}

func TestMirrorSkipsAbortedTransactions(t *testing.T) {
	source, target := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "txn")
	source.CreateTopic(t, topic, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	txn := source.Client(t, kgo.TransactionalID("src-"+topic), kgo.DefaultProduceTopic(topic))
	write := func(from, n int, commit bool) {
		if err := txn.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for i := from; i < from+n; i++ {
			if err := txn.ProduceSync(ctx, &kgo.Record{Value: []byte(fmt.Sprintf("v-%d", i))}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		if err := txn.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
			t.Fatal(err)
		}
	}
	write(0, 100, true)
	write(100, 50, false) // aborted: must not be copied
	write(150, 100, true)

	rm := startMirror(t, kafkatest.Topic(t, "m"), source, target, []string{topic})
	rm.waitCaughtUp(t, source, topic)
	got := readAll(t, target, topic)[0]
	if len(got) != 200 {
		t.Fatalf("target holds %d records, want the 200 committed ones", len(got))
	}
	for i, r := range got {
		want := i
		if i >= 100 {
			want = i + 50
		}
		if r.value == nil || *r.value != fmt.Sprintf("v-%d", want) {
			t.Fatalf("target record %d: %v, want v-%d", i, r.value, want)
		}
	}
}

// TestCaughtUpWaitsForOpenTransactions: a transaction open on the source
// (or one whose end markers are not written yet) holds the last stable
// offset below the end; its records become readable only when it ends. A
// mirror that copied up to the last stable offset is not caught up then,
// or a cutover could flip before the records it must carry exist for it.
func TestCaughtUpWaitsForOpenTransactions(t *testing.T) {
	source, target := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "open-txn")
	source.CreateTopic(t, topic, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	produceRecords(t, source, topic, 0, 10)
	rm := startMirror(t, kafkatest.Topic(t, "m"), source, target, []string{topic})
	rm.waitCaughtUp(t, source, topic)

	txn := source.Client(t, kgo.TransactionalID("src-"+topic), kgo.DefaultProduceTopic(topic))
	if err := txn.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := txn.ProduceSync(ctx, &kgo.Record{Value: []byte("in-txn")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	ok, behind, err := rm.CaughtUp(ctx, topic)
	if err != nil || ok || !strings.Contains(behind, "transaction") {
		t.Fatalf("CaughtUp with a transaction open on the source: %v, %q, %v; want false, naming the transaction", ok, behind, err)
	}
	if err := txn.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatal(err)
	}
	for {
		ok, behind, err = rm.CaughtUp(ctx, topic)
		if ok {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("not caught up after the commit: %q, %v", behind, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	got := readAll(t, target, topic)[0]
	if n := len(got); n != 11 || got[n-1].value == nil || *got[n-1].value != "in-txn" {
		t.Fatalf("target holds %d records, the last %v; want 11, the last the committed one", n, got[n-1].value)
	}
}

// TestMirrorResumesWithoutGapOrDuplicate stops the mirror in the middle of
// copying (cancelling its transaction midway), restarts it with the same
// name several times while the source keeps growing, and compares every
// record.
func TestMirrorResumesWithoutGapOrDuplicate(t *testing.T) {
	source, target := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "resume")
	source.CreateTopic(t, topic, 2)
	name := kafkatest.Topic(t, "m")
	produced := 0
	for round := 0; round < 5; round++ {
		// Small batches, so a transaction of 50 records holds a few.
		produceRecords(t, source, topic, produced, 700, kgo.ProducerBatchMaxBytes(1024))
		produced += 700
		rm := startMirror(t, name, source, target, []string{topic}, func(c *Config) { c.TxnMaxRecords = 50 })
		// Stop as soon as it made some progress, mid-copy.
		deadline := time.Now().Add(30 * time.Second)
		for {
			var copiedNow int64
			for _, p := range rm.Status().Partitions {
				copiedNow += p.Next
			}
			if copiedNow > int64(produced-700)+100 || time.Now().After(deadline) {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		rm.stop(t)
	}
	rm := startMirror(t, name, source, target, []string{topic})
	rm.waitCaughtUp(t, source, topic)
	compareCopies(t, rm, readAll(t, source, topic), readAll(t, target, topic), topic)
}

// TestSyncGroupsWaitsForRestore: a mirror that has not restored its
// offset maps yet — one just started, as when a control plane is
// restarted in the middle of a cutover — does not report a group's
// offsets "skipped" (the group would start on the target from its reset
// policy, reading everything again): SyncGroups waits until the mirror is
// ready, and fails if ctx ends first.
func TestSyncGroupsWaitsForRestore(t *testing.T) {
	source, target := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "restore")
	source.CreateTopic(t, topic, 1)
	produceRecords(t, source, topic, 0, 300)
	name := kafkatest.Topic(t, "m")
	first := startMirror(t, name, source, target, []string{topic})
	first.waitCaughtUp(t, source, topic)
	want, err := first.OffsetMap(topic, 0).Translate(200)
	if err != nil {
		t.Fatal(err)
	}
	first.stop(t)

	group := kafkatest.Topic(t, "g")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	committed := kadm.Offsets{}
	committed.Add(kadm.Offset{Topic: topic, Partition: 0, At: 200, LeaderEpoch: -1})
	if _, err := kadm.NewClient(source.Client(t)).CommitOffsets(ctx, group, committed); err != nil {
		t.Fatal(err)
	}

	// The next instance, before it restored anything.
	second := newMirror(t, name, source, target, []string{topic})
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	rep, err := second.SyncGroups(short, []string{group})
	cancelShort()
	if err == nil {
		t.Errorf("SyncGroups on a mirror that has not restored its offset maps returned %+v and no error; want it to wait for the restore and fail when ctx ends", rep)
	}

	// Running, it translates exactly once it has restored.
	rm := runMirror(t, second)
	rep, err = rm.SyncGroups(ctx, []string{group})
	if err == nil {
		err = rep.Err()
	}
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	if len(rep.Groups) != 1 || len(rep.Groups[0].Partitions) != 1 {
		t.Fatalf("sync report %+v: want one group, one partition", rep)
	}
	if p := rep.Groups[0].Partitions[0]; p.Outcome != "committed" || p.Target != want {
		t.Errorf("partition 0: outcome %q, target %d; want committed at %d (source 200)", p.Outcome, p.Target, want)
	}
}

func TestSyncGroupsTranslatesExactly(t *testing.T) {
	source, target := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "groups")
	source.CreateTopic(t, topic, 2)
	produceRecords(t, source, topic, 0, 600)
	rm := startMirror(t, kafkatest.Topic(t, "m"), source, target, []string{topic})
	rm.waitCaughtUp(t, source, topic)

	// A group consumed part of the topic on the source.
	group := kafkatest.Topic(t, "g")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	committed := kadm.Offsets{}
	committed.Add(kadm.Offset{Topic: topic, Partition: 0, At: 123, LeaderEpoch: -1})
	committed.Add(kadm.Offset{Topic: topic, Partition: 1, At: 0, LeaderEpoch: -1})
	if _, err := kadm.NewClient(source.Client(t)).CommitOffsets(ctx, group, committed); err != nil {
		t.Fatal(err)
	}
	rep, err := rm.SyncGroups(ctx, []string{group})
	if err != nil {
		t.Fatal(err)
	}
	if err := rep.Err(); err != nil {
		t.Fatalf("sync: %v", err)
	}
	got, err := kadm.NewClient(target.Client(t)).FetchOffsets(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	for p, src := range map[int32]int64{0: 123, 1: 0} {
		want, err := rm.OffsetMap(topic, p).Translate(src)
		if err != nil {
			t.Fatal(err)
		}
		o, ok := got.Lookup(topic, p)
		if !ok || o.At != want {
			t.Errorf("partition %d: target committed %v, want %d (source %d)", p, o.At, want, src)
		}
	}
	// The record the group reads next on the target is the one it would
	// have read next on the source.
	srcRecs, dstRecs := readAll(t, source, topic), readAll(t, target, topic)
	o, _ := got.Lookup(topic, 0)
	var srcNext, dstNext *rec
	for i := range srcRecs[0] {
		if srcRecs[0][i].offset >= 123 {
			srcNext = &srcRecs[0][i]
			break
		}
	}
	for i := range dstRecs[0] {
		if dstRecs[0][i].offset >= o.At {
			dstNext = &dstRecs[0][i]
			break
		}
	}
	if srcNext == nil || dstNext == nil || srcNext.headers != dstNext.headers {
		t.Errorf("next record: source %+v, target %+v", srcNext, dstNext)
	}

	// Never backwards: a lower source commit leaves the target alone.
	committed = kadm.Offsets{}
	committed.Add(kadm.Offset{Topic: topic, Partition: 0, At: 50, LeaderEpoch: -1})
	if _, err := kadm.NewClient(source.Client(t)).CommitOffsets(ctx, group, committed); err != nil {
		t.Fatal(err)
	}
	rep, err = rm.SyncGroups(ctx, []string{group})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range rep.Groups[0].Partitions {
		if p.Partition == 0 && p.Outcome != "skipped" {
			t.Errorf("a backwards move was %q, want skipped", p.Outcome)
		}
	}
	// Beyond the mirrored position: reported, not guessed.
	committed = kadm.Offsets{}
	committed.Add(kadm.Offset{Topic: topic, Partition: 1, At: 100000, LeaderEpoch: -1})
	if _, err := kadm.NewClient(source.Client(t)).CommitOffsets(ctx, group, committed); err != nil {
		t.Fatal(err)
	}
	rep, err = rm.SyncGroups(ctx, []string{group})
	if err != nil {
		t.Fatal(err)
	}
	if err := rep.Err(); !errors.Is(err, offsetmap.ErrBeyondMirrored) {
		t.Errorf("sync of an offset beyond the mirror: %v, want ErrBeyondMirrored", err)
	}
}

// TestTwoMirrorsShareARegistry: a control plane runs several mirrors with
// one Prometheus registry.
func TestTwoMirrorsShareARegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	for _, name := range []string{"a", "b"} {
		cfg := DefaultConfig()
		cfg.Name, cfg.SourceBootstrap, cfg.TargetBootstrap = name, []string{"127.0.0.1:1"}, []string{"127.0.0.1:2"}
		if _, err := New(cfg, nil, reg); err != nil {
			t.Fatalf("mirror %s: %v", name, err)
		}
	}
}

// TestPrepareGroups: once PrepareGroups returns, the target answers for
// the groups' coordinators at once (on a new cluster it creates its offsets
// topic on the first request), so the cutover's group sync does not wait
// for it.
func TestPrepareGroups(t *testing.T) {
	source, target := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "prep")
	source.CreateTopic(t, topic, 1)
	rm := startMirror(t, kafkatest.Topic(t, "m"), source, target, []string{topic})
	groups := []string{kafkatest.Topic(t, "g1"), kafkatest.Topic(t, "g2")}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// On kfake the target answers the groups as a cluster still creating
	// its offsets topic does — COORDINATOR_NOT_AVAILABLE — for a while, or
	// for ever: PrepareGroups must keep asking, and say so when ctx ends.
	var refusals, refuseFor atomic.Int32
	if target.Fake != nil {
		target.Fake.ControlKey(int16(kmsg.FindCoordinator), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
			target.Fake.KeepControl()
			req := kreq.(*kmsg.FindCoordinatorRequest)
			keys := req.CoordinatorKeys
			if req.Version < 4 {
				keys = []string{req.CoordinatorKey}
			}
			if req.CoordinatorType != 0 || !slices.ContainsFunc(keys, func(k string) bool { return slices.Contains(groups, k) }) ||
				refusals.Load() >= refuseFor.Load() {
				return nil, nil, false
			}
			refusals.Add(1)
			resp := req.ResponseKind().(*kmsg.FindCoordinatorResponse)
			resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
			for _, k := range keys {
				c := kmsg.NewFindCoordinatorResponseCoordinator()
				c.Key, c.ErrorCode, c.NodeID = k, kerr.CoordinatorNotAvailable.Code, -1
				resp.Coordinators = append(resp.Coordinators, c)
			}
			return resp, nil, true
		})
		sctx, scancel := context.WithTimeout(ctx, 500*time.Millisecond)
		refuseFor.Store(1 << 30) // never ready
		err := rm.PrepareGroups(sctx, groups)
		scancel()
		if err == nil || !errors.Is(err, kerr.CoordinatorNotAvailable) || !strings.Contains(err.Error(), "group ") {
			t.Errorf("PrepareGroups on a target that never has a coordinator: %v, want COORDINATOR_NOT_AVAILABLE naming the group", err)
		}
		refusals.Store(0)
		refuseFor.Store(3)
	}
	if err := rm.PrepareGroups(ctx, groups); err != nil {
		t.Fatal(err)
	}
	if target.Fake != nil && refusals.Load() < 3 {
		t.Errorf("PrepareGroups returned after %d refusals, want it to ask until the target answers", refusals.Load())
	}
	kadm.NewClient(target.Client(t)).FindGroupCoordinators(ctx, groups...).Each(func(r kadm.FindCoordinatorResponse) {
		if r.Err != nil {
			t.Errorf("group %s: %v after PrepareGroups", r.Name, r.Err)
		}
	})
	if err := rm.PrepareGroups(ctx, nil); err != nil {
		t.Errorf("no groups: %v", err)
	}
}

func TestGroupsDrained(t *testing.T) {
	source, target := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "drain")
	source.CreateTopic(t, topic, 2)
	produceRecords(t, source, topic, 0, 100)
	rm := startMirror(t, kafkatest.Topic(t, "m"), source, target, []string{topic})
	rm.waitCaughtUp(t, source, topic)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ends := source.SettledEnds(ctx, t, topic)
	group := kafkatest.Topic(t, "g")
	adm := kadm.NewClient(source.Client(t))
	commit := func(behind int64) {
		t.Helper()
		offs := kadm.Offsets{}
		ends.Each(func(o kadm.ListedOffset) {
			offs.Add(kadm.Offset{Topic: topic, Partition: o.Partition, At: o.Offset - behind, LeaderEpoch: -1})
		})
		if _, err := adm.CommitOffsets(ctx, group, offs); err != nil {
			t.Fatal(err)
		}
	}
	commit(1)
	if ok, behind, err := rm.GroupsDrained(ctx, []string{group}, topic); ok || err != nil || !strings.Contains(behind, "group "+group) {
		t.Errorf("one record behind: drained %v, %q, %v", ok, behind, err)
	}
	commit(0)
	if ok, behind, err := rm.GroupsDrained(ctx, []string{group}, topic); !ok || err != nil {
		t.Errorf("at the end: drained %v, %q, %v", ok, behind, err)
	}
}

// TestMirrorWaitsForAnUnreachableTarget: a mirror started before its
// target is reachable says so in Status and starts copying once it is,
// instead of exiting.
func TestMirrorWaitsForAnUnreachableTarget(t *testing.T) {
	source, target := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "late")
	source.CreateTopic(t, topic, 1)
	produceRecords(t, source, topic, 0, 50)
	// A port nothing listens on at first.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	late := &kafkatest.Cluster{Name: "target", Bootstrap: []string{addr}}
	rm := startMirror(t, kafkatest.Topic(t, "m"), source, late, []string{topic}, func(c *Config) {
		c.RetryBackoffMax = 200 * time.Millisecond
	})
	deadline := time.Now().Add(30 * time.Second)
	for st := rm.Status(); !strings.Contains(st.LastError, "starting:"); st = rm.Status() {
		if st.Ready || time.Now().After(deadline) {
			t.Fatalf("status while the target is unreachable: ready %v, last error %q", st.Ready, st.LastError)
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case err := <-rm.done:
		t.Fatalf("the mirror exited while waiting for its target: %v", err)
	default:
	}
	// The target becomes reachable: a relay on the address the mirror was
	// given, to the real target (whose metadata names its own brokers).
	relay, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	go func() {
		for {
			c, err := relay.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target.Bootstrap[0])
			if err != nil {
				c.Close()
				continue
			}
			go func() { _, _ = io.Copy(u, c); u.Close() }()
			go func() { _, _ = io.Copy(c, u); c.Close() }()
		}
	}()
	rm.waitCaughtUp(t, source, topic)
	if got := len(readAll(t, target, topic)[0]); got != 50 {
		t.Errorf("target holds %d records, want 50", got)
	}
	if st := rm.Status(); !st.Ready || strings.HasPrefix(st.LastError, "starting:") {
		t.Errorf("after the target came up: ready %v, last error %q", st.Ready, st.LastError)
	}
}

// TestGroupsDrainedWaitsForFirstCommit: a group whose member consumed but
// never committed is not drained (its members would reset on the target);
// once it commits the end, it is.
func TestGroupsDrainedWaitsForFirstCommit(t *testing.T) {
	source, target := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "firstcommit")
	source.CreateTopic(t, topic, 2)
	produceRecords(t, source, topic, 0, 50)
	rm := startMirror(t, kafkatest.Topic(t, "m"), source, target, []string{topic})
	rm.waitCaughtUp(t, source, topic)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	group := kafkatest.Topic(t, "g")
	member := source.Client(t, kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic), kgo.DisableAutoCommit(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	for n := 0; n < 50; {
		fs := member.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of 50", n)
		}
		n += fs.NumRecords()
	}
	adm := kadm.NewClient(source.Client(t))
	for {
		d, err := adm.DescribeGroups(ctx, group)
		if err == nil && d[group].State == "Stable" && len(d.AssignedPartitions()[topic]) == 2 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("group never stable with both partitions assigned: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	ok, behind, err := rm.GroupsDrained(ctx, []string{group}, topic)
	if ok || err != nil || !strings.Contains(behind, "has not committed") {
		t.Fatalf("consumed, nothing committed: drained %v, %q, %v", ok, behind, err)
	}
	if err := member.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, behind, err := rm.GroupsDrained(ctx, []string{group}, topic); !ok || err != nil {
		t.Errorf("committed at the end: drained %v, %q, %v", ok, behind, err)
	}
}

// TestGroupsKIP848: the cutover's group checks see consumer groups of the
// KIP-848 protocol, which classic DescribeGroups does not describe (Kafka
// answers them as Dead): drained only once every assigned partition is
// committed at the end, joined once the group runs on the target, and
// never overwritten there while it has members.
func TestGroupsKIP848(t *testing.T) {
	source, target := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "kip848")
	source.CreateTopic(t, topic, 2)
	target.CreateTopic(t, topic, 2)
	produceRecords(t, source, topic, 0, 50)
	rm := startMirror(t, kafkatest.Topic(t, "m"), source, target, []string{topic})
	rm.waitCaughtUp(t, source, topic)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	group := kafkatest.Topic(t, "g")
	member := func(c *kafkatest.Cluster) *kgo.Client {
		return c.Client(t, kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic), kgo.DisableAutoCommit(),
			kgo.ServerSideBalancer(), kgo.Balancers(kgo.RangeBalancer()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	}
	m := member(source)
	for n := 0; n < 50; {
		fs := m.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of 50", n)
		}
		n += fs.NumRecords()
	}
	adm := kadm.NewClient(source.Client(t))
	for {
		d, err := adm.DescribeConsumerGroups(ctx, group)
		g := d[group]
		assigned := 0
		for _, ps := range g.AssignedPartitions() { // kfake names the topic by id only
			assigned += len(ps)
		}
		if err == nil && g.State == "Stable" && assigned == 2 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("consumer-protocol group never stable with both partitions assigned: %v %+v", err, d)
		case <-time.After(20 * time.Millisecond):
		}
	}
	ok, behind, err := rm.GroupsDrained(ctx, []string{group}, topic)
	if ok || err != nil || !strings.Contains(behind, "has not committed") {
		t.Fatalf("consumed, nothing committed: drained %v, %q, %v", ok, behind, err)
	}
	if err := m.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, behind, err := rm.GroupsDrained(ctx, []string{group}, topic); !ok || err != nil {
		t.Errorf("committed at the end: drained %v, %q, %v", ok, behind, err)
	}
	if ok, behind, err := rm.GroupsJoined(ctx, []string{group}); ok || err != nil {
		t.Errorf("no member on the target: joined %v, %q, %v", ok, behind, err)
	}
	tm := member(target)
	tm.PollFetches(ctx) // joins
	for {
		ok, behind, err := rm.GroupsJoined(ctx, []string{group})
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("member on the target: never joined (%s)", behind)
		case <-time.After(20 * time.Millisecond):
			tm.PollFetches(ctx)
		}
	}
	rep, err := rm.SyncGroups(ctx, []string{group})
	if err != nil || len(rep.Groups) != 1 || !errors.Is(rep.Groups[0].Err, errLiveMembers) {
		t.Errorf("sync with a live consumer-protocol group on the target: %+v, %v; want it left alone", rep, err)
	}
}

// TestMirrorDiscoversTopicsAtOnce: a topic created on the source after the
// mirror started is copied within seconds, not at the next full topic
// sync (issue 13: Kafka Streams creates its internal topics at start, and
// a cutover's preflight refused them until the 30 s cycle came round);
// RefreshTopics syncs at once when asked.
func TestMirrorDiscoversTopicsAtOnce(t *testing.T) {
	for _, tc := range []struct {
		name    string
		poll    time.Duration
		refresh bool
	}{
		{"poll", 100 * time.Millisecond, false},
		{"refresh", time.Hour, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			source, target := kafkatest.Pair(t)
			prefix := kafkatest.Topic(t, "late")
			rm := startMirror(t, kafkatest.Topic(t, "m"), source, target, []string{prefix + ".*"}, func(c *Config) {
				c.TopicSyncInterval = time.Hour // only the first sync, at start
				c.TopicPollInterval = tc.poll
			})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for !rm.Status().Ready {
				select {
				case <-ctx.Done():
					t.Fatal("mirror never ready")
				case <-time.After(10 * time.Millisecond):
				}
			}
			topic := prefix + "-repartition"
			source.CreateTopic(t, topic, 2)
			produceRecords(t, source, topic, 0, 20)
			if tc.refresh {
				if err := rm.RefreshTopics(ctx); err != nil {
					t.Fatal(err)
				}
				if n := len(rm.Status().Partitions); n != 2 {
					t.Fatalf("after RefreshTopics: %d partitions mirrored, want 2", n)
				}
			}
			rm.waitCaughtUp(t, source, topic)
			got := readAll(t, target, topic)
			if n := len(got[0]) + len(got[1]); n != 20 {
				e1, _ := kadm.NewClient(target.Client(t)).ListEndOffsets(ctx, topic)
				e2, _ := kadm.NewClient(source.Client(t)).ListEndOffsets(ctx, topic)
				// Seen once in ~100 real-Kafka runs: the map at the
				// source's end, the target empty (the records skipped).
				t.Errorf("target holds %d records, want 20 (target ends %+v, source ends %+v, mirror %+v)", n, e1, e2, rm.Status().Partitions)
			}
		})
	}
}

// TestMirrorFollowsLeaderMoves: the source's partition leaders move while
// the mirror copies (elections, reassignments, restarts on a real
// cluster). A fetch answered NOT_LEADER_OR_FOLLOWER is asked again of the
// new leader next round — the partition is not counted failing nor backed
// off (doubling to 10 s, which made cutovers under leader churn wait for the
// mirror) — and every record is copied exactly.
func TestMirrorFollowsLeaderMoves(t *testing.T) {
	source, target := kafkatest.Pair(t)
	if source.Fake == nil {
		t.Skip("moves the source's leaders: kfake only")
	}
	topic := kafkatest.Topic(t, "moves")
	source.CreateTopic(t, topic, 3)
	rm := startMirror(t, kafkatest.Topic(t, "m"), source, target, []string{topic})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	moves := 0
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			p := int32(i % 3)
			if err := source.Fake.MoveTopicPartition(topic, p, int32(i/3+int(p)+1)%3); err != nil {
				t.Errorf("move: %v", err)
				return
			}
			moves++
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
	for i := 0; i < 10; i++ {
		produceRecords(t, source, topic, i*150, 150)
		rm.waitCaughtUp(t, source, topic)
	}
	cancel()
	wg.Wait()
	compareCopies(t, rm, readAll(t, source, topic), readAll(t, target, topic), topic)
	rm.mu.Lock()
	defer rm.mu.Unlock()
	for k, p := range rm.parts {
		if p.failures > 0 {
			t.Errorf("partition %v counted failing %d times across %d leader moves (last: %s)", k, p.failures, moves, p.lastErr)
		}
	}
}

// TestSyncGroupsWaitsForPendingTransactionalOffsets: a consume-transform-
// produce application's transaction commits its group's offsets with its
// records (TxnOffsetCommit). Kafka answers the transaction's end before its
// markers reach the group, so read at once the group's offsets are those
// before that transaction: moved with them, the application processes its
// records again on the target. SyncGroups waits while a transactional
// offset commit of the group is pending (here until its ctx ends: the
// transaction is left open), then syncs the offset the transaction
// committed.
func TestSyncGroupsWaitsForPendingTransactionalOffsets(t *testing.T) {
	source, target := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "pending")
	source.CreateTopic(t, topic, 1)
	produceRecords(t, source, topic, 0, 300)
	rm := startMirror(t, kafkatest.Topic(t, "m"), source, target, []string{topic})
	rm.waitCaughtUp(t, source, topic)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	group := kafkatest.Topic(t, "g")
	adm := kadm.NewClient(source.Client(t))
	committed := kadm.Offsets{}
	committed.Add(kadm.Offset{Topic: topic, Partition: 0, At: 100, LeaderEpoch: -1})
	if _, err := adm.CommitOffsets(ctx, group, committed); err != nil {
		t.Fatal(err)
	}

	// A transaction commits offset 200 for the group, and is not ended.
	txnName := kafkatest.Topic(t, "tx")
	txn := source.Client(t, kgo.TransactionalID(txnName))
	if err := txn.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	pid, epoch, err := txn.ProducerID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	addOffs := kmsg.NewPtrAddOffsetsToTxnRequest()
	addOffs.TransactionalID, addOffs.Group = txnName, group
	addOffs.ProducerID, addOffs.ProducerEpoch = pid, epoch
	if resp, err := addOffs.RequestWith(ctx, txn); err != nil || resp.ErrorCode != 0 {
		t.Fatalf("add offsets to the transaction: %v %v", err, resp)
	}
	commit := kmsg.NewPtrTxnOffsetCommitRequest()
	commit.TransactionalID, commit.Group, commit.Generation = addOffs.TransactionalID, group, -1
	commit.ProducerID, commit.ProducerEpoch = addOffs.ProducerID, addOffs.ProducerEpoch
	tds, err := adm.ListTopics(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	ct := kmsg.NewTxnOffsetCommitRequestTopic()
	ct.Topic, ct.TopicID = topic, tds[topic].ID // by id from v5
	cp := kmsg.NewTxnOffsetCommitRequestTopicPartition()
	cp.Partition, cp.Offset, cp.LeaderEpoch = 0, 200, -1
	ct.Partitions = append(ct.Partitions, cp)
	commit.Topics = append(commit.Topics, ct)
	if resp, err := commit.RequestWith(ctx, txn); err != nil || resp.Topics[0].Partitions[0].ErrorCode != 0 {
		t.Fatalf("transactional offset commit: %v %v", err, resp)
	}

	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	rep, err := rm.SyncGroups(short, []string{group})
	cancelShort()
	if err == nil && len(rep.Groups) == 1 && rep.Groups[0].Err == nil {
		t.Fatalf("SyncGroups with a transactional offset commit pending synced %+v; want it to wait until the transaction ends", rep.Groups[0].Partitions)
	}

	// Ended by hand: the client did not add the offsets itself, so it
	// would not send an EndTxn for them.
	end := kmsg.NewPtrEndTxnRequest()
	end.TransactionalID, end.ProducerID, end.ProducerEpoch, end.Commit = txnName, pid, epoch, true
	if resp, err := end.RequestWith(ctx, txn); err != nil || resp.ErrorCode != 0 {
		t.Fatalf("commit the transaction: %v %v", err, resp)
	}
	rep, err = rm.SyncGroups(ctx, []string{group})
	if err != nil || len(rep.Groups) != 1 || rep.Groups[0].Err != nil || len(rep.Groups[0].Partitions) != 1 {
		t.Fatalf("SyncGroups after the commit: %+v, %v", rep, err)
	}
	if got := rep.Groups[0].Partitions[0].Source; got != 200 {
		t.Errorf("synced the source offset %d, want 200 (the transaction's)", got)
	}
}
