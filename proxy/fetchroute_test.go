package proxy

import (
	"context"
	"encoding/binary"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// fetchAllRequest is a full, sessionless-or-new-session fetch of every
// partition of the bed's topic at the given offsets.
func fetchAllRequest(v clientView, version int16, topic string, offsets map[int32]int64, maxWait int32) *kmsg.FetchRequest {
	req := kmsg.NewPtrFetchRequest()
	req.Version, req.ReplicaID, req.MaxWaitMillis, req.MinBytes, req.MaxBytes = version, -1, maxWait, 1, 1<<20
	req.SessionID, req.SessionEpoch = 0, 0 // a full fetch asking for a session, as Java and franz-go send
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic, rt.TopicID = topic, v.id
	for p := range int32(6) {
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = p, offsets[p], 1<<20
		rt.Partitions = append(rt.Partitions, rp)
	}
	req.Topics = append(req.Topics, rt)
	return req
}

// fetchedValues checks a routed fetch's response — no session, every
// partition asked present once, no error — and returns the values of its
// records by partition.
func fetchedValues(t *testing.T, resp *kmsg.FetchResponse) map[int32][]string {
	t.Helper()
	if resp.ErrorCode != 0 || resp.SessionID != 0 {
		t.Errorf("fetch response: error %v, session %d; want no error and no session (a routed fetch is sessionless)", kerr.ErrorForCode(resp.ErrorCode), resp.SessionID)
	}
	out := map[int32][]string{}
	seen := 0
	for _, rt := range resp.Topics {
		for _, rp := range rt.Partitions {
			seen++
			if rp.ErrorCode != 0 {
				t.Errorf("partition %d answered %v", rp.Partition, kerr.ErrorForCode(rp.ErrorCode))
			}
			if _, dup := out[rp.Partition]; dup {
				t.Errorf("partition %d answered twice", rp.Partition)
			}
			out[rp.Partition] = batchValues(t, rp.RecordBatches)
		}
	}
	if seen != 6 {
		// A Java consumer drops a full fetch response that leaves out a
		// partition it asked for.
		t.Errorf("%d partitions answered, want every one of the 6 asked", seen)
	}
	return out
}

// batchValues decodes the values of uncompressed v2 batches.
func batchValues(t *testing.T, b []byte) []string {
	t.Helper()
	var out []string
	for len(b) >= 12 {
		size := 12 + int(int32(binary.BigEndian.Uint32(b[8:12])))
		if size > len(b) {
			break // a partial batch at the end
		}
		var batch kmsg.RecordBatch
		if err := batch.ReadFrom(b[:size]); err != nil {
			t.Fatalf("batch: %v", err)
		}
		recs := batch.Records
		for range batch.NumRecords {
			l, n := binary.Varint(recs)
			if n <= 0 || n+int(l) > len(recs) {
				t.Fatalf("record length")
			}
			var r kmsg.Record
			if err := r.ReadFrom(recs[:n+int(l)]); err != nil {
				t.Fatalf("record: %v", err)
			}
			out = append(out, string(r.Value))
			recs = recs[n+int(l):]
		}
		b = b[size:]
	}
	return out
}

// fetchEveryRecord fetches every partition of the bed's topic on c, each
// from the offset after what it answered, until each has answered its one
// record "<tag>-<partition>" (each answer checked by fetchedValues), and
// checks nothing came twice.
func fetchEveryRecord(t *testing.T, c *wireConn, v clientView, version int16, topic, tag string) {
	t.Helper()
	got := map[int32][]string{}
	offsets := map[int32]int64{}
	for round := 0; len(got) < 6; round++ {
		if round == 20 {
			t.Fatalf("after 20 fetches only partitions %v answered with records", got)
		}
		resp := c.roundTrip(fetchAllRequest(v, version, topic, offsets, 2000)).(*kmsg.FetchResponse)
		for p, vals := range fetchedValues(t, resp) {
			if len(vals) == 0 {
				continue
			}
			if _, dup := got[p]; dup {
				t.Fatalf("partition %d: records again at the next offset: %q", p, vals)
			}
			got[p] = vals
			offsets[p] += int64(len(vals))
		}
	}
	for p := range int32(6) {
		if want := []string{fmt.Sprintf("%s-%d", tag, p)}; fmt.Sprint(got[p]) != fmt.Sprint(want) {
			t.Errorf("partition %d: %q, want %q", p, got[p], want)
		}
	}
}

// TestFetchRoutedToLeaders: a full fetch of partitions three brokers
// lead, sent to one virtual broker, is answered with every partition's
// records and no NOT_LEADER_OR_FOLLOWER, at the fetch versions of names,
// flexible encoding and topic ids. With routing "broker" the broker asked
// refuses the partitions it does not lead.
func TestFetchRoutedToLeaders(t *testing.T) {
	tp, _, topic := leadersBed(t)
	v := viewOf(t, tp, topic)
	for p, code := range produceAll(t, v, v.leader[0], 9, -1, topic, "f") {
		if code != 0 {
			t.Fatalf("produce partition %d: %v", p, kerr.ErrorForCode(code))
		}
	}
	for i, version := range []int16{11, 12, 13} {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			node := v.leader[int32(i)] // a different virtual broker each time
			c := dialWire(t, v.addr[node], "fetch-all")
			fetchEveryRecord(t, c, v, version, topic, "f")
		})
	}
	if n := testutil.ToFloat64(tp.m.fetchRouted); n < 3 {
		t.Errorf("fetch_routed_total %v, want at least 3", n)
	}

	t.Run("maxwait-0", func(t *testing.T) {
		// A fetch that waits for nothing gets what each leader has now —
		// not an empty answer before the leaders were heard.
		c := dialWire(t, v.addr[v.leader[2]], "poll")
		got := fetchedValues(t, c.roundTrip(fetchAllRequest(v, 12, topic, nil, 0)).(*kmsg.FetchResponse))
		for p := range int32(6) {
			if want := []string{fmt.Sprintf("f-%d", p)}; fmt.Sprint(got[p]) != fmt.Sprint(want) {
				t.Errorf("partition %d: %q, want %q", p, got[p], want)
			}
		}
	})

	t.Run("routing-broker", func(t *testing.T) {
		tp, _, topic := leadersBed(t, func(c *Config) { c.Routing = RoutingBroker })
		v := viewOf(t, tp, topic)
		resp := dialWire(t, v.addr[v.leader[0]], "fetch-all").roundTrip(fetchAllRequest(v, 12, topic, nil, 0)).(*kmsg.FetchResponse)
		refused := 0
		for _, rt := range resp.Topics {
			for _, rp := range rt.Partitions {
				if rp.ErrorCode == kerr.NotLeaderForPartition.Code {
					refused++
				}
			}
		}
		if refused != 4 {
			t.Errorf("%d partitions refused NOT_LEADER_OR_FOLLOWER, want the 4 the broker asked does not lead", refused)
		}
	})
}

