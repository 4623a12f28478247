package proxy

// Routing Fetch requests by partition leader.
//
// A client fetches each partition from the virtual broker it believes
// leads it. When that virtual broker's own broker does not lead every
// partition a full fetch names — after a switch between clusters whose
// leaders differ, or after a leader move the client has not yet learnt —
// the broker would answer NOT_LEADER_OR_FOLLOWER for the others, and the
// client would refresh its metadata and fetch them elsewhere: a round trip
// and a pause per moved partition. The proxy fetches them from their
// leaders instead (a routed fetch), as franz-go's client does for itself.
//
// A routed fetch is sessionless (KIP-227 stage F1 of docs/DESIGN.md): each
// broker is sent a full fetch of its partitions with no session (id 0,
// epoch -1), and the client is answered session id 0, so its next fetch
// is full again (a client with a session to end is told so; none sees an
// error). An incremental fetch names only what changed, so it goes where
// its session lives: the connection's own broker, as before.
//
// MinBytes and MaxWait keep their meaning over the fan-out: the client is
// answered when the answers gathered hold MinBytes, every partition is
// answered, a partition has an error to pass on, or MaxWait has passed —
// a broker with data answers at once, so nothing is held back behind a
// broker that waits for data. A sub-fetch still out then is left to finish
// (detached): its answer is kept, per partition, for the next fetch of the
// partition at the same offset (any other offset drops it), and no other
// sub-fetch goes to that broker until it is in. Every requested partition
// is in the answer, without records if none came (a Java consumer drops a
// full fetch response that omits a partition), with the high watermark
// last seen for it.
//
// Errors that mean "ask another broker" (NOT_LEADER_OR_FOLLOWER,
// FENCED_LEADER_EPOCH, ...) are absorbed: the proxy refreshes its leaders
// and asks the new leader within the same fetch, or answers the partition
// without records. Sub-fetches run on each client connection's own fetch
// links, one per broker, each with a goroutine reading its answers: a
// broker serves one request of a connection at a time, so a long poll must
// not share a connection with Produce or Metadata.

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"
)

// fetchPlan is a routed fetch: the client's request (translated for u)
// and where each of its partitions goes.
type fetchPlan struct {
	u        *upstream
	gen      uint64
	req      *kmsg.FetchRequest
	parts    []fetchPlanPart
	deadline time.Time
}

// fetchPlanPart is one partition of a routed fetch.
type fetchPlanPart struct {
	key   topicPartition
	ti    int // the topic's index in req.Topics
	pi    int // the partition's index in the topic
	node  int32
	tries int // routes absorbed (wrong broker) so far
}

// fetchAnswer is one partition's answer from a broker.
type fetchAnswer struct {
	gen      uint64 // the upstream generation it came from
	offset   int64  // the fetch offset it answers
	at       time.Time
	throttle int32
	// absorbed: the broker was the wrong one (or the link failed); the
	// partition is asked again or answered without records.
	absorbed bool
	code     int16
	records  int // record bytes
	hw, lso  int64
	logStart int64
	// entry (Fetch v12+): the partition's entry as the broker encoded it,
	// translated in place for the client; spliced into the answer.
	entry []byte
	// part (below v12): the partition decoded, not translated (the merged
	// response is translated whole).
	part *kmsg.FetchResponseTopicPartition
}

// fetchStats are a partition's offsets as last answered.
type fetchStats struct {
	gen               uint64
	hw, lso, logStart int64
}

// fetchRouter is a client connection's routed-fetch state. The writer
// sends sub-fetches; each link's goroutine reads their answers into
// answers and wakes the writer.
type fetchRouter struct {
	mu       sync.Mutex
	links    map[int32]*fetchLink
	answers  map[topicPartition]*fetchAnswer
	stats    map[topicPartition]fetchStats
	changed  chan struct{}
	corrID   int32
	failedAt map[int32]time.Time // writer only
}

// fetchLink is a client connection's fetch connection to one broker. At
// most one sub-fetch is out on it at a time.
type fetchLink struct {
	up   *upConn
	out  *subFetch // guarded by fetchRouter.mu
	dead bool      // guarded by fetchRouter.mu
}

