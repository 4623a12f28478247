package proxy

// Consumer-group members across a switch, for every group API.
//
// Judged only after the first switch (before it nothing here reads a body;
// usage.go decodes the group APIs for itself and hands the decoded request
// over), at every version kmsg knows: Heartbeat, JoinGroup, SyncGroup,
// LeaveGroup, OffsetCommit, TxnOffsetCommit (v3+: the versions that name a
// member), ConsumerGroupHeartbeat, DeleteRecords.

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const (
	// maxTrackedMembers bounds the members the proxy remembers as issued
	// by the current cluster; past it the least recently used is
	// forgotten (if it is still alive, its next request is taken for a
	// stale one's and it rejoins once).
	maxTrackedMembers = 10000
	// maxMemberEpochs bounds the KIP-848 epochs remembered per member;
	// the coordinator accepts only the newest ones anyway.
	maxMemberEpochs = 16
	// staleMembershipWindow is how long a stale membership the proxy has
	// seen counts as outstanding (for DeleteRecords) without a request
	// from it: a live member sends one every heartbeat interval, seconds.
	staleMembershipWindow = time.Minute
)

// groupMembers tells, after a switch, the consumer-group members that the
// current cluster issued from those still carrying a membership of the
// cluster before — stale members — and decides what the proxy answers a
// stale member's request with instead of forwarding it.
//
// A stale member carries its membership and its fetch positions, both
// meaningful on the old cluster only. Forwarded, its first request on the
// new cluster is refused by the coordinator there in a way some clients
// answer by rejoining *with* their positions: franz-go (and any
// cooperative client) takes UNKNOWN_MEMBER_ID on an OffsetCommit or a
// JoinGroup as "rejoin", keeps the partitions it owned and goes on
// fetching them at offsets of the old cluster, which name other records
// on the new one. So the proxy answers every group API of a stale member
// itself, with the error that makes each client drop its partitions and
// positions (onPartitionsLost), rejoin, and resume from the committed
// offsets, which a cutover has translated onto the new cluster:
//
//   - Heartbeat, SyncGroup: UNKNOWN_MEMBER_ID — every client resets.
//   - OffsetCommit (classic member): REBALANCE_IN_PROGRESS — the commit
//     fails and nothing rejoins on it (franz-go) or the client rejoins
//     without resetting (Java); its next Heartbeat or JoinGroup is stale
//     too and resets it.
//   - JoinGroup with a member id: REBALANCE_IN_PROGRESS the first time
//     (franz-go takes it as a failed session: partitions lost; Java
//     retries at once), UNKNOWN_MEMBER_ID after that, or at once when the
//     member was already told UNKNOWN_MEMBER_ID (it has dropped its
//     positions; the client then joins afresh without a member id). To
//     librdkafka ILLEGAL_GENERATION the first time instead: it hands a
//     REBALANCE_IN_PROGRESS JoinGroup to the application as a consumer
//     error, and in a cooperative group rejoins keeping its assignment
//     after either REBALANCE_IN_PROGRESS or UNKNOWN_MEMBER_ID, while
//     ILLEGAL_GENERATION is silent and revokes the assignment as lost
//     (rdkafka_cgrp.c, rd_kafka_cgrp_handle_JoinGroup). The Java client
//     takes ILLEGAL_GENERATION on a JoinGroup as fatal.
//   - ConsumerGroupHeartbeat (KIP-848) with an epoch the current cluster
//     did not issue to that member, and an OffsetCommit or
//     TxnOffsetCommit in that form: UNKNOWN_MEMBER_ID, never
//     STALE_MEMBER_EPOCH (the Java client retries that with its newest
//     epoch and the old offsets).
//   - TxnOffsetCommit: UNKNOWN_MEMBER_ID — the producer aborts the
//     transaction instead of committing old offsets on the new cluster.
//   - LeaveGroup, and a KIP-848 leave: success — the new cluster never
//     knew the member, and a static member's instance id must not reach
//     its group there.
//   - DeleteRecords, while a stale membership of this proxy's clients is
//     outstanding: NOT_LEADER_OR_FOLLOWER on every partition (Kafka
//     Streams purges repartition topics below offsets its tasks reached,
//     which before the rejoin are offsets of the old cluster).
//
// A member the current cluster issued is learnt from the responses: the
// member id of a JoinGroup (success, or MEMBER_ID_REQUIRED) and the member
// id and epoch of a ConsumerGroupHeartbeat. KIP-848 member ids are made by
// the client and survive a switch, so there a member is judged by its id
// and epoch together.
//
// Safe for concurrent use. The zero value is ready; reset starts judging.
type groupMembers struct {
	switched atomic.Bool // a switch happened: members must be known
	// used is set by the first membership request (JoinGroup, Heartbeat,
	// SyncGroup, ConsumerGroupHeartbeat), read from its key only.
	used  atomic.Bool
	clock clock // nil: real time

	mu sync.Mutex
	// gen counts switches: a response to a request sent before the last
	// one issued nothing on the current cluster.
	gen uint64
	// issued: members the current cluster gave out since the last switch.
	issued map[memberKey]*issuedMember
	// stale: members judged stale since the last switch.
	stale map[memberKey]*staleMember
	// unsettled: stale memberships not yet replaced by one the current
	// cluster issued, by group and client id, with when one was last seen
	// (the zero key stands for memberships the proxy saw before the switch
	// and has not judged yet).
	unsettled map[clientKey]time.Time
}

