package proxy

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/switchyard/switchyard/internal/kafkatest"
)

// usageTopic, usageGroup and usageTxn find one entry of a usage.
func usageTopic(u Usage, topic string) (TopicUsage, bool) {
	for _, t := range u.Topics {
		if t.Topic == topic {
			return t, true
		}
	}
	return TopicUsage{}, false
}

func usageGroup(u Usage, group string) (GroupUsage, bool) {
	for _, g := range u.Groups {
		if g.Group == group {
			return g, true
		}
	}
	return GroupUsage{}, false
}

func usageTxn(u Usage, id string) (TransactionalUsage, bool) {
	for _, t := range u.Transactions {
		if t.ID == id {
			return t, true
		}
	}
	return TransactionalUsage{}, false
}

// produceVersions records the Produce versions a kfake cluster is sent.
type produceVersions struct {
	mu sync.Mutex
	v  map[int16]bool
}

func observeProduceVersions(c *kafkatest.Cluster) *produceVersions {
	pv := &produceVersions{v: map[int16]bool{}}
	c.Fake.Control(func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.Fake.KeepControl()
		if req.Key() == keyProduce {
			pv.mu.Lock()
			pv.v[req.GetVersion()] = true
			pv.mu.Unlock()
		}
		return nil, nil, false
	})
	return pv
}

func (pv *produceVersions) saw(v int16) bool {
	pv.mu.Lock()
	defer pv.mu.Unlock()
	return pv.v[v]
}

// TestUsageEmptyBeforeTraffic: a proxy whose clients did nothing but look
// the cluster up reports no usage.
func TestUsageEmptyBeforeTraffic(t *testing.T) {
	src := kafkatest.NewFake(t, "source", 1)
	tp := startProxy(t, src, nil)
	if u := tp.Status().Usage; !u.IsZero() {
		t.Fatalf("usage before any client: %+v, want none", u)
	}
	cl := tp.client(t)
	if _, err := kadm.NewClient(cl).ListTopics(context.Background()); err != nil {
		t.Fatalf("metadata: %v", err)
	}
	if u := tp.Status().Usage; !u.IsZero() {
		t.Fatalf("usage after a metadata request: %+v, want none", u)
	}
}

// TestUsageTopics: the topics clients produce to — by name (Produce v12)
// and by topic id (v13) —, fetch (with a fetch session, and without a
// group) and create are reported with what was done to each, and nothing
// else is.
func TestUsageTopics(t *testing.T) {
	src := kafkatest.NewFake(t, "source", 1)
	versions := observeProduceVersions(src)
	tp := startProxy(t, src, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	byID, byName, fetched, created := "usage-by-id", "usage-by-name", "usage-fetched", "usage-created"
	for _, topic := range []string{byID, byName, fetched} {
		src.CreateTopic(t, topic, 1)
	}
	start := time.Now().Add(-time.Second)

	cl := tp.client(t, kgo.ClientID("usage-producer"))
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: byID, Value: []byte("a")}).FirstErr(); err != nil {
		t.Fatalf("produce %s: %v", byID, err)
	}
	old := tp.client(t, kgo.MaxVersions(kversionsProduce(12)))
	if err := old.ProduceSync(ctx, &kgo.Record{Topic: byName, Value: []byte("b")}).FirstErr(); err != nil {
		t.Fatalf("produce %s: %v", byName, err)
	}
	if !versions.saw(13) || !versions.saw(12) {
		t.Fatalf("produce versions the cluster saw: %v, want 12 and 13", versions.v)
	}
	if err := src.Client(t).ProduceSync(ctx, &kgo.Record{Topic: fetched, Value: []byte("c")}).FirstErr(); err != nil {
		t.Fatalf("produce %s directly: %v", fetched, err)
	}
	consumer := tp.client(t, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{fetched: {0: kgo.NewOffset().AtStart()}}))
	fs := consumer.PollFetches(ctx)
	if err := fs.Err0(); err != nil || fs.NumRecords() != 1 {
		t.Fatalf("fetch %s: %d records, %v", fetched, fs.NumRecords(), err)
	}
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, 1, 1, nil, created); err != nil {
		t.Fatalf("create %s: %v", created, err)
	}

	u := tp.Status().Usage
	var names []string
	for _, tu := range u.Topics {
		names = append(names, tu.Topic)
	}
	if want := []string{byID, byName, created, fetched}; !slices.Equal(names, want) {
		t.Fatalf("topics %v, want %v (sorted)", names, want)
	}
	end := time.Now().Add(time.Second)
	for _, tc := range []struct {
		topic                      string
		produced, fetched, created bool
	}{
		{byID, true, false, false},
		{byName, true, false, false},
		{fetched, false, true, false},
		{created, false, false, true},
	} {
		tu, _ := usageTopic(u, tc.topic)
		if tu.Produced != tc.produced || tu.Fetched != tc.fetched || tu.Created != tc.created {
			t.Errorf("%s: produced %v fetched %v created %v, want %v %v %v", tc.topic,
				tu.Produced, tu.Fetched, tu.Created, tc.produced, tc.fetched, tc.created)
		}
		if tc.produced != (tu.LastProduced.After(start) && tu.LastProduced.Before(end)) {
			t.Errorf("%s: last produced %v, want it between %v and %v only if produced", tc.topic, tu.LastProduced, start, end)
		}
		if tc.fetched != (tu.LastFetched.After(start) && tu.LastFetched.Before(end)) {
			t.Errorf("%s: last fetched %v, want it between %v and %v only if fetched", tc.topic, tu.LastFetched, start, end)
		}
	}
	if len(u.Groups) != 0 || len(u.Transactions) != 0 || u.Dropped != 0 {
		t.Errorf("groups %v, transactions %v, dropped %d: want none", u.Groups, u.Transactions, u.Dropped)
	}
}