// subFetch is a fetch sent to one broker for a routed fetch.
type subFetch struct {
	gen     uint64
	version int16
	corrID  int32
	asked   map[topicPartition]int64 // fetch offset per partition
	sent    time.Time
	maxWait time.Duration
	done    bool // answered, or its link failed (guarded by fetchRouter.mu)
}

// linkStuckAfter: a sub-fetch unanswered this long past its MaxWait means a
// broker that stopped answering without closing the connection; its link
// is closed (its partitions are asked again on a new one).
const linkStuckAfter = 30 * time.Second

// wakeLocked wakes the writer waiting for answers; r.mu is held.
func (r *fetchRouter) wakeLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

func (c *clientConn) fetchRouter() *fetchRouter {
	c.curMu.Lock()
	defer c.curMu.Unlock()
	if c.fetches == nil {
		c.fetches = &fetchRouter{links: map[int32]*fetchLink{}, answers: map[topicPartition]*fetchAnswer{},
			stats: map[topicPartition]fetchStats{}, changed: make(chan struct{})}
	}
	return c.fetches
}

// planFetch decides whether a Fetch (req, translated for adm's cluster) of
// a connection routed by leader is routed: a consumer's full fetch naming a
// partition the connection's own broker (up's) does not lead. It returns
// nil to forward it to up as it is.
func (c *clientConn) planFetch(adm admission, up *upConn, hdr requestHeader, req *kmsg.FetchRequest, arrived time.Time) *fetchPlan {
	if req.ReplicaID >= 0 || req.ReplicaState.ID >= 0 {
		return nil
	}
	if hdr.Version >= 7 && req.SessionEpoch > 0 {
		return nil // incremental: the session lives on up's broker
	}
	// Looked at twice: the common fetch, whose partitions up's broker
	// leads, costs lookups and no allocation; a routed one is planned.
	n, elsewhere := 0, false
	known := eachFetchPart(adm.u, hdr.Version, req, up.node, func(_, _ int, _ topicPartition, node int32) {
		n++
		elsewhere = elsewhere || node != up.node
	})
	if !known || !elsewhere {
		return nil // an unknown topic id: the broker answers UNKNOWN_TOPIC_ID
	}
	plan := &fetchPlan{u: adm.u, gen: adm.gen, req: req, parts: make([]fetchPlanPart, 0, n),
		deadline: arrived.Add(time.Duration(max(req.MaxWaitMillis, 0)) * time.Millisecond)}
	eachFetchPart(adm.u, hdr.Version, req, up.node, func(ti, pi int, k topicPartition, node int32) {
		plan.parts = append(plan.parts, fetchPlanPart{key: k, ti: ti, pi: pi, node: node})
	})
	c.p.m.fetchRouted.Inc()
	return plan
}

// eachFetchPart calls f for every partition of a fetch request (translated
// for u) with its topic's real name and its leader on u, or unknown (which
// is where the request would go as it is). It reports false, having
// stopped, at a topic id u does not know.
func eachFetchPart(u *upstream, version int16, req *kmsg.FetchRequest, unknown int32, f func(ti, pi int, k topicPartition, node int32)) bool {
	for ti := range req.Topics {
		t := &req.Topics[ti]
		name, ok := fetchTopicName(u, version, t.Topic, t.TopicID)
		if !ok {
			return false
		}
		for pi := range t.Partitions {
			p := t.Partitions[pi].Partition
			node := unknown
			if l, ok := u.leader(name, p); ok {
				node = l
			}
			f(ti, pi, topicPartition{name, p}, node)
		}
	}
	return true
}

// fetchTopicName is the real name of a topic of a Fetch request or
// response for u: as named, or (v13+) by its real id.
func fetchTopicName(u *upstream, version int16, name string, id [16]byte) (string, bool) {
	if version < 13 {
		return name, true
	}
	return u.topicName(id)
}

// absorbedFetchError reports whether a partition error of a routed
// fetch means "ask another broker": the proxy's view of the leader was
// stale, not the client's request wrong.
func absorbedFetchError(code int16) bool {
	switch code {
	case kerr.NotLeaderForPartition.Code, kerr.FencedLeaderEpoch.Code, kerr.UnknownLeaderEpoch.Code,
		kerr.LeaderNotAvailable.Code, kerr.ReplicaNotAvailable.Code, kerr.KafkaStorageError.Code:
		return true
	}
	return false
}

// maxFetchRoutes is how many times one partition of one routed fetch is
// sent to a new leader after a broker said it was the wrong one.
const maxFetchRoutes = 3