type memberKey struct{ group, member string }

type clientKey struct{ group, client string }

// issuedMember is a member the current cluster issued.
type issuedMember struct {
	classic bool    // a JoinGroup gave it out
	epochs  []int32 // KIP-848 epochs, oldest first
	used    time.Time
}

// staleMember is what the proxy told a stale member.
type staleMember struct {
	consumer    bool // it sent a ConsumerGroupHeartbeat: a KIP-848 member
	toldGone    bool // answered UNKNOWN_MEMBER_ID: it dropped its positions
	joinRefused bool // a JoinGroup was answered REBALANCE_IN_PROGRESS
}

func (g *groupMembers) now() time.Time {
	if g.clock != nil {
		return g.clock.Now()
	}
	return time.Now()
}

// reset forgets every member: called by a switch.
func (g *groupMembers) reset() {
	g.mu.Lock()
	g.gen++
	g.issued = map[memberKey]*issuedMember{}
	g.stale = map[memberKey]*staleMember{}
	g.unsettled = map[clientKey]time.Time{}
	if g.used.Load() {
		g.unsettled[clientKey{}] = g.now()
	}
	g.mu.Unlock()
	g.switched.Store(true)
}

// currentLocked reports whether the current cluster issued member in
// group: any classic member id it gave out, or — when epoch is not nil —
// a KIP-848 member with that epoch. It marks the member used.
func (g *groupMembers) currentLocked(group, member string, epoch *int32) bool {
	m := g.issued[memberKey{group, member}]
	if m == nil {
		return false
	}
	ok := m.classic
	if epoch != nil {
		for _, e := range m.epochs {
			ok = ok || e == *epoch
		}
	}
	if ok {
		m.used = g.now()
	}
	return ok
}

