package mirror

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/switchyard/switchyard/internal/kafkatest"
	"github.com/switchyard/switchyard/mirror/offsetmap"
)

// produceTo writes n records to one partition, values "v-<from+i>", and
// returns their offsets.
func produceTo(t *testing.T, c *kafkatest.Cluster, topic string, partition int32, from, n int, opts ...kgo.Opt) []int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := c.Client(t, append([]kgo.Opt{kgo.RecordPartitioner(kgo.ManualPartitioner())}, opts...)...)
	rs := make([]*kgo.Record, 0, n)
	for i := from; i < from+n; i++ {
		rs = append(rs, &kgo.Record{Topic: topic, Partition: partition, Key: []byte(fmt.Sprintf("k-%d", i%20)),
			Value: []byte(fmt.Sprintf("v-%d", i)), Timestamp: time.UnixMilli(testBaseMilli + int64(i))})
	}
	res := cl.ProduceSync(ctx, rs...)
	if err := res.FirstErr(); err != nil {
		t.Fatalf("produce to %s/%d: %v", topic, partition, err)
	}
	out := make([]int64, len(res))
	for i, r := range res {
		out[i] = r.Record.Offset
	}
	return out
}

// deleteRecords moves a source partition's log start to before, as
// retention or Kafka Streams' repartition purge does.
func deleteRecords(t *testing.T, c *kafkatest.Cluster, topic string, partition int32, before int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	offs := kadm.Offsets{}
	offs.Add(kadm.Offset{Topic: topic, Partition: partition, At: before, LeaderEpoch: -1})
	resp, err := kadm.NewClient(c.Client(t)).DeleteRecords(ctx, offs)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Fatalf("delete records of %s/%d before %d: %v", topic, partition, before, err)
	}
}

// outOfRangeAsRealKafka makes a kfake cluster answer a Fetch whose every
// partition is below the log start given (per partition of topic) as real
// Kafka does: OFFSET_OUT_OF_RANGE with -1 for the log start and the high
// watermark (ReplicaManager answers an OffsetOutOfRangeException without
// reading the log's offsets). kfake fills them in. It returns a counter of
// the fetches it answered.
func outOfRangeAsRealKafka(c *kafkatest.Cluster, topic string, logStarts map[int32]int64) *atomic.Int64 {
	answered := new(atomic.Int64)
	c.Fake.ControlKey(int16(kmsg.Fetch), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		c.Fake.KeepControl()
		req := kreq.(*kmsg.FetchRequest)
		resp := req.ResponseKind().(*kmsg.FetchResponse)
		for _, rt := range req.Topics {
			if rt.Topic != topic {
				return nil, nil, false
			}
			st := kmsg.NewFetchResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				if rp.FetchOffset >= logStarts[rp.Partition] {
					return nil, nil, false
				}
				sp := kmsg.NewFetchResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.OffsetOutOfRange.Code
				sp.HighWatermark, sp.LastStableOffset, sp.LogStartOffset = -1, -1, -1
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		if len(resp.Topics) == 0 {
			return nil, nil, false
		}
		answered.Add(1)
		return resp, nil, true
	})
	return answered
}

