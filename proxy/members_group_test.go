package proxy

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/switchyard/switchyard/internal/kafkatest"
)

// The stale-member bed: a franz-go group member behind the proxy has read
// staleRecords records of each partition on the source and committed
// staleCommitted of them. The target holds stalePad records of other data
// at the start of each partition, then a copy of the source's — so a
// source offset names another record on the target, as after a real
// mirror — and the group's committed offsets translated onto it
// (staleCommitted + stalePad). A member that kept its source positions
// would read the target from offset staleRecords: the copy of source
// record staleRecords-stalePad, which it had committed.
const (
	staleParts     = 2
	staleRecords   = 20
	staleCommitted = 10
	stalePad       = 15 // > staleRecords-staleCommitted: a kept position re-reads a committed record
	staleMore      = 5  // records produced on the target after the switch, per partition
)

// staleCase is one group shape and the request its member sends first to
// the target after the switch.
type staleCase struct {
	name      string
	first     int16 // keyOffsetCommit, keyJoinGroup, keySyncGroup, keyHeartbeat, keyConsumerGroupHeartbeat, keyLeaveGroup
	opts      []kgo.Opt
	kip848    bool
	kfakeOnly bool
}

var (
	eager      = kgo.Balancers(kgo.RangeBalancer())
	static     = kgo.InstanceID("stale-instance-1")
	serverSide = []kgo.Opt{kgo.ServerSideBalancer(), kgo.Balancers(kgo.RangeBalancer())}
)

// TestStaleMembersEveryGroupAPI: after a switch, whichever group request a
// member of the source's group sends first to the target — OffsetCommit,
// JoinGroup, SyncGroup, Heartbeat, ConsumerGroupHeartbeat or LeaveGroup —
// the proxy answers it itself, the member drops its partitions and
// positions, rejoins on the target and resumes exactly at the translated
// committed offset: the first record it reads there is the one after its
// last source commit, nothing after that is read twice, nothing is lost.
// The request never reaches the target with the source membership.
// Classic eager and cooperative groups, a static member, and KIP-848.
func TestStaleMembersEveryGroupAPI(t *testing.T) {
	cases := []staleCase{
		{name: "commit/cooperative", first: keyOffsetCommit},
		{name: "commit/eager", first: keyOffsetCommit, opts: []kgo.Opt{eager}},
		{name: "commit/static", first: keyOffsetCommit, opts: []kgo.Opt{static}},
		{name: "commit/kip848", first: keyOffsetCommit, opts: serverSide, kip848: true},
		{name: "join/cooperative", first: keyJoinGroup},
		{name: "join/eager", first: keyJoinGroup, opts: []kgo.Opt{eager}},
		{name: "join/static", first: keyJoinGroup, opts: []kgo.Opt{static}},
		{name: "sync/cooperative", first: keySyncGroup, kfakeOnly: true},
		{name: "sync/static", first: keySyncGroup, opts: []kgo.Opt{static}, kfakeOnly: true},
		{name: "heartbeat/cooperative", first: keyHeartbeat},
		{name: "heartbeat/kip848", first: keyConsumerGroupHeartbeat, opts: serverSide, kip848: true},
		{name: "leave/cooperative", first: keyLeaveGroup},
		{name: "leave/kip848", first: keyLeaveGroup, opts: serverSide, kip848: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			runStaleCase(t, tc)
		})
	}
}

// staleBed is one run of a staleCase.
type staleBed struct {
	t              *testing.T
	ctx            context.Context
	tp             *testProxy
	topic, group   string
	cl             *kgo.Client
	source, target *kafkatest.Cluster

	mu       sync.Mutex
	read     []*kgo.Record
	switchAt int      // index in read of the first record read after the switch
	cutover  bool     // the cutover began: partitions dropped from now on count
	dropped  []string // partitions the member dropped since

	// Member ids each cluster's coordinator was sent (kfake only).
	srcMembers, tgtMembers *memberLog
}

// memberLog records the member ids of group requests a kfake cluster
// handles.
type memberLog struct {
	mu   sync.Mutex
	seen map[string][]string // member id → the APIs that named it
}

func observeMembers(c *kafkatest.Cluster, group string) *memberLog {
	l := &memberLog{seen: map[string][]string{}}
	if c.Fake == nil {
		return l
	}
	c.Fake.Control(func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.Fake.KeepControl()
		// Every group request names its group and member in fields
		// of these names (LeaveGroup v3+ in Members as well).
		v := reflect.ValueOf(req).Elem()
		gf, mf := v.FieldByName("Group"), v.FieldByName("MemberID")
		if !gf.IsValid() || !mf.IsValid() || gf.Kind() != reflect.String || mf.Kind() != reflect.String {
			return nil, nil, false
		}
		g, m := gf.String(), mf.String()
		if lr, ok := req.(*kmsg.LeaveGroupRequest); ok {
			for _, lm := range lr.Members {
				m += lm.MemberID
			}
		}
		if g == group && m != "" {
			l.mu.Lock()
			l.seen[m] = append(l.seen[m], kmsg.NameForKey(req.Key()))
			l.mu.Unlock()
		}
		return nil, nil, false
	})
	return l
}