// issue records a member the current cluster gave out (an epoch when
// epoch > 0, else a classic member id), unless gen says a switch came
// between the request and its response. A membership issued to client
// settles the client's stale membership in group.
func (g *groupMembers) issue(gen uint64, group, member string, epoch int32, client string, settles bool) {
	if member == "" {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if gen != g.gen {
		return
	}
	k := memberKey{group, member}
	m := g.issued[k]
	if m == nil {
		if len(g.issued) >= maxTrackedMembers {
			g.evictLocked()
		}
		m = &issuedMember{}
		g.issued[k] = m
	}
	m.used = g.now()
	if epoch > 0 {
		if len(m.epochs) == maxMemberEpochs {
			m.epochs = append(m.epochs[:0], m.epochs[1:]...)
		}
		m.epochs = append(m.epochs, epoch)
	} else {
		m.classic = true
	}
	if settles {
		delete(g.unsettled, clientKey{group, client})
		delete(g.unsettled, clientKey{})
	}
}

// evictLocked forgets the least recently used issued member.
func (g *groupMembers) evictLocked() {
	var oldest memberKey
	var at time.Time
	first := true
	for k, m := range g.issued {
		if first || m.used.Before(at) {
			oldest, at, first = k, m.used, false
		}
	}
	delete(g.issued, oldest)
}

// staleLocked returns the record of a stale member, creating it, and
// notes the client's stale membership as outstanding.
func (g *groupMembers) staleLocked(group, member, client string) *staleMember {
	k := memberKey{group, member}
	s := g.stale[k]
	if s == nil {
		if len(g.stale) >= maxTrackedMembers {
			for k := range g.stale { // any: it only loses its escalation
				delete(g.stale, k)
				break
			}
		}
		s = &staleMember{}
		g.stale[k] = s
	}
	if len(g.unsettled) >= maxTrackedMembers && !g.unsettledLocked() {
		clear(g.unsettled) // all expired
	}
	if len(g.unsettled) < maxTrackedMembers {
		g.unsettled[clientKey{group, client}] = g.now()
	}
	return s
}

// left settles a stale membership that left its group.
func (g *groupMembers) left(group, client string) {
	delete(g.unsettled, clientKey{group, client})
}

// unsettledLocked reports whether a stale membership is outstanding.
func (g *groupMembers) unsettledLocked() bool {
	now := g.now()
	for k, at := range g.unsettled {
		if now.Sub(at) <= staleMembershipWindow {
			return true
		}
		delete(g.unsettled, k)
	}
	return false
}

// memberNote asks the writer to learn, from a JoinGroup,
// ConsumerGroupHeartbeat or StreamsGroupHeartbeat response, the member the
// current cluster issued: for groupMembers (judged, after a switch) and for
// usage.
type memberNote struct {
	gen    uint64
	group  string
	member string // ConsumerGroupHeartbeat: the member id it sent
	client string
	// judged: groupMembers learns the member (gen is its generation).
	judged bool
	// usage: usage learns the member (usageGen is its generation).
	usage    bool
	usageGen uint64
}

// withUsage adds usage's note u to n (either may be nil).
func (n *memberNote) withUsage(u *memberNote) *memberNote {
	if n == nil {
		return u
	}
	if u != nil {
		n.usage, n.usageGen = true, u.usageGen
	}
	return n
}

// Answers to a stale member, by kind (the answer label of
// switchyard_proxy_stale_member_requests_total).
const (
	answerRebalance = "REBALANCE_IN_PROGRESS"
	answerIllegal   = "ILLEGAL_GENERATION"
	answerUnknown   = "UNKNOWN_MEMBER_ID"
	answerLeft      = "success"
	answerNotLeader = "NOT_LEADER_OR_FOLLOWER"
)

// checkStale answers a request of a stale member (see groupMembers) and
// returns the response frame; nil means forward the request, with note
// (when not nil) to learn from its response. Before the first switch it
// reads nothing but the key. decoded is the request if the caller decoded
// it already, else nil.
func (p *Proxy) checkStale(c *clientConn, hdr requestHeader, body []byte, decoded kmsg.Request) (local []byte, note *memberNote) {
	g := &p.members
	switch hdr.Key {
	case keyConsumerGroupHeartbeat:
		c.sentConsumerHeartbeat = true
		fallthrough
	case keyJoinGroup, keyHeartbeat, keySyncGroup:
		if !g.used.Load() {
			g.used.Store(true)
		}
	case keyLeaveGroup, keyOffsetCommit, keyTxnOffsetCommit, keyDeleteRecords:
	default:
		return nil, nil
	}
	if !g.switched.Load() {
		return nil, nil
	}
	req := decoded
	if req == nil {
		req = kmsg.RequestForKey(hdr.Key)
		if err := decodeRequest(req, hdr, body); err != nil {
			return nil, nil // the broker answers what the proxy cannot read
		}
	}
	client := ""
	if hdr.ClientID != nil {
		client = *hdr.ClientID
	}
	answer, learn := g.judge(req, sender{id: client, consumer: c.sentConsumerHeartbeat, librdkafka: c.librdkafka})
	if answer == "" {
		if learn != nil {
			return nil, &memberNote{judged: true, gen: learn.gen, group: learn.group, member: learn.member, client: client}
		}
		return nil, nil
	}
	var frame []byte
	var err error
	switch answer {
	case answerNotLeader:
		frame = notLeaderDeleteRecords(hdr, req.(*kmsg.DeleteRecordsRequest))
	case answerLeft:
		frame = leftResponse(hdr, req)
	default:
		code := kerr.UnknownMemberID.Code
		switch answer {
		case answerRebalance:
			code = kerr.RebalanceInProgress.Code
		case answerIllegal:
			code = kerr.IllegalGeneration.Code
		}
		if frame, err = answerWith(hdr, body, code, false); err != nil {
			return nil, nil
		}
	}
	p.m.staleRequests.WithLabelValues(apiName(hdr.Key), answer).Inc()
	p.m.staleMembers.Inc()
	return frame, nil
}

// judged is a request judge forwards with a response to learn from.
type judged struct {
	gen           uint64
	group, member string
}

// sender is who sent a request: its client id, and what its connection
// told of it.
type sender struct {
	id string
	// consumer: the connection sent ConsumerGroupHeartbeats, so an
	// OffsetCommit on it is a KIP-848 member's.
	consumer bool
	// librdkafka: the client is librdkafka or built on it.
	librdkafka bool
}

// judge decides what a request is answered with ("" : forwarded; then
// learn, when not nil, says what to learn from its response).
func (g *groupMembers) judge(req kmsg.Request, from sender) (answer string, learn *judged) {
	client := from.id
	g.mu.Lock()
	defer g.mu.Unlock()
	stale := func(group, member string, epoch *int32) *staleMember {
		if member == "" || g.currentLocked(group, member, epoch) {
			return nil
		}
		return g.staleLocked(group, member, client)
	}
	switch r := req.(type) {
	case *kmsg.HeartbeatRequest:
		if s := stale(r.Group, r.MemberID, nil); s != nil {
			s.toldGone = true
			return answerUnknown, nil
		}
	case *kmsg.SyncGroupRequest:
		if s := stale(r.Group, r.MemberID, nil); s != nil {
			s.toldGone = true
			return answerUnknown, nil
		}
	case *kmsg.JoinGroupRequest:
		if s := stale(r.Group, r.MemberID, nil); s != nil {
			if s.toldGone || s.joinRefused {
				s.toldGone = true
				return answerUnknown, nil
			}
			s.joinRefused = true
			if from.librdkafka {
				return answerIllegal, nil
			}
			return answerRebalance, nil
		}
		return "", &judged{gen: g.gen, group: r.Group}
	case *kmsg.OffsetCommitRequest:
		if s := stale(r.Group, r.MemberID, &r.Generation); s != nil {
			if s.consumer || from.consumer || g.issued[memberKey{r.Group, r.MemberID}] != nil {
				return answerUnknown, nil
			}
			return answerRebalance, nil
		}
	case *kmsg.TxnOffsetCommitRequest:
		if s := stale(r.Group, r.MemberID, &r.Generation); s != nil {
			return answerUnknown, nil
		}
	case *kmsg.ConsumerGroupHeartbeatRequest:
		switch {
		case r.MemberEpoch == 0: // joining
			return "", &judged{gen: g.gen, group: r.Group, member: r.MemberID}
		case r.MemberEpoch < 0: // leaving
			if r.MemberID != "" && g.issued[memberKey{r.Group, r.MemberID}] == nil {
				s := g.staleLocked(r.Group, r.MemberID, client)
				s.consumer, s.toldGone = true, true
				g.left(r.Group, client)
				return answerLeft, nil
			}
		default:
			if s := stale(r.Group, r.MemberID, &r.MemberEpoch); s != nil {
				s.consumer, s.toldGone = true, true
				return answerUnknown, nil
			}
		}
		return "", &judged{gen: g.gen, group: r.Group, member: r.MemberID}
	case *kmsg.LeaveGroupRequest:
		members := []string{r.MemberID}
		if r.Version >= 3 {
			members = members[:0]
			for _, m := range r.Members {
				members = append(members, m.MemberID)
			}
		}
		for _, m := range members {
			if m == "" || g.currentLocked(r.Group, m, nil) {
				return "", nil // the cluster's to answer
			}
		}
		if len(members) == 0 {
			return "", nil
		}
		for _, m := range members {
			g.staleLocked(r.Group, m, client).toldGone = true
		}
		g.left(r.Group, client)
		return answerLeft, nil
	case *kmsg.DeleteRecordsRequest:
		if g.unsettledLocked() {
			return answerNotLeader, nil
		}
	}
	return "", nil
}

// learnMember learns, from the response to a JoinGroup,
// ConsumerGroupHeartbeat or StreamsGroupHeartbeat, the member the current
// cluster issued: for groupMembers after a switch (n.judged), and for usage.
func (p *Proxy) learnMember(n *memberNote, hdr requestHeader, frame []byte) {
	hl, err := responseHeaderLen(hdr.Key, hdr.Version, frame)
	if err != nil {
		return
	}
	resp := kmsg.ResponseForKey(hdr.Key)
	if resp == nil {
		return
	}
	if err := decodeResponse(resp, hdr.Key, hdr.Version, frame[hl:]); err != nil {
		return
	}
	if n.usage {
		p.learnUsageMember(n, resp)
	}
	if !n.judged {
		return
	}
	switch r := resp.(type) {
	case *kmsg.JoinGroupResponse:
		// MEMBER_ID_REQUIRED (KIP-394) gives out the id to join with.
		if r.ErrorCode == 0 || r.ErrorCode == kerr.MemberIDRequired.Code {
			p.members.issue(n.gen, n.group, r.MemberID, 0, n.client, r.ErrorCode == 0)
		}
	case *kmsg.ConsumerGroupHeartbeatResponse:
		member := n.member
		if r.MemberID != nil {
			member = *r.MemberID
		}
		if r.ErrorCode == 0 && r.MemberEpoch > 0 {
			p.members.issue(n.gen, n.group, member, r.MemberEpoch, n.client, true)
		}
	}
}

// noteSoftware records, from an ApiVersions request (v3+: its
// ClientSoftwareName), whether the client is librdkafka or a library
// built on it (confluent-kafka-python, -go, -dotnet name themselves
// confluent-kafka-*). Owned by the reader goroutine.
func (c *clientConn) noteSoftware(hdr requestHeader, body []byte) {
	if hdr.Version < 3 || !hdr.Known {
		return
	}
	b := kbin.Reader{Src: body}
	name := b.UnsafeCompactString() // compared here, not kept
	if b.Ok() {
		c.librdkafka = name == "librdkafka" || strings.HasPrefix(name, "confluent-kafka")
	}
}

// leftResponse answers a stale member's LeaveGroup, or its
// ConsumerGroupHeartbeat leaving the group, as the coordinator answers a
// member that left.
func leftResponse(hdr requestHeader, req kmsg.Request) []byte {
	var resp kmsg.Response
	switch r := req.(type) {
	case *kmsg.LeaveGroupRequest:
		lr := kmsg.NewPtrLeaveGroupResponse()
		for _, m := range r.Members {
			rm := kmsg.NewLeaveGroupResponseMember()
			rm.MemberID, rm.InstanceID = m.MemberID, m.InstanceID
			lr.Members = append(lr.Members, rm)
		}
		resp = lr
	case *kmsg.ConsumerGroupHeartbeatRequest:
		cr := kmsg.NewPtrConsumerGroupHeartbeatResponse()
		cr.MemberID, cr.MemberEpoch = kmsg.StringPtr(r.MemberID), r.MemberEpoch
		resp = cr
	}
	resp.SetVersion(hdr.Version)
	return responseFrame(hdr.Key, hdr.Version, hdr.CorrID, resp.AppendTo(nil))
}

// notLeaderDeleteRecords answers a DeleteRecords with NOT_LEADER_OR_FOLLOWER
// on every partition: the admin client looks the leaders up and retries.
func notLeaderDeleteRecords(hdr requestHeader, r *kmsg.DeleteRecordsRequest) []byte {
	resp := kmsg.NewPtrDeleteRecordsResponse()
	resp.SetVersion(hdr.Version)
	for _, t := range r.Topics {
		rt := kmsg.NewDeleteRecordsResponseTopic()
		rt.Topic = t.Topic
		for _, part := range t.Partitions {
			rp := kmsg.NewDeleteRecordsResponseTopicPartition()
			rp.Partition, rp.LowWatermark, rp.ErrorCode = part.Partition, -1, kerr.NotLeaderForPartition.Code
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	return responseFrame(hdr.Key, hdr.Version, hdr.CorrID, resp.AppendTo(nil))
}