// kversionsProduce is the client's default versions with Produce capped
// at v.
func kversionsProduce(v int16) *kversion.Versions {
	vs := kversion.Stable()
	vs.SetMaxKeyVersion(keyProduce, v)
	return vs
}

// TestUsageGroups: consumer groups are reported with their protocol, the
// classic protocol names, the member ids the cluster issued to the clients
// (as the clients hold them), static instance ids and client ids: an eager
// static member, a cooperative one, a KIP-848 member, and an assign()
// consumer that commits offsets for a group it is no member of.
func TestUsageGroups(t *testing.T) {
	src := kafkatest.NewFake(t, "source", 1)
	tp := startProxy(t, src, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topic := "usage-groups"
	src.CreateTopic(t, topic, 2)
	if err := src.Client(t).ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}

	type member struct {
		group string
		opts  []kgo.Opt
		want  GroupUsage // MemberIDs filled from the client
	}
	members := []member{
		{group: "usage-eager", opts: []kgo.Opt{kgo.ClientID("eager-client"), kgo.Balancers(kgo.RangeBalancer()), kgo.InstanceID("eager-1")},
			want: GroupUsage{Protocol: "classic", ProtocolNames: []string{"range"}, InstanceIDs: []string{"eager-1"}, ClientIDs: []string{"eager-client"}}},
		{group: "usage-cooperative", opts: []kgo.Opt{kgo.ClientID("coop-client")},
			want: GroupUsage{Protocol: "classic", ProtocolNames: []string{"cooperative-sticky"}, ClientIDs: []string{"coop-client"}}},
		{group: "usage-848", opts: []kgo.Opt{kgo.ClientID("kip848-client"), kgo.ServerSideBalancer(), kgo.Balancers(kgo.RangeBalancer())},
			want: GroupUsage{Protocol: "consumer", ClientIDs: []string{"kip848-client"}}},
	}
	var clients []*kgo.Client
	for _, m := range members {
		cl := tp.client(t, append([]kgo.Opt{kgo.ConsumeTopics(topic), kgo.ConsumerGroup(m.group),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())}, m.opts...)...)
		clients = append(clients, cl)
		if fs := cl.PollRecords(ctx, 1); fs.NumRecords() != 1 {
			t.Fatalf("%s: polled %d records: %v", m.group, fs.NumRecords(), fs.Err0())
		}
	}
	// assign() with a group id: offsets committed with no membership
	// (generation -1, no member id), as kadm does.
	committer := tp.client(t, kgo.ClientID("assign-client"))
	var offsets kadm.Offsets
	offsets.Add(kadm.Offset{Topic: topic, Partition: 0, At: 1, LeaderEpoch: -1})
	if _, err := kadm.NewClient(committer).CommitOffsets(ctx, "usage-assign", offsets); err != nil {
		t.Fatalf("commit for usage-assign: %v", err)
	}

	for i, m := range members {
		id, _ := clients[i].GroupMetadata()
		if id == "" {
			t.Fatalf("%s: the client holds no member id", m.group)
		}
		want := m.want
		want.Group, want.MemberIDs = m.group, []string{id}
		eventually(t, 10*time.Second, m.group+" usage", func() error {
			got, _ := usageGroup(tp.Status().Usage, m.group)
			if !reflect.DeepEqual(got, want) {
				return fmt.Errorf("got %+v, want %+v", got, want)
			}
			return nil
		})
	}
	want := GroupUsage{Group: "usage-assign", ClientIDs: []string{"assign-client"}}
	if got, _ := usageGroup(tp.Status().Usage, "usage-assign"); !reflect.DeepEqual(got, want) {
		t.Errorf("assign() committer: got %+v, want %+v", got, want)
	}

	// A member that leaves is no longer reported; its group is.
	id, _ := clients[1].GroupMetadata()
	clients[1].Close()
	eventually(t, 10*time.Second, "the cooperative member gone", func() error {
		got, ok := usageGroup(tp.Status().Usage, "usage-cooperative")
		if !ok || slices.Contains(got.MemberIDs, id) {
			return fmt.Errorf("group %+v still lists member %s", got, id)
		}
		return nil
	})
}