func (l *memberLog) ids() map[string][]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string][]string, len(l.seen))
	for k, v := range l.seen {
		out[k] = append([]string(nil), v...)
	}
	return out
}

func staleValue(p int32, i int) string { return fmt.Sprintf("p%d-%d", p, i) }

func runStaleCase(t *testing.T, tc staleCase) {
	source, target := kafkatest.Pair(t)
	if tc.kfakeOnly && source.Fake == nil {
		t.Skip("needs kfake's control functions to hold a SyncGroup across the switch")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	b := &staleBed{t: t, ctx: ctx, source: source, target: target,
		topic: kafkatest.Topic(t, "stale"), group: kafkatest.Topic(t, "stale-g")}
	b.srcMembers = observeMembers(source, b.group)
	b.tgtMembers = observeMembers(target, b.group)
	source.CreateTopic(t, b.topic, staleParts)
	target.CreateTopic(t, b.topic, staleParts)
	b.tp = startProxy(t, source, target)

	// The source's records, read by the member; a commit of part of them.
	src := source.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	b.produce(src, 0, staleRecords)
	b.startMember(tc)
	b.waitRead(staleParts*staleRecords, "the member read the source")
	committed := map[string]map[int32]kgo.EpochOffset{b.topic: {}}
	for p := range int32(staleParts) {
		committed[b.topic][p] = kgo.EpochOffset{Epoch: -1, Offset: staleCommitted}
	}
	var commitErr error
	b.cl.CommitOffsetsSync(ctx, committed, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		commitErr = err
		if err == nil {
			for _, rt := range resp.Topics {
				for _, rp := range rt.Partitions {
					if rp.ErrorCode != 0 && commitErr == nil {
						commitErr = fmt.Errorf("partition %d: error %d", rp.Partition, rp.ErrorCode)
					}
				}
			}
		}
	})
	if commitErr != nil {
		t.Fatalf("commit on the source: %v", commitErr)
	}

	// The mirror: other data first, then the source's records; the
	// group's offsets translated.
	tgt := target.Client(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for p := range int32(staleParts) {
		for i := range stalePad {
			b.produceOne(tgt, p, fmt.Sprintf("pad-%d", i))
		}
	}
	b.produce(tgt, 0, staleRecords)
	translated := kadm.Offsets{}
	for p := range int32(staleParts) {
		translated.Add(kadm.Offset{Topic: b.topic, Partition: p, At: staleCommitted + stalePad, LeaderEpoch: -1})
	}
	if _, err := kadm.NewClient(tgt).CommitOffsets(ctx, b.group, translated); err != nil {
		t.Fatalf("commit translated offsets on the target: %v", err)
	}

	// The flip: Fetch refused until the group has rejoined on the target
	// (what a cutover does), and the row's request sent first.
	fetchGate := Gate{APIKeys: []int16{keyFetch}, Mode: GateReject}
	b.firstRequest(tc, fetchGate)
	if tc.first == keyLeaveGroup {
		b.checkLeft(tc)
		return
	}
	b.waitRejoined(tc)
	b.tp.ClearGate()

	// The producers write on the target now.
	b.produce(tgt, staleRecords, staleMore)
	b.waitTargetReads()
	b.check(tc)
}

// firstRequest switches the proxy to the target so that the member's first
// group request there is tc.first.
func (b *staleBed) firstRequest(tc staleCase, fetchGate Gate) {
	t, tp := b.t, b.tp
	b.mu.Lock()
	b.cutover = true
	b.mu.Unlock()
	switchNow := func() {
		t.Helper()
		b.mu.Lock()
		b.switchAt = len(b.read)
		b.mu.Unlock()
		if _, err := tp.Switch(b.ctx, "target"); err != nil {
			t.Fatalf("switch: %v", err)
		}
	}
	if err := tp.SetGate(fetchGate); err != nil {
		t.Fatal(err)
	}
	switch tc.first {
	case keyOffsetCommit:
		// The member has read more than it committed: its next commit
		// carries its source membership.
		switchNow()
		b.cl.CommitUncommittedOffsets(b.ctx) // fails: that is the point
		b.waitStale("OffsetCommit", "")
	case keyJoinGroup:
		// A rebalance whose JoinGroup is refused until the switch: the
		// member's next request is that JoinGroup, on the target.
		if err := tp.SetGate(Gate{APIKeys: []int16{keyFetch, keyJoinGroup}, Mode: GateReject}); err != nil {
			t.Fatal(err)
		}
		b.cl.ForceRebalance()
		eventually(t, 20*time.Second, "a JoinGroup refused by the gate", func() error {
			if gatheredValue(t, tp.reg, "switchyard_proxy_gated_requests_total", "api_key", "JoinGroup") == 0 {
				return errNotYet
			}
			return nil
		})
		switchNow()
		if err := tp.SetGate(fetchGate); err != nil {
			t.Fatal(err)
		}
		b.waitStale("JoinGroup", "")
	case keySyncGroup:
		// The source's answer to the rebalance's SyncGroup is held past
		// the switch; the switch answers it NOT_COORDINATOR and the member
		// sends it again, to the target.
		release := make(chan struct{})
		var once sync.Once
		defer once.Do(func() { close(release) })
		b.source.Fake.ControlKey(int16(kmsg.SyncGroup), func(kmsg.Request) (kmsg.Response, error, bool) {
			b.source.Fake.SleepControl(func() { <-release })
			return nil, nil, false
		})
		b.cl.ForceRebalance()
		eventually(t, 20*time.Second, "a SyncGroup in flight on the source", func() error {
			if tp.Status().InFlightByAPI[keySyncGroup] == 0 {
				return errNotYet
			}
			return nil
		})
		switchNow()
		once.Do(func() { close(release) })
		b.waitStale("SyncGroup", "")
	case keyHeartbeat, keyConsumerGroupHeartbeat:
		switchNow()
		b.waitStale(apiName(tc.first), "")
	case keyLeaveGroup:
		switchNow()
		if err := b.cl.LeaveGroupContext(b.ctx); err != nil {
			t.Errorf("leaving the group after the switch: %v", err)
		}
	}
}

// waitStale waits until the proxy answered a stale member's request of api
// (with answer, unless empty).
func (b *staleBed) waitStale(api, answer string) {
	b.t.Helper()
	labels := []string{"api", api}
	if answer != "" {
		labels = append(labels, "answer", answer)
	}
	eventually(b.t, 20*time.Second, "the proxy answered a stale "+api, func() error {
		if gatheredValue(b.t, b.tp.reg, "switchyard_proxy_stale_member_requests_total", labels...) == 0 {
			return errNotYet
		}
		return nil
	})
}

// startMember starts the group member and its poll loop, which stops with
// the test.
func (b *staleBed) startMember(tc staleCase) {
	drop := func(how string) func(context.Context, *kgo.Client, map[string][]int32) {
		return func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			if len(m[b.topic]) == 0 {
				return
			}
			b.mu.Lock()
			defer b.mu.Unlock()
			if b.cutover {
				b.dropped = append(b.dropped, fmt.Sprintf("%s %v", how, m[b.topic]))
			}
		}
	}
	opts := append([]kgo.Opt{
		kgo.ConsumerGroup(b.group), kgo.ConsumeTopics(b.topic),
		kgo.DisableAutoCommit(), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(200 * time.Millisecond), kgo.HeartbeatInterval(time.Second),
		kgo.OnPartitionsLost(drop("lost")), kgo.OnPartitionsRevoked(drop("revoked")),
	}, tc.opts...)
	b.cl = b.tp.client(b.t, opts...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	b.t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			fs := b.cl.PollFetches(ctx)
			b.mu.Lock()
			b.read = append(b.read, fs.Records()...)
			b.mu.Unlock()
		}
	}()
}