// TestRoutedFetchHoldsNothingBack: a routed fetch is answered as soon as
// one broker has data, not after the client's MaxWait at the brokers that
// have none (wireConn gives up reading after 10 s; MaxWait is 60 s). The
// sub-fetches still waiting are left to finish: when a record reaches
// one of their partitions, the next fetch gets it at once.
func TestRoutedFetchHoldsNothingBack(t *testing.T) {
	tp, _, topic := leadersBed(t)
	v := viewOf(t, tp, topic)
	producer := dialWire(t, v.addr[v.leader[1]], "producer")
	send := func(p int32, value string) {
		t.Helper()
		req := rawProduce(9, -1, topic, [16]byte{}, value)
		req.Topics[0].Partitions[0].Partition = p
		if code := codes(t, producer.roundTrip(req))[p]; code != 0 {
			t.Fatalf("produce to %d: %v", p, kerr.ErrorForCode(code))
		}
	}
	send(1, "first")
	c := dialWire(t, v.addr[v.leader[0]], "consumer")
	offsets := map[int32]int64{}
	got := fetchedValues(t, c.roundTrip(fetchAllRequest(v, 12, topic, offsets, 60_000)).(*kmsg.FetchResponse))
	if fmt.Sprint(got[1]) != "[first]" {
		t.Fatalf("first fetch: %v, want partition 1's record", got)
	}
	offsets[1] = 1
	// Partitions 0 and 3 (broker 0) and 2 and 5 (broker 2) are still
	// asked of their brokers by the first fetch's sub-fetches.
	send(2, "second")
	got = fetchedValues(t, c.roundTrip(fetchAllRequest(v, 12, topic, offsets, 60_000)).(*kmsg.FetchResponse))
	var with []string
	for p, vals := range got {
		if len(vals) > 0 {
			with = append(with, fmt.Sprintf("%d:%v", p, vals))
		}
	}
	sort.Strings(with)
	if fmt.Sprint(with) != "[2:[second]]" {
		t.Errorf("second fetch: %v, want partition 2's record alone", with)
	}
}