// answerRoutedFetch gathers the answers to a routed fetch from the
// partitions' leaders and returns the response: at v12+ in pieces, ready
// for the client (fetchsplice.go); below, one frame in the real cluster's
// terms (rewriteResponse translates it as any Fetch response).
func (c *clientConn) answerRoutedFetch(ctx context.Context, pr *pendingReq) ([]byte, net.Buffers, error) {
	plan := pr.fetch
	fr := c.fetchRouter()
	got := make([]*fetchAnswer, len(plan.parts))
	asked := make([]bool, len(plan.parts))
	var mine []*subFetch // the sub-fetches this fetch sent
	timer := time.NewTimer(time.Until(plan.deadline))
	defer timer.Stop()
	late, grace := false, false
	fr.mu.Lock()
	fr.purgeLocked(time.Now())
	fr.mu.Unlock()
	for {
		retired := c.retired(plan.gen)
		fr.mu.Lock()
		bytes, passErr, all := 0, false, true
		for i := range plan.parts {
			pp := &plan.parts[i]
			if got[i] == nil {
				if a := fr.answers[pp.key]; a != nil && a.gen == plan.gen && a.offset == plan.offset(pp) {
					delete(fr.answers, pp.key)
					switch {
					case !a.absorbed:
						got[i] = a
					case pp.tries < maxFetchRoutes:
						// Asked again, of the leader as the proxy
						// now knows it (the link refreshed it).
						pp.tries++
						asked[i] = false
						c.p.m.fetchAbsorbed.Inc()
						if l, ok := plan.u.leader(pp.key.topic, pp.key.partition); ok {
							pp.node = l
						}
					default:
						got[i] = a // answered without records
					}
				} else if a != nil {
					delete(fr.answers, pp.key) // another offset's or cluster's: stale
				}
			}
			switch {
			case got[i] == nil:
				all = false
			case !got[i].absorbed:
				bytes += got[i].records
				passErr = passErr || got[i].code != 0
			}
		}
		var sends map[int32][]int
		if !retired && !late {
			for i := range plan.parts {
				if got[i] != nil || asked[i] {
					continue
				}
				node := plan.parts[i].node
				if l := fr.links[node]; l != nil && l.out != nil {
					if time.Since(l.out.sent) > l.out.maxWait+linkStuckAfter {
						l.up.close() // its reader answers the sub-fetch as absorbed
					}
					continue // wait for the link's sub-fetch in flight
				}
				if sends == nil {
					sends = map[int32][]int{}
				}
				sends[node] = append(sends[node], i)
			}
		}
		// Before MaxWait, MinBytes gathered is enough: what some brokers
		// have is not held back by others waiting for data. Past it, what
		// can still be asked is asked (with MaxWait 0: everything, at
		// once), and the sub-fetches this fetch sent — given the time left
		// as their MaxWait, so answering now — are waited for, a little;
		// earlier fetches' are not.
		waiting := false
		for _, sf := range mine {
			waiting = waiting || !sf.done
		}
		var enough bool
		if time.Now().Before(plan.deadline) {
			enough = bytes > 0 && bytes >= int(plan.req.MinBytes)
		} else {
			enough = len(sends) == 0 && !waiting
		}
		ready := all || passErr || enough || retired || late
		changed := fr.changed
		fr.mu.Unlock()
		if ready {
			break
		}
		for node, idx := range sends {
			for _, i := range idx {
				asked[i] = true
			}
			sf, err := c.sendSubFetch(ctx, fr, plan, node, idx, pr.hdr)
			if err != nil {
				// No way to that broker now: its partitions are
				// answered without records; the leaders are refreshed
				// for the next fetch.
				for _, i := range idx {
					got[i] = &fetchAnswer{gen: plan.gen, offset: plan.offset(&plan.parts[i]), absorbed: true}
				}
				c.log.Debug("routed fetch: no link to a leader", zap.Int32("broker", node), zap.Error(err))
				c.refreshAfterFetchFailure(ctx, plan, idx)
				continue
			}
			mine = append(mine, sf)
		}
		if len(sends) > 0 {
			continue
		}
		select {
		case <-changed:
		case <-timer.C:
			if grace {
				late = true
			} else {
				grace = true
				timer.Reset(fetchGrace)
			}
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		}
	}
	if pr.hdr.Version >= 12 {
		return nil, c.spliceRoutedFetch(fr, plan, pr.hdr, got), nil
	}
	return c.mergeRoutedFetch(fr, plan, pr.hdr, got), nil, nil
}