func (b *staleBed) produceOne(cl *kgo.Client, p int32, value string) {
	b.t.Helper()
	r := &kgo.Record{Topic: b.topic, Partition: p, Value: []byte(value)}
	if err := cl.ProduceSync(b.ctx, r).FirstErr(); err != nil {
		b.t.Fatalf("produce: %v", err)
	}
}

// produce writes records [from, from+n) of every partition.
func (b *staleBed) produce(cl *kgo.Client, from, n int) {
	b.t.Helper()
	var rs []*kgo.Record
	for p := range int32(staleParts) {
		for i := from; i < from+n; i++ {
			rs = append(rs, &kgo.Record{Topic: b.topic, Partition: p, Value: []byte(staleValue(p, i))})
		}
	}
	if err := cl.ProduceSync(b.ctx, rs...).FirstErr(); err != nil {
		b.t.Fatalf("produce: %v", err)
	}
}

func (b *staleBed) waitRead(n int, what string) {
	b.t.Helper()
	eventually(b.t, 30*time.Second, what, func() error {
		b.mu.Lock()
		defer b.mu.Unlock()
		if len(b.read) < n {
			return fmt.Errorf("%d of %d records", len(b.read), n)
		}
		return nil
	})
}

// waitRejoined waits until the member is the target group's only member,
// assigned both partitions.
func (b *staleBed) waitRejoined(tc staleCase) {
	adm := kadm.NewClient(b.target.Client(b.t))
	eventually(b.t, 30*time.Second, "the member rejoined on the target", func() error {
		var assigned kadm.TopicsSet
		if tc.kip848 {
			// KIP-848: the coordinator assigns; the member is the one.
			ds, err := adm.DescribeConsumerGroups(b.ctx, b.group)
			if err != nil {
				return err
			}
			d := ds[b.group]
			if d.Err != nil || len(d.Members) != 1 {
				return fmt.Errorf("state %s, %d members, %v", d.State, len(d.Members), d.Err)
			}
			// kadm names topics by the ids the coordinator sends, which it
			// may not resolve: the member reads one topic, count them all.
			n := 0
			for _, ps := range d.AssignedPartitions() {
				n += len(ps)
			}
			if n != staleParts {
				return fmt.Errorf("%d partitions assigned", n)
			}
			return nil
		} else {
			ds, err := adm.DescribeGroups(b.ctx, b.group)
			if err != nil {
				return err
			}
			d := ds[b.group]
			if d.Err != nil || d.State != "Stable" || len(d.Members) != 1 {
				return fmt.Errorf("state %s, %d members, %v", d.State, len(d.Members), d.Err)
			}
			assigned = d.AssignedPartitions()
		}
		if n := len(assigned[b.topic]); n != staleParts {
			return fmt.Errorf("%d partitions assigned", n)
		}
		return nil
	})
}