// TestUsageTransactions: a consume-transform-produce application
// (franz-go GroupTransactSession) shows its input fetched, its output
// produced, its group committed transactionally, and its transactional id
// with that group; a transactional producer without a group shows its id
// alone, open while its transaction is.
func TestUsageTransactions(t *testing.T) {
	src := kafkatest.NewFake(t, "source", 1)
	tp := startProxy(t, src, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	in, out, group := "usage-in", "usage-out", "usage-eos"
	src.CreateTopic(t, in, 1)
	src.CreateTopic(t, out, 1)
	if err := src.Client(t).ProduceSync(ctx, &kgo.Record{Topic: in, Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}

	sess, err := kgo.NewGroupTransactSession(kgo.SeedBrokers(tp.Addr().String()), kgo.ClientID("eos-client"),
		kgo.TransactionalID("usage-eos-txn"), kgo.ConsumeTopics(in), kgo.ConsumerGroup(group),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatalf("session: %v", err)
	}
	defer sess.Close()
	fs := sess.PollRecords(ctx, 1)
	if fs.NumRecords() != 1 {
		t.Fatalf("polled %d records: %v", fs.NumRecords(), fs.Err0())
	}
	if err := sess.Begin(); err != nil {
		t.Fatalf("begin: %v", err)
	}
	if err := sess.ProduceSync(ctx, &kgo.Record{Topic: out, Value: []byte("y")}).FirstErr(); err != nil {
		t.Fatalf("produce in transaction: %v", err)
	}
	if committed, err := sess.End(ctx, kgo.TryCommit); err != nil || !committed {
		t.Fatalf("end: committed %v, %v", committed, err)
	}

	plain := tp.client(t, kgo.TransactionalID("usage-plain-txn"))
	if err := plain.BeginTransaction(); err != nil {
		t.Fatalf("begin: %v", err)
	}
	if err := plain.ProduceSync(ctx, &kgo.Record{Topic: out, Value: []byte("z")}).FirstErr(); err != nil {
		t.Fatalf("produce in transaction: %v", err)
	}
	check := func(open bool) {
		t.Helper()
		eventually(t, 10*time.Second, "transactional usage", func() error {
			u := tp.Status().Usage
			g, _ := usageGroup(u, group)
			if g.Protocol != "classic" || !g.Transactional || !slices.Equal(g.ClientIDs, []string{"eos-client"}) || len(g.MemberIDs) != 1 {
				return fmt.Errorf("group %+v, want classic, transactional, client eos-client, one member", g)
			}
			if tx, _ := usageTxn(u, "usage-eos-txn"); !reflect.DeepEqual(tx, TransactionalUsage{ID: "usage-eos-txn", Groups: []string{group}}) {
				return fmt.Errorf("usage-eos-txn: %+v, want closed, committing %s", tx, group)
			}
			if tx, _ := usageTxn(u, "usage-plain-txn"); !reflect.DeepEqual(tx, TransactionalUsage{ID: "usage-plain-txn", Open: open}) {
				return fmt.Errorf("usage-plain-txn: %+v, want open %v, no groups", tx, open)
			}
			if tu, _ := usageTopic(u, in); !tu.Fetched || tu.Produced {
				return fmt.Errorf("%s: %+v, want fetched only", in, tu)
			}
			if tu, _ := usageTopic(u, out); !tu.Produced || tu.Fetched {
				return fmt.Errorf("%s: %+v, want produced only", out, tu)
			}
			if len(u.Transactions) != 2 {
				return fmt.Errorf("transactions %+v, want two", u.Transactions)
			}
			return nil
		})
	}
	check(true)
	if err := plain.EndTransaction(ctx, kgo.TryCommit); err != nil {
		t.Fatalf("end: %v", err)
	}
	check(false)
}

// TestUsageFetchSession: an incremental fetch names only the partitions
// that changed; it counts as fetching every topic of the session, and a
// full fetch starts the list afresh.
func TestUsageFetchSession(t *testing.T) {
	p, _ := benchProxy(t, map[string][16]byte{"a": topicID(0), "b": topicID(1), "c": topicID(2)})
	clk := newFakeClock()
	p.usage.clock = clk
	c := &clientConn{p: p}
	fetch := func(epoch int32, topics ...string) {
		r := kmsg.NewPtrFetchRequest()
		r.Version, r.SessionID, r.SessionEpoch = 13, 5, epoch
		for _, name := range topics {
			ft := kmsg.NewFetchRequestTopic()
			ft.TopicID = virtualTopicID(p.clusterID, name)
			r.Topics = append(r.Topics, ft)
		}
		p.noteFetch(c, r)
	}
	last := func(topic string) time.Time {
		t.Helper()
		tu, _ := usageTopic(p.usage.build(p.pids.txns, clk.Now()), topic)
		return tu.LastFetched
	}
	t0 := clk.Now()
	fetch(0, "a", "b") // a session opens
	clk.Advance(2 * time.Second)
	fetch(1) // nothing changed
	if t1 := clk.Now(); !last("a").Equal(t1) || !last("b").Equal(t1) {
		t.Fatalf("after an empty incremental fetch: a %v, b %v, want %v", last("a"), last("b"), t1)
	}
	clk.Advance(2 * time.Second)
	fetch(2, "c") // c added to the session
	clk.Advance(2 * time.Second)
	fetch(3)
	if t3 := clk.Now(); !last("a").Equal(t3) || !last("c").Equal(t3) {
		t.Fatalf("after c joined the session: a %v, c %v, want %v", last("a"), last("c"), t3)
	}
	clk.Advance(2 * time.Second)
	fetch(0, "b") // a new session, of b alone
	clk.Advance(2 * time.Second)
	fetch(1)
	if t5 := clk.Now(); !last("b").Equal(t5) || !last("a").Before(t5) || last("a").Before(t0) {
		t.Fatalf("after a new session of b: a %v, b %v, want b at %v and a earlier", last("a"), last("b"), t5)
	}
}

// TestUsageMembers: member ids are the current cluster's: a switch
// forgets them, a response to a request sent before the switch issues
// none, a leave (LeaveGroup, a KIP-848 heartbeat with epoch -1) forgets
// one, and one not seen for memberUsageExpiry is forgotten.
func TestUsageMembers(t *testing.T) {
	u := newUsage()
	clk := newFakeClock()
	u.clock = clk
	members := func(group string) []string {
		t.Helper()
		g, _ := usageGroup(u.build(newTxnTable(time.Minute), clk.Now()), group)
		return g.MemberIDs
	}
	u.issued(0, "g", "m1")
	u.issued(0, "g", "m2")
	if got := members("g"); !slices.Equal(got, []string{"m1", "m2"}) {
		t.Fatalf("members %v, want m1 m2", got)
	}
	u.switched()
	if got := members("g"); len(got) != 0 {
		t.Fatalf("members after a switch %v, want none", got)
	}
	u.issued(0, "g", "m3") // answers a request sent before the switch
	if got := members("g"); len(got) != 0 {
		t.Fatalf("members from a response to a request before the switch: %v, want none", got)
	}
	u.issued(1, "g", "m4")
	u.issued(1, "g", "m5")
	u.issued(1, "g", "m6")
	u.mu.Lock()
	u.forgetMemberLocked(u.groups["g"], "m4")
	u.heartbeatLocked(u.groups["g"], "m5", -1, nil)
	u.mu.Unlock()
	if got := members("g"); !slices.Equal(got, []string{"m6"}) {
		t.Fatalf("members after two leaves %v, want m6", got)
	}
	clk.Advance(memberUsageExpiry + 2*time.Minute)
	u.issued(1, "g", "m7")
	if got := members("g"); !slices.Equal(got, []string{"m7"}) {
		t.Fatalf("members after m6 went silent %v, want m7", got)
	}
	if u.bytes != groupUsageBytes("g")+stringUsageBytes("m7") {
		t.Fatalf("charged %d bytes, want %d: forgotten members must give theirs back", u.bytes, groupUsageBytes("g")+stringUsageBytes("m7"))
	}
}

// TestUsageBounds: past its bounds usage records nothing more and counts
// each name it refused once, however often it is used; the report stays
// within usageMaxBytes even with names of Kafka's longest length.
func TestUsageBounds(t *testing.T) {
	u := newUsage()
	long := func(prefix string, i int) string {
		s := fmt.Sprintf("%s-%d-", prefix, i)
		return s + strings.Repeat("x", 249-len(s)) // Kafka's longest topic name
	}
	n := 0
	for ; u.topic(long("t", n)) != nil; n++ {
	}
	if want := int(usageMaxBytes / topicUsageBytes(long("t", 0))); n != want {
		t.Fatalf("%d topics of 249 bytes recorded, want %d", n, want)
	}
	for range 3 {
		for i := n; i < n+10; i++ {
			u.produced(long("t", i), time.Now().UnixNano())
		}
	}
	snap := u.build(newTxnTable(time.Minute), time.Now())
	if len(snap.Topics) != n || snap.Dropped != 10 {
		t.Fatalf("%d topics, %d dropped, want %d and 10 (each refused name once)", len(snap.Topics), snap.Dropped, n)
	}

	// Counts: the group bound with short names.
	u = newUsage()
	for i := range maxUsageGroups + 5 {
		u.mu.Lock()
		u.groupLocked(fmt.Sprint(i), time.Now())
		u.mu.Unlock()
	}
	for i := range maxUsageGroupEntries + 3 {
		u.issued(0, "0", fmt.Sprint(i))
	}
	snap = u.build(newTxnTable(time.Minute), time.Now())
	g, _ := usageGroup(snap, "0")
	if len(snap.Groups) != maxUsageGroups || len(g.MemberIDs) != maxUsageGroupEntries || snap.Dropped != 5+3 {
		t.Fatalf("%d groups, %d members, %d dropped; want %d, %d, 8", len(snap.Groups), len(g.MemberIDs), snap.Dropped, maxUsageGroups, maxUsageGroupEntries)
	}

	// Transactional ids of the transaction table share what is left.
	u = newUsage()
	for i := 0; u.topic(long("t", i)) != nil; i++ {
	}
	txns := newTxnTable(time.Minute)
	for i := range 100 {
		txns.producerLocked(long("txn", i))
	}
	snap = u.build(txns, time.Now())
	left := usageMaxBytes - u.bytes
	if want := int(left / txnUsageBytes(long("txn", 0))); len(snap.Transactions) != want || snap.Dropped != int64(1+100-want) {
		t.Fatalf("%d transactional ids, %d dropped; want %d and %d", len(snap.Transactions), snap.Dropped, want, 1+100-want)
	}
}

// TestUsageExpiry: topics and groups unused for usageExpiry are forgotten,
// and what they took is given back: a name refused for lack of room is
// recorded once there is room again.
func TestUsageExpiry(t *testing.T) {
	u := newUsage()
	clk := newFakeClock()
	u.clock = clk
	long := func(i int) string { return fmt.Sprintf("%03d", i) + strings.Repeat("x", 246) }
	n := 0
	for ; u.topic(long(n)) != nil; n++ {
		u.produced(long(n), clk.Now().UnixNano())
	}
	u.mu.Lock()
	u.groupLocked("g", clk.Now())
	u.mu.Unlock()
	txns := newTxnTable(time.Minute)
	if snap := u.build(txns, clk.Now()); len(snap.Topics) != n || len(snap.Groups) != 1 || snap.Dropped != 1 {
		t.Fatalf("%d topics, %d groups, %d dropped, want %d, 1 and 1", len(snap.Topics), len(snap.Groups), snap.Dropped, n)
	}
	clk.Advance(usageExpiry / 2)
	u.produced(long(0), clk.Now().UnixNano()) // used again: kept
	clk.Advance(usageExpiry/2 + time.Minute)
	snap := u.build(txns, clk.Now())
	if len(snap.Topics) != 1 || snap.Topics[0].Topic != long(0) || snap.Dropped != 0 || len(snap.Groups) != 0 {
		t.Fatalf("after the expiry: %d topics, %d groups, %d dropped; want the one used, none, 0", len(snap.Topics), len(snap.Groups), snap.Dropped)
	}
	if u.bytes != topicUsageBytes(long(0)) {
		t.Fatalf("charged %d bytes, want %d", u.bytes, topicUsageBytes(long(0)))
	}
	u.produced(long(n), clk.Now().UnixNano())
	if _, ok := usageTopic(u.build(txns, clk.Now()), long(n)); !ok {
		t.Fatalf("the topic refused before is not recorded now that there is room")
	}
}