// TestMirrorBeginsAtLogStart: a partition the mirror has not begun to copy
// begins at the source's log start — past 0 after DeleteRecords (what
// Kafka Streams does to its repartition topics), or at the end when
// everything was deleted — and the copy is exact from there.
func TestMirrorBeginsAtLogStart(t *testing.T) {
	for _, realShape := range []bool{false, true} {
		name := "kfake answer"
		if realShape {
			name = "out of range with -1 watermarks, as real Kafka answers"
		}
		t.Run(name, func(t *testing.T) {
			source, target := kafkatest.Pair(t)
			if realShape && source.Fake == nil {
				t.Skip("this is how real Kafka answers already")
			}
			topic := kafkatest.Topic(t, "logstart")
			source.CreateTopic(t, topic, 2)
			produceTo(t, source, topic, 0, 0, 300)
			produceTo(t, source, topic, 1, 0, 120)
			deleteRecords(t, source, topic, 0, 100)
			deleteRecords(t, source, topic, 1, 120) // all of it
			var answered *atomic.Int64
			if realShape {
				answered = outOfRangeAsRealKafka(source, topic, map[int32]int64{0: 100, 1: 120})
			}
			rm := startMirror(t, kafkatest.Topic(t, "m"), source, target, []string{topic})
			rm.waitCaughtUp(t, source, topic)
			if realShape && answered.Load() == 0 {
				t.Fatal("the mirror never fetched below the log start: the test proves nothing")
			}
			src, dst := readAll(t, source, topic), readAll(t, target, topic)
			if len(src[0]) != 200 || src[0][0].offset != 100 || len(src[1]) != 0 {
				t.Fatalf("source holds %d records from %d in partition 0 and %d in 1; want 200 from 100 and none", len(src[0]), src[0][0].offset, len(src[1]))
			}
			compareCopies(t, rm, src, dst, topic)
			if len(dst[1]) != 0 {
				t.Errorf("partition 1: %d records on the target, want none", len(dst[1]))
			}
			// The committed maps begin at the log starts.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			maps, err := ReadOffsetMaps(ctx, target.Bootstrap, rm.cfg.Name)
			if err != nil {
				t.Fatal(err)
			}
			for p, start := range map[int32]int64{0: 100, 1: 120} {
				if om := maps[TopicPartition{topic, p}]; om == nil || om.Start() != start || om.Next() != start+int64(len(src[p])) {
					t.Errorf("partition %d: committed map %v, want it to begin at %d", p, om, start)
				}
			}
			for _, p := range rm.Status().Partitions {
				if p.Failing || p.LostOffsets != 0 {
					t.Errorf("%s/%d: failing %v (%s), lost %d; want a clean beginning", p.Topic, p.Partition, p.Failing, p.LastError, p.LostOffsets)
				}
			}
			// Copying goes on from there.
			produceTo(t, source, topic, 0, 300, 50)
			produceTo(t, source, topic, 1, 120, 50)
			rm.waitCaughtUp(t, source, topic)
			compareCopies(t, rm, readAll(t, source, topic), readAll(t, target, topic), topic)
		})
	}
}