// targetReads returns the records read after the switch.
func (b *staleBed) targetReads() []*kgo.Record {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*kgo.Record(nil), b.read[b.switchAt:]...)
}

// waitTargetReads waits until the member has read, on the target, every
// record it should have (from its committed offset to the end), or more.
func (b *staleBed) waitTargetReads() {
	want := staleParts * (staleRecords + staleMore - staleCommitted)
	eventually(b.t, 30*time.Second, "the member read the target", func() error {
		if n := len(b.targetReads()); n < want {
			return fmt.Errorf("%d of %d records", n, want)
		}
		return nil
	})
}

// check asserts what the member read on the target: per partition exactly
// the records from its last source commit on, once each, in order,
// starting at the translated committed offset; and that it dropped its
// positions and no request reached the target with its source membership.
func (b *staleBed) check(tc staleCase) {
	t := b.t
	byPart := map[int32][]*kgo.Record{}
	for _, r := range b.targetReads() {
		byPart[r.Partition] = append(byPart[r.Partition], r)
	}
	for p := range int32(staleParts) {
		var got, want []string
		for _, r := range byPart[p] {
			got = append(got, string(r.Value))
		}
		for i := staleCommitted; i < staleRecords+staleMore; i++ {
			want = append(want, staleValue(p, i))
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("partition %d read on the target:\n got %v\nwant %v (from the committed offset %d, once each)", p, got, want, staleCommitted)
		}
		if rs := byPart[p]; len(rs) > 0 && rs[0].Offset != staleCommitted+stalePad {
			t.Errorf("partition %d: first record read on the target at offset %d, want the translated committed offset %d", p, rs[0].Offset, staleCommitted+stalePad)
		}
	}
	b.mu.Lock()
	dropped := b.dropped
	b.mu.Unlock()
	if len(dropped) == 0 {
		t.Errorf("the member never dropped its partitions (lost or revoked) after the switch")
	}
	if b.target.Fake != nil && len(b.tgtMembers.ids()) == 0 {
		t.Errorf("the target's coordinator saw no member: the observer is broken")
	}
	b.checkTargetNeverSawSource()
}

// checkTargetNeverSawSource asserts that no group request reached the
// target with a member id the source's coordinator was sent.
func (b *staleBed) checkTargetNeverSawSource() {
	src := b.srcMembers.ids()
	for m, apis := range b.tgtMembers.ids() {
		if _, ok := src[m]; ok {
			b.t.Errorf("member %s of the source reached the target's coordinator with %v", m, apis)
		}
	}
}

// checkLeft asserts a stale member's leave was answered by the proxy.
func (b *staleBed) checkLeft(tc staleCase) {
	api := apiName(keyLeaveGroup)
	if tc.kip848 {
		api = apiName(keyConsumerGroupHeartbeat) // a leave is a heartbeat with epoch -1
	}
	b.waitStale(api, "success")
	b.checkTargetNeverSawSource()
}
