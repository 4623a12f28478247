package proxy

// What the proxy's clients do (Status.Usage): the topics they produce to,
// fetch and create; their consumer groups with the protocol, the member ids
// the current cluster issued, static instance ids, client ids and whether
// offsets are committed inside transactions; and their transactional ids
// with the groups whose offsets each commits. A control plane derives a
// cutover's default coverage from it, and the order in which applications
// move (producers first, then groups).
//
// Learnt from what the proxy parses anyway, with no extra decode on the data
// path: Produce topic names from walkProduce (topic ids, v13+, through the
// names the proxy presented for them), Fetch topics from the Fetch request
// decoded for translation. The rarer APIs are decoded for it: CreateTopics
// (validate-only requests excepted), JoinGroup ("classic", with protocol
// names), SyncGroup, Heartbeat, LeaveGroup, OffsetCommit (an OffsetCommit
// alone, as an assign() consumer sends it, names a group with no protocol),
// AddOffsetsToTxn and TxnOffsetCommit (the group is committed
// transactionally), ConsumerGroupHeartbeat ("consumer") and
// StreamsGroupHeartbeat ("streams"); and the JoinGroup,
// ConsumerGroupHeartbeat and StreamsGroupHeartbeat responses, which give out
// member ids. Transactional ids come from the transaction table (txn.go),
// open or not, and from the AddOffsetsToTxn and TxnOffsetCommit requests.
//
// A fetch session (KIP-227) names, in an incremental fetch, only the
// partitions that changed: each connection remembers the topics of its
// session, and an incremental fetch counts as fetching all of them.
//
// Bounded: at most maxUsageTopics topics, maxUsageGroups groups,
// maxUsageTxnIDs transactional ids and maxUsageGroupEntries member ids,
// instance ids or client ids per group — and, whatever the counts, at most
// usageMaxBytes in all, an upper bound of the usage's size in a sidecar's
// report, which must fit the control plane's message limit (256 KiB by
// default). What does not fit is counted in Dropped. Topics, groups and
// transactional ids unused for usageExpiry are forgotten, and so are member
// ids not seen for memberUsageExpiry; a switch forgets every member id (the
// member ids are those the current cluster issued).
//
// Cost on the data path: per topic of a Produce or Fetch request, one
// lookup in a map that is replaced, never written, and an atomic store when
// the topic's last-use time is a second old or more.