// TestConsumerAcrossSwitchToOtherLeaders: a franz-go consumer reads a topic
// through a switch between clusters whose partition leaders differ. Its
// fetch session ends at the switch; its next full fetch, sent to the
// virtual brokers of the source's leaders, is fetched from the target's
// leaders: every record read once, in order, and the routed fetches
// counted.
func TestConsumerAcrossSwitchToOtherLeaders(t *testing.T) {
	tp, target, topic := leadersBed(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := tp.client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(500*time.Millisecond))
	produce := func(c *kgo.Client, tag string) {
		t.Helper()
		for p := range int32(6) {
			for i := range 5 {
				r := &kgo.Record{Topic: topic, Partition: p, Value: []byte(fmt.Sprintf("%s-%d-%d", tag, p, i))}
				if err := c.ProduceSync(ctx, r).FirstErr(); err != nil {
					t.Fatalf("produce: %v", err)
				}
			}
		}
	}
	src := tp.source.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	produce(src, "before")
	read := map[int32][]string{}
	consume := func(n int) {
		t.Helper()
		total := 0
		for _, vals := range read {
			total += len(vals)
		}
		for total < n {
			fs := cl.PollFetches(ctx)
			if ctx.Err() != nil {
				t.Fatalf("read %d records, want %d: %v", total, n, read)
			}
			fs.EachError(func(topic string, p int32, err error) { t.Errorf("fetch %s/%d: %v", topic, p, err) })
			fs.EachRecord(func(r *kgo.Record) {
				read[r.Partition] = append(read[r.Partition], string(r.Value))
				total++
			})
		}
	}
	consume(30)
	// The target holds the copy of the source's records, then new ones.
	dst := target.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	produce(dst, "before")
	if _, err := tp.Switch(ctx, "target"); err != nil {
		t.Fatalf("switch: %v", err)
	}
	routed := testutil.ToFloat64(tp.m.fetchRouted)
	produce(dst, "after")
	consume(60)
	for p := range int32(6) {
		var want []string
		for _, tag := range []string{"before", "after"} {
			for i := range 5 {
				want = append(want, fmt.Sprintf("%s-%d-%d", tag, p, i))
			}
		}
		if fmt.Sprint(read[p]) != fmt.Sprint(want) {
			t.Errorf("partition %d read %q, want %q", p, read[p], want)
		}
	}
	if n := testutil.ToFloat64(tp.m.fetchRouted); n <= routed {
		t.Errorf("fetch_routed_total %v after the switch (%v before): the consumer's fetches were not routed", n, routed)
	}
}

// TestRoutedFetchFollowsLeaderMoves: the partitions' leaders moved after
// the proxy's last refresh; each broker the proxy asks answers
// NOT_LEADER_OR_FOLLOWER, and the proxy asks the new leaders within the
// same fetch — with the leader named in the refusal (KIP-951, v12+) and
// without it (v11: the proxy asks the cluster). The client sees records
// and no error.
func TestRoutedFetchFollowsLeaderMoves(t *testing.T) {
	for _, version := range []int16{11, 13} {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			tp, _, topic := leadersBed(t, keepStaleView)
			v := viewOf(t, tp, topic)
			for p, code := range produceAll(t, v, v.leader[0], 9, -1, topic, "m") {
				if code != 0 {
					t.Fatalf("produce partition %d: %v", p, kerr.ErrorForCode(code))
				}
			}
			moveLeaders(t, tp, topic)
			c := dialWire(t, v.addr[v.leader[1]], "moved")
			fetchEveryRecord(t, c, v, version, topic, "m")
			if n := testutil.ToFloat64(tp.m.fetchAbsorbed); n < 1 {
				t.Errorf("fetch_rerouted_partitions_total %v, want the moved partitions asked again", n)
			}
		})
	}
}