// fetchGrace is how long past the client's MaxWait a routed fetch waits
// for the sub-fetches it sent: they were given the time left as their
// MaxWait, so they answer about then; a broker that does not is not
// waited for longer (its answer is kept for the next fetch).
const fetchGrace = 2 * time.Second

// answerMaxAge: an answer not taken by a fetch within it is dropped (a
// consumer fetches each of its partitions every MaxWait at most; one that
// stopped fetching a partition, e.g. after a rebalance, leaves it behind).
const answerMaxAge = 30 * time.Second

// purgeLocked drops answers no fetch took within answerMaxAge; r.mu is
// held.
func (r *fetchRouter) purgeLocked(now time.Time) {
	for k, a := range r.answers {
		if now.Sub(a.at) > answerMaxAge {
			delete(r.answers, k)
		}
	}
}

// refreshAfterFetchFailure refreshes, in the background, the leaders of
// partitions whose broker could not be reached (bounded, and ended with
// the connection).
func (c *clientConn) refreshAfterFetchFailure(ctx context.Context, plan *fetchPlan, idx []int) {
	topics := make([]string, 0, len(idx))
	for _, i := range idx {
		topics = append(topics, plan.parts[i].key.topic)
	}
	c.bg.Add(1)
	go func() {
		defer c.bg.Done()
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_ = plan.u.refreshLeaders(rctx, topics, time.Now().Add(-linkRetryAfter))
	}()
}

// offset is the fetch offset the client asked of a plan's partition.
func (plan *fetchPlan) offset(pp *fetchPlanPart) int64 {
	return plan.req.Topics[pp.ti].Partitions[pp.pi].FetchOffset
}

// emptyOffsetsLocked are the high watermark, last stable offset and log
// start an answer without records shows for a plan's partition: the last
// the broker answered in this generation, else the fetch offset (the
// partition's end at least) and -1; r.mu is held.
func (r *fetchRouter) emptyOffsetsLocked(plan *fetchPlan, pp *fetchPlanPart) (hw, lso, logStart int64) {
	if s, ok := r.stats[pp.key]; ok && s.gen == plan.gen {
		return s.hw, s.lso, s.logStart
	}
	off := plan.offset(pp)
	return off, off, -1
}

// retired reports whether a switch abandoned the upstream generation gen:
// a routed fetch of it is answered with what it has.
func (c *clientConn) retired(gen uint64) bool {
	c.curMu.Lock()
	defer c.curMu.Unlock()
	return gen < c.retiredBelow || c.closed
}

// sendSubFetch sends broker node the plan's partitions idx, sessionless,
// with the time left of the client's MaxWait.
func (c *clientConn) sendSubFetch(ctx context.Context, fr *fetchRouter, plan *fetchPlan, node int32, idx []int, hdr requestHeader) (*subFetch, error) {
	if node < 0 {
		return nil, fmt.Errorf("no known leader")
	}
	l, err := c.fetchLink(ctx, fr, plan, node)
	if err != nil {
		return nil, err
	}
	req := plan.req
	sub := kmsg.NewPtrFetchRequest()
	sub.Version = req.Version
	sub.ReplicaID, sub.ReplicaState.ID = -1, -1
	sub.MaxWaitMillis = int32(max(time.Until(plan.deadline), 0) / time.Millisecond)
	sub.MinBytes, sub.MaxBytes, sub.IsolationLevel, sub.Rack = req.MinBytes, req.MaxBytes, req.IsolationLevel, req.Rack
	sub.SessionID, sub.SessionEpoch = 0, -1
	sf := &subFetch{gen: plan.gen, version: req.Version, asked: make(map[topicPartition]int64, len(idx)), sent: time.Now()}
	for _, i := range idx {
		pp := &plan.parts[i]
		rt := &req.Topics[pp.ti]
		n := len(sub.Topics)
		if n == 0 || sub.Topics[n-1].Topic != rt.Topic || sub.Topics[n-1].TopicID != rt.TopicID {
			t := kmsg.NewFetchRequestTopic()
			t.Topic, t.TopicID = rt.Topic, rt.TopicID
			sub.Topics = append(sub.Topics, t)
			n++
		}
		p := rt.Partitions[pp.pi]
		sub.Topics[n-1].Partitions = append(sub.Topics[n-1].Partitions, p)
		sf.asked[pp.key] = p.FetchOffset
	}
	fr.mu.Lock()
	if l.dead {
		fr.mu.Unlock()
		return nil, fmt.Errorf("broker %d: the link closed", node)
	}
	fr.corrID++
	sf.corrID = fr.corrID
	sf.maxWait = time.Duration(sub.MaxWaitMillis) * time.Millisecond
	l.out = sf
	fr.mu.Unlock()
	h := requestHeader{Key: keyFetch, Version: sub.Version, CorrID: sf.corrID, ClientID: hdr.ClientID, Flexible: sub.IsFlexible()}
	l.up.lastUsed.Store(time.Now().UnixNano())
	if err := writeFrameBuffers(l.up.nc, net.Buffers{requestFrame(h, sub.AppendTo(nil))}); err != nil {
		l.up.close() // its reader stores the partitions as absorbed
	}
	return sf, nil
}