import (
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

const (
	// usageMaxBytes bounds the encoded size of what usage reports (each
	// entry is charged an upper bound of its protobuf encoding, the
	// usageBytes functions below). Half of the control plane's default
	// message limit: the rest of a status is a few KiB for most sidecars.
	usageMaxBytes = 128 << 10
	// The counts: with the byte budget they rarely bind, but bound the
	// memory of many short names.
	maxUsageTopics       = 3000
	maxUsageGroups       = 1000
	maxUsageTxnIDs       = 3000
	maxUsageGroupEntries = 1000
	// maxUsageProtocolNames bounds the classic protocol names of a group.
	maxUsageProtocolNames = 16
	// maxUsageTxnGroups bounds the groups remembered per transactional id.
	maxUsageTxnGroups = 64
	// maxUsageRefused bounds the distinct names counted in Dropped; past
	// it Dropped stops growing (it is then a lower bound).
	maxUsageRefused = 10000
	// maxSessionTopics bounds the topics a connection's fetch session is
	// remembered with.
	maxSessionTopics = 1000
	// usageResolution is the resolution of the last-use times: a topic's
	// time is stored again only when it is this old.
	usageResolution = int64(time.Second)
	// usageExpiry forgets topics, groups and transactional ids not used
	// for this long.
	usageExpiry = 24 * time.Hour
	// memberUsageExpiry forgets member ids not seen for this long; a live
	// member sends a request every few seconds (its heartbeats).
	memberUsageExpiry = 5 * time.Minute
	// usageSnapshotTTL is how long a snapshot is reused while nothing but
	// last-use times and open transactions changed.
	usageSnapshotTTL = time.Second
)

// Charges against usageMaxBytes: upper bounds of the protobuf encoding (a
// length-delimited field costs its tag, a length varint of up to 3 bytes
// for the sizes here, and its bytes; a Timestamp at most 24).
func topicUsageBytes(name string) int64 { return int64(len(name)) + 4 + 3*2 + 2*(2+24) + 4 }
func groupUsageBytes(name string) int64 {
	return int64(len(name) + 4 + 2 + len(protocolConsumer) + 2 + 4)
}
func stringUsageBytes(s string) int64 { return int64(len(s)) + 4 }
func txnUsageBytes(id string) int64   { return int64(len(id)) + 4 + 2 + 4 }

// Protocols of GroupUsage.
const (
	protocolClassic  = "classic"
	protocolConsumer = "consumer"
	protocolStreams  = "streams"
)

// Usage is what a proxy's clients were seen doing since it started, bounded
// (see Dropped). Every list is sorted.
type Usage struct {
	Topics       []TopicUsage
	Groups       []GroupUsage
	Transactions []TransactionalUsage
	// Dropped counts the topics, groups and transactional ids, and the
	// member, instance and client ids of groups, not recorded because a
	// bound was reached (a lower bound past 10,000).
	Dropped int64
}

// IsZero reports whether nothing was seen.
func (u Usage) IsZero() bool {
	return len(u.Topics) == 0 && len(u.Groups) == 0 && len(u.Transactions) == 0 && u.Dropped == 0
}

// TopicUsage is one topic's use.
type TopicUsage struct {
	Topic string
	// Produced, Fetched: a client produced to, fetched from it; the times
	// are of the last time, to a second.
	Produced, Fetched         bool
	LastProduced, LastFetched time.Time
	// Created: a client created it (CreateTopics).
	Created bool
}

// GroupUsage is one consumer group's use.
type GroupUsage struct {
	Group string
	// Protocol is "classic" (JoinGroup), "consumer" (KIP-848) or
	// "streams" (KIP-1071); empty when the clients only committed offsets
	// for it.
	Protocol string
	// ProtocolNames are the classic protocols the members offered
	// ("range", "cooperative-sticky", "stream", ...).
	ProtocolNames []string
	// MemberIDs are the members the current cluster issued to the clients.
	MemberIDs []string
	// InstanceIDs are the group.instance.ids of static members.
	InstanceIDs []string
	// ClientIDs are the client ids of the members and committers.
	ClientIDs []string
	// Transactional: offsets were committed inside transactions.
	Transactional bool
}

// TransactionalUsage is one transactional id's use.
type TransactionalUsage struct {
	ID string
	// Open: a transaction is open now.
	Open bool
	// Groups whose offsets its transactions committed.
	Groups []string
}

// usage records what the proxy's clients do. Safe for concurrent use;
// create it with newUsage.
//
// Lock order: snapMu before mu before refMu; txnTable.mu is not held with
// them (snapshots copy the table first).
type usage struct {
	clock clock // nil: real time
	seeds [3]maphash.Seed

	// topics is replaced, never written (copy on write under mu): the data
	// path reads it without a lock.
	topics atomic.Pointer[map[string]*topicUse]
	// version changes with everything a snapshot shows but the last-use
	// times and the transaction table.
	version atomic.Uint64

	mu        sync.Mutex
	bytes     int64 // charged against usageMaxBytes
	groups    map[string]*groupUse
	txnGroups map[string]*txnUse
	gen       uint64 // switches: a response to an older request issues no member
	swept     time.Time

	// refused holds hashes of the names refused (Dropped). Read only for
	// names usage does not hold: a topic past the bounds costs a read
	// lock per request.
	refMu   sync.RWMutex
	refused map[uint64]struct{}

	snapMu      sync.Mutex
	snap        Usage
	snapVersion uint64
	snapAt      time.Time
	snapOK      bool
}

// Kinds of refused names (a hash seed each).
const (
	refusedTopic = iota
	refusedGroup
	refusedOther // transactional ids, and ids within a group
)

type topicUse struct {
	name         string
	lastProduced atomic.Int64 // unix nanos; 0: never
	lastFetched  atomic.Int64
	created      atomic.Int64 // when it was last created; 0: never
}

type groupUse struct {
	protocol      string
	protocolNames []string
	members       map[string]time.Time // member id → last seen
	instances     map[string]struct{}
	clients       map[string]struct{}
	transactional bool
	seen          time.Time
}

// txnUse is what a transactional id was seen committing.
type txnUse struct {
	groups []string // in order seen
	seen   time.Time
}

func newUsage() *usage {
	u := &usage{groups: map[string]*groupUse{}, txnGroups: map[string]*txnUse{}}
	for i := range u.seeds {
		u.seeds[i] = maphash.MakeSeed()
	}
	empty := map[string]*topicUse{}
	u.topics.Store(&empty)
	return u
}

func (u *usage) now() time.Time {
	if u.clock != nil {
		return u.clock.Now()
	}
	return time.Now()
}

// topic returns the record of a topic, creating it (nil when it does not
// fit or name is empty). name may alias a request buffer: it is copied
// when kept.
func (u *usage) topic(name string) *topicUse {
	if t := (*u.topics.Load())[name]; t != nil {
		return t
	}
	if name == "" || u.wasRefused(refusedTopic, name) {
		return nil
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	old := *u.topics.Load()
	if t := old[name]; t != nil {
		return t
	}
	if len(old) >= maxUsageTopics || !u.chargeLocked(topicUsageBytes(name)) {
		u.refuseLocked(refusedTopic, name)
		return nil
	}
	t := &topicUse{name: strings.Clone(name)}
	m := make(map[string]*topicUse, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[t.name] = t
	u.topics.Store(&m)
	u.version.Add(1)
	return t
}

// touch records a use at now (unix nanos) in at, unless the one recorded
// is less than usageResolution old.
func (u *usage) touch(at *atomic.Int64, now int64) {
	old := at.Load()
	if now-old < usageResolution {
		return
	}
	at.Store(now)
	if old == 0 {
		u.version.Add(1) // a flag the snapshot shows changed
	}
}

func (u *usage) produced(name string, now int64) {
	if t := u.topic(name); t != nil {
		u.touch(&t.lastProduced, now)
	}
}

func (u *usage) created(name string, now int64) {
	if t := u.topic(name); t != nil {
		u.touch(&t.created, now)
	}
}

func (u *usage) chargeLocked(n int64) bool {
	if u.bytes+n > usageMaxBytes {
		return false
	}
	u.bytes += n
	return true
}

func (u *usage) hash(kind int, name string) uint64 { return maphash.String(u.seeds[kind], name) }

func (u *usage) wasRefused(kind int, name string) bool {
	h := u.hash(kind, name)
	u.refMu.RLock()
	defer u.refMu.RUnlock()
	_, ok := u.refused[h]
	return ok
}

// refuseLocked counts a name that did not fit, once.
func (u *usage) refuseLocked(kind int, name string) {
	h := u.hash(kind, name)
	u.refMu.Lock()
	defer u.refMu.Unlock()
	if _, ok := u.refused[h]; ok || len(u.refused) >= maxUsageRefused {
		return
	}
	if u.refused == nil {
		u.refused = map[uint64]struct{}{}
	}
	u.refused[h] = struct{}{}
	u.version.Add(1)
}

// groupLocked returns the record of a group, creating it (nil when it does
// not fit).
func (u *usage) groupLocked(name string, now time.Time) *groupUse {
	g := u.groups[name]
	if g == nil {
		if name == "" {
			return nil
		}
		if len(u.groups) >= maxUsageGroups || !u.chargeLocked(groupUsageBytes(name)) {
			u.refuseLocked(refusedGroup, name)
			return nil
		}
		g = &groupUse{members: map[string]time.Time{}, instances: map[string]struct{}{}, clients: map[string]struct{}{}}
		u.groups[name] = g
		u.version.Add(1)
	}
	g.seen = now
	return g
}

// addLocked adds s to one of group's sets, within the bounds.
func (u *usage) addLocked(group string, set map[string]struct{}, s string) {
	if s == "" {
		return
	}
	if _, ok := set[s]; ok {
		return
	}
	if len(set) >= maxUsageGroupEntries || !u.chargeLocked(stringUsageBytes(s)) {
		u.refuseLocked(refusedOther, group+"\x00"+s)
		return
	}
	set[s] = struct{}{}
	u.version.Add(1)
}

// memberLocked notes a request of a group member: its client id, its
// instance id, and — when the member id is one the current cluster issued
// — that the member is still there.
func (u *usage) memberLocked(g *groupUse, group, member string, instance *string, client string, now time.Time) {
	if instance != nil {
		u.addLocked(group, g.instances, *instance)
	}
	u.addLocked(group, g.clients, client)
	if _, ok := g.members[member]; ok {
		g.members[member] = now
	}
}

// issued records a member id the current cluster gave out, unless a switch
// came between the request and the response (gen).
func (u *usage) issued(gen uint64, group, member string) {
	if member == "" {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if gen != u.gen {
		return
	}
	now := u.now()
	g := u.groupLocked(group, now)
	if g == nil {
		return
	}
	if _, ok := g.members[member]; !ok {
		if len(g.members) >= maxUsageGroupEntries || !u.chargeLocked(stringUsageBytes(member)) {
			u.refuseLocked(refusedOther, group+"\x00"+member)
			return
		}
		u.version.Add(1)
	}
	g.members[member] = now
}

// forgetMemberLocked forgets a member id that left its group.
func (u *usage) forgetMemberLocked(g *groupUse, member string) {
	if _, ok := g.members[member]; ok {
		delete(g.members, member)
		u.bytes -= stringUsageBytes(member)
		u.version.Add(1)
	}
}

// switched forgets every member id: they name members of the cluster
// before. Called by a switch.
func (u *usage) switched() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.gen++
	for _, g := range u.groups {
		for m := range g.members {
			u.bytes -= stringUsageBytes(m)
		}
		clear(g.members)
	}
	u.version.Add(1)
}

// txnCommitLocked notes that transactional id txn commits group's offsets.
func (u *usage) txnCommitLocked(txn, group string, now time.Time) {
	g := u.groupLocked(group, now)
	if g == nil || txn == "" {
		return
	}
	if !g.transactional {
		g.transactional = true
		u.version.Add(1)
	}
	t := u.txnGroups[txn]
	if t != nil {
		t.seen = now
		if slices.Contains(t.groups, group) {
			return
		}
	}
	charge := stringUsageBytes(group)
	if t == nil {
		charge += txnUsageBytes(txn)
	}
	if (t == nil && len(u.txnGroups) >= maxUsageTxnIDs) || (t != nil && len(t.groups) >= maxUsageTxnGroups) || !u.chargeLocked(charge) {
		u.refuseLocked(refusedOther, txn+"\x00"+group)
		return
	}
	if t == nil {
		t = &txnUse{seen: now}
		u.txnGroups[txn] = t
	}
	t.groups = append(t.groups, group)
	u.version.Add(1)
}

// usageKey reports whether requests of the key are decoded for usage.
func usageKey(key int16) bool {
	switch key {
	case keyCreateTopics, keyJoinGroup, keySyncGroup, keyHeartbeat, keyLeaveGroup, keyOffsetCommit,
		keyAddOffsetsToTxn, keyTxnOffsetCommit, keyConsumerGroupHeartbeat, keyStreamsGroupHeartbeat:
		return true
	}
	return false
}

// noteUsage records what a request of one of the usageKey APIs tells, and
// returns it decoded (nil when it is not one or does not decode), with —
// for a request whose response issues a member id — what to learn from the
// response.
func (p *Proxy) noteUsage(hdr requestHeader, body []byte) (kmsg.Request, *memberNote) {
	if !hdr.Known || !usageKey(hdr.Key) {
		return nil, nil
	}
	req := kmsg.RequestForKey(hdr.Key)
	if req == nil || decodeRequest(req, hdr, body) != nil {
		return nil, nil
	}
	u := p.usage
	client := ""
	if hdr.ClientID != nil {
		client = *hdr.ClientID
	}
	now := u.now()
	if r, ok := req.(*kmsg.CreateTopicsRequest); ok {
		if !r.ValidateOnly {
			for _, t := range r.Topics {
				u.created(t.Topic, now.UnixNano())
			}
		}
		return req, nil
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	learn := func(group, member string) *memberNote {
		return &memberNote{usage: true, usageGen: u.gen, group: group, member: member, client: client}
	}
	member := func(group, protocol, memberID string, instance *string) *groupUse {
		g := u.groupLocked(group, now)
		if g == nil {
			return nil
		}
		if protocol != "" && g.protocol != protocol {
			g.protocol = protocol
			u.version.Add(1)
		}
		u.memberLocked(g, group, memberID, instance, client, now)
		return g
	}
	switch r := req.(type) {
	case *kmsg.JoinGroupRequest:
		g := member(r.Group, protocolClassic, r.MemberID, r.InstanceID)
		if g == nil {
			return req, nil
		}
		for _, proto := range r.Protocols {
			if proto.Name != "" && !slices.Contains(g.protocolNames, proto.Name) &&
				len(g.protocolNames) < maxUsageProtocolNames && u.chargeLocked(stringUsageBytes(proto.Name)) {
				g.protocolNames = append(g.protocolNames, proto.Name)
				u.version.Add(1)
			}
		}
		return req, learn(r.Group, "")
	case *kmsg.SyncGroupRequest:
		member(r.Group, "", r.MemberID, r.InstanceID)
	case *kmsg.HeartbeatRequest:
		member(r.Group, "", r.MemberID, r.InstanceID)
	case *kmsg.OffsetCommitRequest:
		member(r.Group, "", r.MemberID, r.InstanceID)
	case *kmsg.LeaveGroupRequest:
		if g := u.groups[r.Group]; g != nil {
			u.forgetMemberLocked(g, r.MemberID)
			for _, m := range r.Members {
				u.forgetMemberLocked(g, m.MemberID)
			}
		}
	case *kmsg.AddOffsetsToTxnRequest:
		u.txnCommitLocked(r.TransactionalID, r.Group, now)
	case *kmsg.TxnOffsetCommitRequest:
		u.txnCommitLocked(r.TransactionalID, r.Group, now)
		if g := u.groups[r.Group]; g != nil {
			if _, ok := g.members[r.MemberID]; ok {
				g.members[r.MemberID] = now
			}
		}
	case *kmsg.ConsumerGroupHeartbeatRequest:
		return req, u.heartbeatLocked(member(r.Group, protocolConsumer, r.MemberID, r.InstanceID), r.MemberID, r.MemberEpoch, learn(r.Group, r.MemberID))
	case *kmsg.StreamsGroupHeartbeatRequest:
		return req, u.heartbeatLocked(member(r.Group, protocolStreams, r.MemberID, r.InstanceID), r.MemberID, r.MemberEpoch, learn(r.Group, r.MemberID))
	}
	return req, nil
}

// heartbeatLocked handles a KIP-848 or KIP-1071 heartbeat of a member of g:
// a leave (epoch below 0) forgets the member id; any other returns note,
// to learn the member id from the response.
func (u *usage) heartbeatLocked(g *groupUse, member string, epoch int32, note *memberNote) *memberNote {
	if g == nil {
		return nil
	}
	if epoch < 0 {
		u.forgetMemberLocked(g, member)
		return nil
	}
	return note
}

// learnUsageMember records the member id a JoinGroup, ConsumerGroupHeartbeat
// or StreamsGroupHeartbeat response issued.
func (p *Proxy) learnUsageMember(n *memberNote, resp kmsg.Response) {
	switch r := resp.(type) {
	case *kmsg.JoinGroupResponse:
		if r.ErrorCode == 0 {
			p.usage.issued(n.usageGen, n.group, r.MemberID)
		}
	case *kmsg.ConsumerGroupHeartbeatResponse:
		member := n.member
		if r.MemberID != nil {
			member = *r.MemberID
		}
		if r.ErrorCode == 0 && r.MemberEpoch > 0 {
			p.usage.issued(n.usageGen, n.group, member)
		}
	case *kmsg.StreamsGroupHeartbeatResponse:
		member := n.member
		if r.MemberID != "" {
			member = r.MemberID
		}
		if r.ErrorCode == 0 && r.MemberEpoch > 0 {
			p.usage.issued(n.usageGen, n.group, member)
		}
	}
}

// noteFetch records the topics a client fetches. Called by the
// connection's reader goroutine, which owns c.fetchTopics.
func (p *Proxy) noteFetch(c *clientConn, r *kmsg.FetchRequest) {
	u := p.usage
	now := u.now().UnixNano()
	// Sessions exist from v7: epoch 0 opens one (a full fetch), -1 asks
	// for none (every fetch is full), above 0 is incremental.
	session := r.Version >= 7 && r.SessionEpoch >= 0
	incremental := session && r.SessionEpoch > 0
	if !incremental {
		c.fetchTopics = c.fetchTopics[:0]
	}
	for _, t := range r.Topics {
		name := t.Topic
		if r.Version >= 13 {
			n, ok := p.topicNames.Load(t.TopicID)
			if !ok {
				continue
			}
			name = n.(string)
		}
		tu := u.topic(name)
		if tu == nil {
			continue
		}
		u.touch(&tu.lastFetched, now)
		if session && len(c.fetchTopics) < maxSessionTopics && (!incremental || !slices.Contains(c.fetchTopics, tu)) {
			c.fetchTopics = append(c.fetchTopics, tu)
		}
	}
	if incremental {
		for _, tu := range c.fetchTopics {
			u.touch(&tu.lastFetched, now)
		}
	}
}

// snapshot returns what was seen, with the transactional ids of txns. The
// slices are shared with other snapshots and must not be modified.
func (u *usage) snapshot(txns *txnTable) Usage {
	u.snapMu.Lock()
	defer u.snapMu.Unlock()
	now := u.now()
	v := u.version.Load()
	if u.snapOK && v == u.snapVersion && !now.Before(u.snapAt) && now.Sub(u.snapAt) < usageSnapshotTTL {
		return u.snap
	}
	u.snap, u.snapVersion, u.snapAt, u.snapOK = u.build(txns, now), v, now, true
	return u.snap
}

func (u *usage) build(txns *txnTable, now time.Time) Usage {
	// The transaction table's ids, copied first: its lock is not held
	// with u.mu.
	open := map[string]bool{}
	txns.mu.Lock()
	for id, e := range txns.byID {
		open[id] = e.open
	}
	txns.mu.Unlock()

	u.mu.Lock()
	defer u.mu.Unlock()
	if now.Sub(u.swept) > time.Minute {
		u.swept = now
		u.sweepLocked(now)
	}
	var out Usage
	for _, t := range *u.topics.Load() {
		tu := TopicUsage{Topic: t.name, Created: t.created.Load() != 0}
		if at := t.lastProduced.Load(); at != 0 {
			tu.Produced, tu.LastProduced = true, time.Unix(0, at)
		}
		if at := t.lastFetched.Load(); at != 0 {
			tu.Fetched, tu.LastFetched = true, time.Unix(0, at)
		}
		out.Topics = append(out.Topics, tu)
	}
	slices.SortFunc(out.Topics, func(a, b TopicUsage) int { return strings.Compare(a.Topic, b.Topic) })
	for name, g := range u.groups {
		gu := GroupUsage{Group: name, Protocol: g.protocol, Transactional: g.transactional,
			ProtocolNames: sortedCopy(g.protocolNames), InstanceIDs: sortedKeys(g.instances), ClientIDs: sortedKeys(g.clients)}
		for m := range g.members {
			gu.MemberIDs = append(gu.MemberIDs, m)
		}
		slices.Sort(gu.MemberIDs)
		out.Groups = append(out.Groups, gu)
	}
	slices.SortFunc(out.Groups, func(a, b GroupUsage) int { return strings.Compare(a.Group, b.Group) })

	// Transactional ids: those of the transaction table and those seen
	// committing offsets. The former, when not also the latter, are
	// charged here, in order, against what the rest left.
	all := make([]string, 0, len(open)+len(u.txnGroups))
	for id := range open {
		all = append(all, id)
	}
	for id := range u.txnGroups {
		if _, ok := open[id]; !ok {
			all = append(all, id)
		}
	}
	slices.Sort(all)
	left := usageMaxBytes - u.bytes
	for _, id := range all {
		t := u.txnGroups[id]
		if t == nil {
			if len(out.Transactions) >= maxUsageTxnIDs || txnUsageBytes(id) > left {
				out.Dropped++
				continue
			}
			left -= txnUsageBytes(id)
			out.Transactions = append(out.Transactions, TransactionalUsage{ID: id, Open: open[id]})
			continue
		}
		out.Transactions = append(out.Transactions, TransactionalUsage{ID: id, Open: open[id], Groups: sortedCopy(t.groups)})
	}
	u.refMu.RLock()
	out.Dropped += int64(len(u.refused))
	u.refMu.RUnlock()
	return out
}

// sweepLocked forgets topics, groups and transactional ids unused for
// usageExpiry, and member ids not seen for memberUsageExpiry. Names refused
// before are tried again once something was forgotten.
func (u *usage) sweepLocked(now time.Time) {
	before := u.bytes
	defer func() {
		if u.bytes < before {
			u.refMu.Lock()
			clear(u.refused)
			u.refMu.Unlock()
		}
	}()
	old := *u.topics.Load()
	var keep map[string]*topicUse
	for name, t := range old {
		last := max(t.lastProduced.Load(), t.lastFetched.Load(), t.created.Load())
		if last == 0 || now.Sub(time.Unix(0, last)) <= usageExpiry { // 0: being recorded now
			continue
		}
		if keep == nil {
			keep = make(map[string]*topicUse, len(old))
			for k, v := range old {
				keep[k] = v
			}
		}
		delete(keep, name)
		u.bytes -= topicUsageBytes(name)
	}
	if keep != nil {
		u.topics.Store(&keep)
		u.version.Add(1)
	}
	for id, t := range u.txnGroups {
		if now.Sub(t.seen) > usageExpiry {
			u.bytes -= txnUsageBytes(id)
			for _, g := range t.groups {
				u.bytes -= stringUsageBytes(g)
			}
			delete(u.txnGroups, id)
			u.version.Add(1)
		}
	}
	for name, g := range u.groups {
		if now.Sub(g.seen) > usageExpiry {
			u.bytes -= groupUsageBytes(name)
			for _, set := range []map[string]struct{}{g.instances, g.clients} {
				for s := range set {
					u.bytes -= stringUsageBytes(s)
				}
			}
			for _, s := range g.protocolNames {
				u.bytes -= stringUsageBytes(s)
			}
			for m := range g.members {
				u.bytes -= stringUsageBytes(m)
			}
			delete(u.groups, name)
			u.version.Add(1)
			continue
		}
		for m, at := range g.members {
			if now.Sub(at) > memberUsageExpiry {
				u.forgetMemberLocked(g, m)
			}
		}
	}
}

func sortedKeys(set map[string]struct{}) []string {
	if len(set) == 0 {
		return nil
	}
	out := make([]string, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

func sortedCopy(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}