// TestMirrorGapPolicy: the source deletes records the mirror has not
// copied while it is stopped (a mirror that lags behind retention, or
// Kafka Streams purging a repartition topic). Policy stop fails the
// partition, naming the offsets lost; policy continue (the default for
// *-repartition topics) records them as lost in the offset map and copies
// on, exact after the gap. The gap survives a restart (the checkpoint
// topic holds it), and group offsets inside it resume after it.
func TestMirrorGapPolicy(t *testing.T) {
	tests := []struct {
		name    string
		suffix  string // of the topic name
		before  int    // records copied before the mirror stops
		deleted int64  // log start after the mirror stopped
		lost    offsetmap.LostRange
		cont    bool
	}{
		{name: "stop", before: 200, deleted: 300, lost: offsetmap.LostRange{From: 200, To: 300}},
		{name: "stop, the partition empty when the mirror stopped", before: 0, deleted: 100, lost: offsetmap.LostRange{From: 0, To: 100}},
		{name: "continue on a repartition topic", suffix: "-repartition", before: 200, deleted: 300, lost: offsetmap.LostRange{From: 200, To: 300}, cont: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			source, target := kafkatest.Pair(t)
			topic := kafkatest.Topic(t, "gap") + tt.suffix
			source.CreateTopic(t, topic, 1)
			name := kafkatest.Topic(t, "m")
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			produceTo(t, source, topic, 0, 0, tt.before)
			rm := startMirror(t, name, source, target, []string{topic})
			rm.waitCaughtUp(t, source, topic)
			waitFor(ctx, t, "the checkpoint holds the partition", func() bool {
				maps, err := ReadOffsetMaps(ctx, target.Bootstrap, name)
				return err == nil && maps[TopicPartition{topic, 0}] != nil && maps[TopicPartition{topic, 0}].Next() == int64(tt.before)
			})
			rm.stop(t)

			produceTo(t, source, topic, 0, tt.before, 200)
			all := readAll(t, source, topic)[0] // what the source held before the deletion
			deleteRecords(t, source, topic, 0, tt.deleted)

			rm = startMirror(t, name, source, target, []string{topic})
			if !tt.cont {
				want := fmt.Sprintf("offsets %s (%d) were deleted on the source (log start %d) before they were mirrored; gap policy stop",
					tt.lost, tt.lost.Len(), tt.deleted)
				waitFor(ctx, t, "the partition stops at the gap, retried", func() bool {
					st := partStatus(rm, topic, 0)
					return st.Failing && strings.Contains(st.LastError, want) &&
						testutil.ToFloat64(rm.m.partErrors.WithLabelValues(name, topic)) >= 3
				})
				if st := partStatus(rm, topic, 0); st.Next != tt.lost.From || st.LostOffsets != 0 {
					t.Errorf("stopped: next %d, lost %d; want %d, 0", st.Next, st.LostOffsets, tt.lost.From)
				}
				if n := testutil.ToFloat64(rm.m.gaps.WithLabelValues(name, topic, GapStop)); n != 1 {
					t.Errorf("gaps_total{policy=stop} = %v after several retries, want 1", n)
				}
				if got := len(readAll(t, target, topic)[0]); got != tt.before {
					t.Errorf("target holds %d records, want the %d copied before the gap", got, tt.before)
				}
				// The operator accepts the gap: the topic's policy becomes
				// continue, and the copy goes on.
				rm.stop(t)
				rm = startMirror(t, name, source, target, []string{topic}, func(c *Config) { c.Gaps.Continue = []string{topic} })
			}
			rm.waitCaughtUp(t, source, topic)
			if st := partStatus(rm, topic, 0); st.Failing || st.LostOffsets != tt.lost.Len() || st.LastLost != tt.lost {
				t.Errorf("after the gap: failing %v (%s), lost %d in %v; want %d in %v", st.Failing, st.LastError, st.LostOffsets, st.LastLost, tt.lost.Len(), tt.lost)
			}
			if n := testutil.ToFloat64(rm.m.gapOffsets.WithLabelValues(name, topic)); n != float64(tt.lost.Len()) {
				t.Errorf("gap_offsets_total = %v, want %d", n, tt.lost.Len())
			}
			if n := testutil.ToFloat64(rm.m.gaps.WithLabelValues(name, topic, GapContinue)); n != 1 {
				t.Errorf("gaps_total{policy=continue} = %v, want 1", n)
			}

			// The target holds every record outside the gap, in order, and
			// the committed map is exact around it.
			var want []rec
			for _, r := range all {
				if r.offset < tt.lost.From || r.offset >= tt.lost.To {
					want = append(want, r)
				}
			}
			dst := readAll(t, target, topic)[0]
			if len(dst) != len(want) {
				t.Fatalf("target holds %d records, want %d (%d produced, %d lost)", len(dst), len(want), len(all), tt.lost.Len())
			}
			maps, err := ReadOffsetMaps(ctx, target.Bootstrap, name)
			if err != nil {
				t.Fatal(err)
			}
			om := maps[TopicPartition{topic, 0}]
			if got := om.Lost(); !slices.Equal(got, []offsetmap.LostRange{tt.lost}) {
				t.Fatalf("committed map: lost %v, want %v", got, tt.lost)
			}
			for i, w := range want {
				if dst[i].key != w.key || *dst[i].value != *w.value || dst[i].ts != w.ts {
					t.Fatalf("target record %d is %+v (%s), want source offset %d (%s)", i, dst[i], *dst[i].value, w.offset, *w.value)
				}
				if got, err := om.Translate(w.offset); err != nil || got != dst[i].offset {
					t.Errorf("source offset %d translates to %d (%v), the record is at %d", w.offset, got, err, dst[i].offset)
				}
			}
			if _, err := om.Translate(tt.lost.From); !errors.Is(err, offsetmap.ErrLost) {
				t.Errorf("translate the first lost offset: %v, want ErrLost", err)
			}

			// A consumer group whose position lies in the gap: the source
			// no longer holds its next records, so it resumes after them,
			// where the source would reset it; one after the gap is exact.
			group := kafkatest.Topic(t, "g")
			afterGap, _ := om.Translate(tt.lost.To)
			at50 := slices.IndexFunc(want, func(r rec) bool { return r.offset == tt.lost.To+50 })
			for _, c := range []struct {
				at, want, resumed int64
				outcome           string
			}{
				{tt.lost.From + 10, afterGap, tt.lost.To, "log-start"},
				{tt.lost.To + 50, dst[at50].offset, tt.lost.To + 50, "committed"},
			} {
				commitSource(ctx, t, source, group, topic, c.at)
				rep, err := rm.SyncGroups(ctx, []string{group})
				if err == nil {
					err = rep.Err()
				}
				if err != nil {
					t.Fatalf("sync group at %d: %v", c.at, err)
				}
				po := rep.Groups[0].Partitions[0]
				if po.Outcome != c.outcome || po.Target != c.want || po.Resumed != c.resumed {
					t.Errorf("group at %d: %s at target %d (resumed %d), want %s at %d (resumed %d)", c.at, po.Outcome, po.Target, po.Resumed, c.outcome, c.want, c.resumed)
				}
			}

			// A restart restores the gap from the checkpoint topic.
			rm.stop(t)
			rm = startMirror(t, name, source, target, []string{topic})
			waitFor(ctx, t, "the restarted mirror restores the partition", func() bool { return rm.OffsetMap(topic, 0) != nil })
			if st := partStatus(rm, topic, 0); st.LostOffsets != tt.lost.Len() || st.LastLost != tt.lost {
				t.Errorf("after a restart: lost %d in %v, want %d in %v", st.LostOffsets, st.LastLost, tt.lost.Len(), tt.lost)
			}
		})
	}
}