// fetchLink returns the connection's fetch link to broker node of the
// plan's cluster, dialling it (and starting its reader) when there is
// none.
func (c *clientConn) fetchLink(ctx context.Context, fr *fetchRouter, plan *fetchPlan, node int32) (*fetchLink, error) {
	fr.mu.Lock()
	l := fr.links[node]
	live := l != nil && !l.dead
	fr.mu.Unlock()
	if live && l.up.gen == plan.gen && l.up.u == plan.u && time.Since(time.Unix(0, l.up.lastUsed.Load())) < linkMaxIdle {
		return l, nil
	}
	if l != nil {
		l.up.close() // its reader removes it
	}
	if at, failed := fr.failedAt[node]; failed && time.Since(at) < linkRetryAfter {
		return nil, fmt.Errorf("broker %d: the last dial failed %v ago", node, time.Since(at).Round(time.Millisecond))
	}
	addr, ok := plan.u.brokerAddr(node)
	if !ok {
		return nil, fmt.Errorf("broker %d: no known address", node)
	}
	up, err := c.dialLink(ctx, plan.u, plan.gen, node, addr)
	if err != nil {
		if fr.failedAt == nil {
			fr.failedAt = map[int32]time.Time{}
		}
		fr.failedAt[node] = time.Now()
		return nil, err
	}
	delete(fr.failedAt, node)
	l = &fetchLink{up: up}
	c.curMu.Lock()
	if c.closed || plan.gen < c.retiredBelow {
		c.curMu.Unlock()
		up.close()
		return nil, fmt.Errorf("broker %d: the connection is closing or switched", node)
	}
	fr.mu.Lock()
	fr.links[node] = l
	fr.mu.Unlock()
	c.bg.Add(1)
	c.curMu.Unlock()
	go func() {
		defer c.bg.Done()
		c.readFetchLink(ctx, fr, plan.u, node, l)
	}()
	return l, nil
}

// readFetchLink reads the answers of a fetch link until it fails or is
// closed (the client connection closing, a switch, a new link replacing
// it), storing each partition's answer for the writer.
func (c *clientConn) readFetchLink(ctx context.Context, fr *fetchRouter, u *upstream, node int32, l *fetchLink) {
	defer func() {
		l.up.close()
		fr.mu.Lock()
		l.dead = true
		if fr.links[node] == l {
			delete(fr.links, node)
		}
		if sf := l.out; sf != nil {
			// Never answered: asked again or answered without records.
			now := time.Now()
			for k, off := range sf.asked {
				fr.answers[k] = &fetchAnswer{gen: sf.gen, offset: off, at: now, absorbed: true}
			}
			sf.done = true
			l.out = nil
		}
		fr.wakeLocked()
		fr.mu.Unlock()
	}()
	for {
		frame, err := readFrame(l.up.nc, c.p.cfg.MaxFrameBytes, nil)
		if err != nil {
			if !l.up.isClosed() && ctx.Err() == nil {
				c.log.Debug("routed fetch: link closed", zap.Int32("broker", node), zap.Error(err))
			}
			return
		}
		fr.mu.Lock()
		sf := l.out
		fr.mu.Unlock()
		if sf == nil || len(frame) < 4 || int32(binary.BigEndian.Uint32(frame)) != sf.corrID {
			c.log.Warn("routed fetch: an answer that fits no request; closing the link", zap.Int32("broker", node))
			return
		}
		answers, stale, err := c.subFetchAnswers(ctx, u, sf, frame)
		if err != nil {
			c.log.Warn("routed fetch: undecodable answer; closing the link", zap.Int32("broker", node), zap.Error(err))
			return
		}
		if len(stale) > 0 {
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if err := u.refreshLeaders(rctx, stale, sf.sent); err != nil {
				c.log.Debug("routed fetch: refresh leaders", zap.Error(err))
			}
			cancel()
		}
		fr.mu.Lock()
		sf.done = true
		l.out = nil
		for k, a := range answers {
			fr.answers[k] = a
			if !a.absorbed && a.code == 0 {
				fr.stats[k] = fetchStats{sf.gen, a.hw, a.lso, a.logStart}
			}
		}
		fr.wakeLocked()
		fr.mu.Unlock()
	}
}