// TestPartitionRequestsRoutedToLeaders: ListOffsets, OffsetForLeaderEpoch
// and DeleteRecords naming partitions three brokers lead, sent to one
// virtual broker, are answered for every partition, in the request's
// order, with no NOT_LEADER_OR_FOLLOWER — the requests a consumer makes to
// reset and validate its positions, and an admin's record deletion.
func TestPartitionRequestsRoutedToLeaders(t *testing.T) {
	tp, _, topic := leadersBed(t)
	v := viewOf(t, tp, topic)
	for range 2 {
		for p, code := range produceAll(t, v, v.leader[0], 9, -1, topic, "o") {
			if code != 0 {
				t.Fatalf("produce partition %d: %v", p, kerr.ErrorForCode(code))
			}
		}
	}
	c := dialWire(t, v.addr[v.leader[0]], "partitions")
	order := []int32{5, 0, 4, 1, 3, 2} // not the brokers' order

	lo := kmsg.NewPtrListOffsetsRequest()
	lo.Version, lo.ReplicaID = 7, -1
	lt := kmsg.NewListOffsetsRequestTopic()
	lt.Topic = topic
	for _, p := range order {
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition, rp.Timestamp, rp.CurrentLeaderEpoch = p, -1, -1 // latest
		lt.Partitions = append(lt.Partitions, rp)
	}
	lo.Topics = append(lo.Topics, lt)
	var got []string
	for _, rt := range c.roundTrip(lo).(*kmsg.ListOffsetsResponse).Topics {
		for _, rp := range rt.Partitions {
			got = append(got, fmt.Sprintf("%d:%v:%d", rp.Partition, kerr.ErrorForCode(rp.ErrorCode), rp.Offset))
		}
	}
	if want := "[5:<nil>:2 0:<nil>:2 4:<nil>:2 1:<nil>:2 3:<nil>:2 2:<nil>:2]"; fmt.Sprint(got) != want {
		t.Errorf("ListOffsets: %v, want %v", got, want)
	}

	oe := kmsg.NewPtrOffsetForLeaderEpochRequest()
	oe.Version, oe.ReplicaID = 3, -1
	ot := kmsg.NewOffsetForLeaderEpochRequestTopic()
	ot.Topic = topic
	for _, p := range order {
		rp := kmsg.NewOffsetForLeaderEpochRequestTopicPartition()
		e, _ := tp.upstreams["source"].leaderEpoch(topic, p)
		rp.Partition, rp.CurrentLeaderEpoch, rp.LeaderEpoch = p, -1, e+tp.upstreams["source"].epochOffset.Load()
		ot.Partitions = append(ot.Partitions, rp)
	}
	oe.Topics = append(oe.Topics, ot)
	got = nil
	for _, rt := range c.roundTrip(oe).(*kmsg.OffsetForLeaderEpochResponse).Topics {
		for _, rp := range rt.Partitions {
			got = append(got, fmt.Sprintf("%d:%v:%d", rp.Partition, kerr.ErrorForCode(rp.ErrorCode), rp.EndOffset))
		}
	}
	if want := "[5:<nil>:2 0:<nil>:2 4:<nil>:2 1:<nil>:2 3:<nil>:2 2:<nil>:2]"; fmt.Sprint(got) != want {
		t.Errorf("OffsetForLeaderEpoch: %v, want %v", got, want)
	}

	dr := kmsg.NewPtrDeleteRecordsRequest()
	dr.Version, dr.TimeoutMillis = 2, 5000
	dt := kmsg.NewDeleteRecordsRequestTopic()
	dt.Topic = topic
	for _, p := range order {
		rp := kmsg.NewDeleteRecordsRequestTopicPartition()
		rp.Partition, rp.Offset = p, 1
		dt.Partitions = append(dt.Partitions, rp)
	}
	dr.Topics = append(dr.Topics, dt)
	got = nil
	for _, rt := range c.roundTrip(dr).(*kmsg.DeleteRecordsResponse).Topics {
		for _, rp := range rt.Partitions {
			got = append(got, fmt.Sprintf("%d:%v:%d", rp.Partition, kerr.ErrorForCode(rp.ErrorCode), rp.LowWatermark))
		}
	}
	if want := "[5:<nil>:1 0:<nil>:1 4:<nil>:1 1:<nil>:1 3:<nil>:1 2:<nil>:1]"; fmt.Sprint(got) != want {
		t.Errorf("DeleteRecords: %v, want %v", got, want)
	}
	for _, api := range []string{"ListOffsets", "OffsetForLeaderEpoch", "DeleteRecords"} {
		if n := testutil.ToFloat64(tp.m.partitionSplits.WithLabelValues(api)); n != 1 {
			t.Errorf("partition_request_splits_total{api=%q} %v, want 1", api, n)
		}
	}
}