// commitSource commits a group's offset for partition 0 of topic on a
// cluster.
func commitSource(ctx context.Context, t *testing.T, c *kafkatest.Cluster, group, topic string, at int64) {
	t.Helper()
	offs := kadm.Offsets{}
	offs.Add(kadm.Offset{Topic: topic, Partition: 0, At: at, LeaderEpoch: -1})
	resp, err := kadm.NewClient(c.Client(t)).CommitOffsets(ctx, group, offs)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Fatalf("commit %s at %d: %v", group, at, err)
	}
}

// partStatus returns a partition's status; the zero value if the mirror
// does not copy it.
func partStatus(rm *runningMirror, topic string, partition int32) PartitionStatus {
	for _, p := range rm.Status().Partitions {
		if p.Topic == topic && p.Partition == partition {
			return p
		}
	}
	return PartitionStatus{}
}

// waitFor polls cond until it holds, failing t when ctx ends.
func waitFor(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not before the deadline", what)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestMirrorKeepsUpWithRepartitionPurge runs what Kafka Streams does to a
// repartition topic while the mirror lags behind it: a producer writes, a
// consumer group reads and commits every 100 ms, and every 200 ms the
// records below the group's committed offsets are deleted on the source.
// The mirror must not stall: it goes on after every gap and catches up;
// every record it did not record as lost is on the target, exactly where
// the map says; and the group, stopped midway, is synced exactly.
func TestMirrorKeepsUpWithRepartitionPurge(t *testing.T) {
	source, target := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "app-purge") + "-repartition"
	const parts, perPart = 2, 6000
	source.CreateTopic(t, topic, parts)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	name := kafkatest.Topic(t, "m")
	// Small transactions: the mirror lags behind the producer and the
	// purge. (kfake commits one in microseconds: each takes 10 ms more
	// there, about what a real broker takes.)
	if target.Fake != nil {
		target.Fake.ControlKey(int16(kmsg.EndTxn), func(kmsg.Request) (kmsg.Response, error, bool) {
			target.Fake.KeepControl()
			time.Sleep(10 * time.Millisecond)
			return nil, nil, false
		})
	}
	rm := startMirror(t, name, source, target, []string{topic}, func(c *Config) { c.TxnMaxRecords = 20 })
	// The producer; values "v-<seq>", offsets kept per partition. A few
	// records first, copied before the rest: the mirror is running when
	// the purge begins.
	const warmup, chunk = 10, 500
	produced := make([][]int64, parts)
	for p := int32(0); p < parts; p++ {
		produced[p] = produceTo(t, source, topic, p, 0, warmup)
	}
	rm.waitCaughtUp(t, source, topic)
	var wg sync.WaitGroup
	for p := int32(0); p < parts; p++ {
		wg.Go(func() {
			// 5,000 records a second per partition, several times what
			// the mirror copies.
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for from := warmup; from < perPart; from += chunk {
				<-tick.C
				// Batches of about 20 records: the mirror copies a batch
				// whole, so small batches keep its transactions small.
				produced[p] = append(produced[p], produceTo(t, source, topic, p, from, min(chunk, perPart-from), kgo.ProducerBatchMaxBytes(1024))...)
			}
		})
	}
	// The group reads half of each partition, committing every 100 ms.
	group := kafkatest.Topic(t, "g")
	member := source.Client(t, kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.AutoCommitInterval(100*time.Millisecond))
	adm := kadm.NewClient(source.Client(t))
	purge := func() {
		offs, err := adm.FetchOffsets(ctx, group)
		if err != nil {
			return // not committed yet
		}
		del := kadm.Offsets{}
		offs.Each(func(o kadm.OffsetResponse) {
			if o.Err == nil && o.At > 0 {
				del.Add(kadm.Offset{Topic: o.Topic, Partition: o.Partition, At: o.At, LeaderEpoch: -1})
			}
		})
		if len(del) > 0 {
			if _, err := adm.DeleteRecords(ctx, del); err != nil && ctx.Err() == nil {
				t.Errorf("purge: %v", err)
			}
		}
	}
	purgeDone := make(chan struct{})
	purgeCtx, stopPurge := context.WithCancel(ctx)
	go func() {
		defer close(purgeDone)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-purgeCtx.Done():
				return
			case <-tick.C:
				purge()
			}
		}
	}()
	consumed := map[int32]int{}
	for consumed[0] < perPart/2 || consumed[1] < perPart/2 {
		fs := member.PollRecords(ctx, 100)
		if ctx.Err() != nil {
			t.Fatalf("consumed %v", consumed)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if consumed[r.Partition]++; consumed[r.Partition] == perPart/2 {
				member.PauseFetchPartitions(map[string][]int32{topic: {r.Partition}})
			}
		})
	}
	member.PauseFetchTopics(topic)
	if err := member.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatal(err)
	}
	member.Close()
	wg.Wait()
	stopPurge()
	<-purgeDone
	purge() // the last purge, up to the group's final offsets

	rm.waitCaughtUp(t, source, topic)
	maps, err := ReadOffsetMaps(ctx, target.Bootstrap, name)
	if err != nil {
		t.Fatal(err)
	}
	dst := readAll(t, target, topic)
	var lostTotal int64
	for p := int32(0); p < parts; p++ {
		st := partStatus(rm, topic, p)
		if st.Failing {
			t.Errorf("partition %d failing: %s", p, st.LastError)
		}
		om := maps[TopicPartition{topic, p}]
		lostTotal += st.LostOffsets
		// Every produced record is either lost or on the target where
		// the map says, in order; nothing else is there.
		i := 0
		if om.Start() != 0 {
			t.Errorf("partition %d: the map starts at %d; the mirror began before anything was produced", p, om.Start())
		}
		for seq, off := range produced[p] {
			if _, err := om.Translate(off); errors.Is(err, offsetmap.ErrLost) {
				continue
			}
			if i >= len(dst[p]) {
				t.Fatalf("partition %d: source offset %d (v-%d) not lost and not on the target (%d records there)", p, off, seq, len(dst[p]))
			}
			d := dst[p][i]
			tgt, err := om.Translate(off)
			if err != nil || tgt != d.offset || *d.value != fmt.Sprintf("v-%d", seq) {
				t.Fatalf("partition %d: source offset %d (v-%d) translates to %d (%v); the target's next record is %s at %d",
					p, off, seq, tgt, err, *d.value, d.offset)
			}
			i++
		}
		if i != len(dst[p]) {
			t.Errorf("partition %d: %d records on the target beyond the %d produced and not lost", p, len(dst[p])-i, i)
		}
		t.Logf("partition %d: %d records copied, %d offsets lost in gaps (last %v)", p, i, st.LostOffsets, st.LastLost)
	}
	gaps := testutil.ToFloat64(rm.m.gaps.WithLabelValues(name, topic, GapContinue))
	t.Logf("%v gaps, %d offsets lost", gaps, lostTotal)
	if gaps == 0 || lostTotal == 0 {
		t.Fatal("the purge never passed the mirror: no gap, the test proves nothing")
	}

	// The group's offsets translate exactly: on the target it reads next
	// the record it would have read next on the source.
	rep, err := rm.SyncGroups(ctx, []string{group})
	if err == nil {
		err = rep.Err()
	}
	if err != nil {
		t.Fatal(err)
	}
	srcOffs, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		t.Fatal(err)
	}
	for _, po := range rep.Groups[0].Partitions {
		o, _ := srcOffs.Lookup(topic, po.Partition)
		seq := slices.Index(produced[po.Partition], o.At)
		if o.At == int64(perPart) { // read to the end (records fetched before the pause)
			seq = perPart
		}
		if po.Outcome != "committed" || seq < 0 {
			t.Fatalf("partition %d: outcome %s for source offset %d (produced index %d)", po.Partition, po.Outcome, o.At, seq)
		}
		var next *rec
		for i := range dst[po.Partition] {
			if dst[po.Partition][i].offset >= po.Target {
				next = &dst[po.Partition][i]
				break
			}
		}
		switch {
		case seq == perPart && next != nil:
			t.Errorf("partition %d: the group read everything, yet resumes on the target at %d before %s", po.Partition, po.Target, *next.value)
		case seq < perPart && (next == nil || *next.value != fmt.Sprintf("v-%d", seq)):
			t.Errorf("partition %d: the group resumes on the target at %d with %v, want v-%d (source offset %d)", po.Partition, po.Target, next, seq, o.At)
		}
	}
}