// subFetchAnswers decodes a sub-fetch's response into one answer per
// partition asked, and the topics whose leaders must be refreshed.
func (c *clientConn) subFetchAnswers(ctx context.Context, u *upstream, sf *subFetch, frame []byte) (map[topicPartition]*fetchAnswer, []string, error) {
	hl, err := responseHeaderLen(keyFetch, sf.version, frame)
	if err != nil {
		return nil, nil, err
	}
	if sf.version >= 12 {
		return c.subFetchEntries(ctx, u, sf, frame[hl:])
	}
	resp := kmsg.NewPtrFetchResponse()
	if err := decodeResponse(resp, keyFetch, sf.version, frame[hl:]); err != nil {
		return nil, nil, err
	}
	set := newSubAnswers(sf)
	if resp.ErrorCode != 0 {
		return set.allAsked(), nil, nil
	}
	for ti := range resp.Topics {
		t := &resp.Topics[ti]
		name, _ := fetchTopicName(u, sf.version, t.Topic, t.TopicID)
		for pi := range t.Partitions {
			p := &t.Partitions[pi]
			a, absorbed := set.add(topicPartition{name, p.Partition}, p.ErrorCode)
			switch {
			case absorbed && p.CurrentLeader.LeaderID >= 0:
				u.learnLeader(a.topic, p.Partition, p.CurrentLeader.LeaderID, p.CurrentLeader.LeaderEpoch)
			case absorbed:
				set.stale = append(set.stale, a.topic)
			case a.answer != nil:
				a.answer.part, a.answer.throttle, a.answer.records = p, resp.ThrottleMillis, len(p.RecordBatches)
				a.answer.hw, a.answer.lso, a.answer.logStart = p.HighWatermark, p.LastStableOffset, p.LogStartOffset
			}
		}
	}
	return set.result(), set.stale, nil
}

// subAnswers collects the answers to one sub-fetch: one per partition
// asked, whatever the broker said.
type subAnswers struct {
	sf      *subFetch
	now     time.Time
	answers map[topicPartition]*fetchAnswer
	stale   []string // topics whose leaders must be refreshed
}

func newSubAnswers(sf *subFetch) *subAnswers {
	return &subAnswers{sf: sf, now: time.Now(), answers: make(map[topicPartition]*fetchAnswer, len(sf.asked))}
}

// none is an answer without records at offset off: the partition is asked
// again, or answered empty.
func (s *subAnswers) none(off int64) *fetchAnswer {
	return &fetchAnswer{gen: s.sf.gen, offset: off, at: s.now, absorbed: true}
}

// added is a partition answer add recorded: its topic (a copy: the name
// given may alias the frame), and the answer to fill in (nil when the
// partition was not asked, or absorbed).
type added struct {
	topic  string
	answer *fetchAnswer
}

// add records what a broker answered for partition k with error code:
// nothing if it was not asked; an answer without records if the code means
// "not the leader here" (absorbed); else an answer for the caller to fill.
func (s *subAnswers) add(k topicPartition, code int16) (a added, absorbed bool) {
	off, ok := s.sf.asked[k]
	if !ok {
		return added{}, false
	}
	k.topic = strings.Clone(k.topic)
	a.topic = k.topic
	if absorbedFetchError(code) {
		s.answers[k] = s.none(off)
		return a, true
	}
	a.answer = &fetchAnswer{gen: s.sf.gen, offset: off, at: s.now, code: code}
	s.answers[k] = a.answer
	return a, false
}