func TestGapPolicyConfig(t *testing.T) {
	policy, err := DefaultConfig().Gaps.compile()
	if err != nil {
		t.Fatal(err)
	}
	for topic, want := range map[string]string{
		"orders": GapStop, "app-KSTREAM-AGGREGATE-STATE-STORE-0000000003-repartition": GapContinue, "repartition": GapStop,
	} {
		if got := policy(topic); got != want {
			t.Errorf("default policy of %s: %s, want %s", topic, got, want)
		}
	}
	g := GapPolicy{Default: GapContinue, Stop: []string{"orders.*"}, Continue: []string{"orders-x"}}
	policy, err = g.compile()
	if err != nil {
		t.Fatal(err)
	}
	for topic, want := range map[string]string{"orders-x": GapStop, "payments": GapContinue} {
		if got := policy(topic); got != want {
			t.Errorf("policy of %s: %s, want %s (stop wins)", topic, got, want)
		}
	}
	for name, tc := range map[string]struct {
		gaps GapPolicy
		want string
	}{
		"unknown default": {GapPolicy{Default: "skip"}, `gaps.default: "skip"`},
		"empty default":   {GapPolicy{}, `gaps.default: ""`},
		"bad continue":    {GapPolicy{Default: GapStop, Continue: []string{"("}}, `gaps.continue: "("`},
		"bad stop":        {GapPolicy{Default: GapStop, Stop: []string{"["}}, `gaps.stop: "["`},
	} {
		cfg := DefaultConfig()
		cfg.Name, cfg.SourceBootstrap, cfg.TargetBootstrap = "m", []string{"127.0.0.1:1"}, []string{"127.0.0.1:2"}
		cfg.Gaps = tc.gaps
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate() = %v, want an error naming %s", name, err, tc.want)
		}
	}
}

// TestMirrorIdlePartitionRecovers: a partition with nothing to copy whose
// fetch failed once (a broker's storage error, say; a leader move is not a
// failure: TestMirrorFollowsLeaderMoves) is not shown failing once the
// source answers it again — before, only its next copied record cleared
// the error, so an idle partition stayed failing (and alerting) for good.
func TestMirrorIdlePartitionRecovers(t *testing.T) {
	source, target := kafkatest.Pair(t)
	if source.Fake == nil {
		t.Skip("the fault is injected with kfake")
	}
	topic := kafkatest.Topic(t, "idle")
	source.CreateTopic(t, topic, 1)
	name := kafkatest.Topic(t, "m")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rm := startMirror(t, name, source, target, []string{topic})
	waitFor(ctx, t, "the partition begins", func() bool {
		maps, err := ReadOffsetMaps(ctx, target.Bootstrap, name)
		return err == nil && maps[TopicPartition{topic, 0}] != nil
	})
	source.Fake.ControlKey(int16(kmsg.Fetch), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		req := kreq.(*kmsg.FetchRequest)
		if len(req.Topics) != 1 || req.Topics[0].Topic != topic {
			return nil, nil, false
		}
		resp := req.ResponseKind().(*kmsg.FetchResponse)
		st := kmsg.NewFetchResponseTopic()
		st.Topic = topic
		sp := kmsg.NewFetchResponseTopicPartition()
		sp.ErrorCode = kerr.KafkaStorageError.Code
		st.Partitions = append(st.Partitions, sp)
		resp.Topics = append(resp.Topics, st)
		return resp, nil, true // once: a handled control is dropped
	})
	waitFor(ctx, t, "the fetch fails once", func() bool {
		return testutil.ToFloat64(rm.m.partErrors.WithLabelValues(name, topic)) >= 1
	})
	waitFor(ctx, t, "the idle partition is not failing any more", func() bool {
		st := partStatus(rm, topic, 0)
		return !st.Failing && st.LastError == "" && testutil.ToFloat64(rm.m.failing.WithLabelValues(name, topic, "0")) == 0
	})
}