// result is every partition asked, those the broker left out answered
// without records.
func (s *subAnswers) result() map[topicPartition]*fetchAnswer {
	for k, off := range s.sf.asked {
		if s.answers[k] == nil {
			s.answers[k] = s.none(off)
		}
	}
	return s.answers
}

// allAsked answers every partition without records: a whole-request error
// (a sessionless fetch has no session to lose), asked again.
func (s *subAnswers) allAsked() map[topicPartition]*fetchAnswer {
	clear(s.answers)
	return s.result()
}

// mergeRoutedFetch builds the response to a routed fetch: every
// partition of the request, in its order, with the answer gathered or
// without records and with the offsets last seen.
func (c *clientConn) mergeRoutedFetch(fr *fetchRouter, plan *fetchPlan, hdr requestHeader, got []*fetchAnswer) []byte {
	resp := kmsg.NewPtrFetchResponse()
	resp.Version = hdr.Version
	fr.mu.Lock()
	defer fr.mu.Unlock()
	for i := range plan.parts {
		pp := &plan.parts[i]
		rt := &plan.req.Topics[pp.ti]
		n := len(resp.Topics)
		if i == 0 || pp.ti != plan.parts[i-1].ti {
			t := kmsg.NewFetchResponseTopic()
			t.Topic, t.TopicID = rt.Topic, rt.TopicID
			resp.Topics = append(resp.Topics, t)
			n++
		}
		var p kmsg.FetchResponseTopicPartition
		if a := got[i]; a != nil && !a.absorbed && a.part != nil {
			p = *a.part
			resp.ThrottleMillis = max(resp.ThrottleMillis, a.throttle)
		} else {
			p = kmsg.NewFetchResponseTopicPartition()
			p.Partition = pp.key.partition
			p.HighWatermark, p.LastStableOffset, p.LogStartOffset = fr.emptyOffsetsLocked(plan, pp)
		}
		// The proxy fetches from leaders; a follower named here would
		// send the client around the proxy's routing.
		p.PreferredReadReplica = -1
		p.CurrentLeader = kmsg.NewFetchResponseTopicPartitionCurrentLeader()
		resp.Topics[n-1].Partitions = append(resp.Topics[n-1].Partitions, p)
	}
	return responseFrame(keyFetch, hdr.Version, hdr.CorrID, resp.AppendTo(nil))
}

// closeFetchLinks closes every fetch link (the connection closing, or a
// switch abandoning the cluster); their readers end.
func (c *clientConn) closeFetchLinks(abandon bool) {
	c.curMu.Lock()
	fr := c.fetches
	c.curMu.Unlock()
	if fr == nil {
		return
	}
	fr.mu.Lock()
	links := make([]*fetchLink, 0, len(fr.links))
	for _, l := range fr.links {
		links = append(links, l)
	}
	fr.mu.Unlock()
	for _, l := range links {
		if abandon {
			l.up.abandoned.Store(true)
		}
		l.up.close()
	}
}

// liftFetchEpochs raises each partition's CurrentLeaderEpoch in a fetch
// (translated for u) to the epoch the proxy knows, when that is newer. A
// client shown stable leaders learns a new epoch only at its next metadata
// refresh; fenced for an older one (FENCED_LEADER_EPOCH) in a fetch the
// proxy routes or answers FETCH_SESSION_ID_NOT_FOUND, it would ask again
// with the same epoch. The broker still fences what is older than its own
// epoch (the proxy's view being stale), and the last fetched epoch stays
// the client's, so divergence is still detected (KIP-320).
func liftFetchEpochs(r *kmsg.FetchRequest, u *upstream, version int16) {
	for ti := range r.Topics {
		t := &r.Topics[ti]
		name, ok := fetchTopicName(u, version, t.Topic, t.TopicID)
		if !ok {
			continue
		}
		for pi := range t.Partitions {
			p := &t.Partitions[pi]
			if e, ok := u.leaderEpoch(name, p.Partition); ok && p.CurrentLeaderEpoch >= 0 && e > p.CurrentLeaderEpoch {
				p.CurrentLeaderEpoch = e
			}
		}
	}
}
