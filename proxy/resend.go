package proxy

// Re-sending the partitions of a Produce that a broker refused because it
// does not lead them.
//
// The proxy routes a Produce by the leaders it knows (route.go). When a
// leader moved since it last learned them — a preferred-leader election, a
// broker's controlled shutdown, a reassignment — the broker it chose answers
// NOT_LEADER_OR_FOLLOWER: the records were not appended. A client would
// refresh its metadata and send again, or, with retries=0, give its user an
// error. The proxy sends those partitions again itself, to the new leader,
// byte for byte as before — an idempotent or transactional batch keeps its
// producer id, epoch and sequence, so the new leader, which has the
// producer's state by replication, takes it exactly once — and answers the
// client once, as if the leader had not moved.
//
// The new leader comes from the refusal itself (KIP-951: a broker names the
// current leader and its address in the response, Kafka 3.7 and later), else
// from a metadata request shared by every connection refused at the same
// time (upstream.refreshLeaders). Rounds repeat, 10 ms apart and doubling to
// 100 ms, until no partition is refused or the request's deadline — the
// arrival time plus the smaller of its TimeoutMillis and maxHold — passes;
// the client then gets the last refusal. A leader the proxy cannot dial ends
// the re-sends of its partitions at once (their refusal is the answer).
//
// The writer re-sends, on connections of its own (writer links): the
// reader's connections are in use by requests whose answers the writer has
// not read yet, and an answer on them belongs to the request written first.
//
// Order per partition: a client may have several batches of a partition in
// flight. If the first is refused and sent again, a later one must not reach
// the new leader before it. The reader keeps, per partition, the broker its
// last batch went to and the request that carried it (fence): while that
// request is unanswered, the next batch of the partition goes to the same
// broker whatever the leader is now, so it is refused there too and re-sent
// by the writer after the earlier one, in the order the client sent them.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"
)

// produceResend is what a routed Produce keeps until its answer, so that
// refused partitions can be sent again.
type produceResend struct {
	// frame is the request as forwarded (header and rewritten body); it
	// is the reader's buffer, given to the request, returned to the
	// reader's free list once answered.
	frame []byte
	walk  *walkedProduce
}

// fenceKey names a partition by topic name.
type fenceKey struct {
	topic     string
	partition int32
}

// fenceEntry is where a partition's last routed batch on a connection went.
type fenceEntry struct {
	node int32
	gen  uint64
	seq  uint64
}

// fenceFor returns a partition's fence entry on this connection, made on
// first use. Reader only.
func (c *clientConn) fenceFor(name string, partition int32) *fenceEntry {
	e := c.fence[fenceKey{name, partition}]
	if e == nil {
		if c.fence == nil {
			c.fence = map[fenceKey]*fenceEntry{}
		}
		// name may alias the read buffer; the key outlives it (and is
		// never assigned again, which would put the aliasing string in).
		e = &fenceEntry{}
		c.fence[fenceKey{strings.Clone(name), partition}] = e
	}
	return e
}

// set records that request seq carries a batch of the partition to node
// (nil: not fenced).
func (e *fenceEntry) set(node int32, gen, seq uint64) {
	if e != nil {
		e.node, e.gen, e.seq = node, gen, seq
	}
}

// resendBackoff is the wait before the second round of re-sends, doubled
// each round up to resendBackoffMax.
const (
	resendBackoff    = 10 * time.Millisecond
	resendBackoffMax = 100 * time.Millisecond
)

// refusal is a refused partition of the request being answered.
type refusal struct {
	key  partKey
	at   [2]int // topic and partition index in the request's walk
	name string // the topic's name
	by   int32  // the broker that refused it
	// appendedAt: the offset the refusing broker had appended the batch
	// at, for a batch without a producer id (survival.go); -1 otherwise.
	appendedAt int64
	// refresh: the leader's answer showed the proxy's view of it is
	// stale; the next round refreshes it.
	refresh bool
}

// finishProduce turns the answers to a routed Produce (one frame per part,
// from each part's connection) into the client's answer: as it is when
// nothing was refused (and it came whole), else with the refused
// partitions sent again to their leaders and every answer merged in the
// request's order. It returns the frame; or the connection a read failed
// on with the error; or, as bad, an answer that does not fit the request.
func (c *clientConn) finishProduce(ctx context.Context, pr *pendingReq, frames [][]byte, from []*upConn) (frame []byte, failed *upConn, err, bad error) {
	rs := pr.resend
	var refused []refusal
	if rs != nil {
		refused, bad = c.refusals(pr, frames, from)
		if bad != nil {
			return nil, nil, nil, bad
		}
	}
	if len(refused) == 0 {
		if pr.split == nil {
			return frames[0], nil, nil, nil
		}
		frame, bad = mergeProduce(pr.hdr.Version, pr.hdr.CorrID, frames, pr.split.order)
		return frame, nil, nil, bad
	}

	u, gen := pr.up.u, pr.up.gen
	body := rs.frame[pr.hdr.BodyOffset:]
	deadline := pr.sent.Add(min(time.Duration(max(rs.walk.timeout, 0))*time.Millisecond, c.p.cfg.MaxHold))
	backoff := resendBackoff
	since := time.Now()               // the refusals arrived
	timeoutAt := rs.walk.topicsAt - 4 // the request's TimeoutMillis, in body
	for round := 0; len(refused) > 0; round++ {
		if pr.up.abandoned.Load() {
			// A switch gave up waiting for this request: nothing more
			// goes to the old cluster (answer ends the connection).
			return nil, pr.up, errAbandoned, nil
		}
		if !time.Now().Before(deadline) {
			break
		}
		if round > 0 {
			if time.Now().Add(backoff).After(deadline) {
				break
			}
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil, nil, ctx.Err(), nil
			}
			backoff = min(2*backoff, resendBackoffMax)
		}
		// Partitions whose leader the proxy does not know, or knows as
		// the broker that refused them, need news first; after it they
		// go to the leader it names, the same broker again included (a
		// leader that refused while it took over), one backoff later.
		var stale []string
		for i, r := range refused {
			if l, ok := u.leader(r.name, r.key.partition); !ok || l == r.by || r.refresh {
				stale = append(stale, r.name)
				refused[i].refresh = false
			}
		}
		if len(stale) > 0 {
			slices.Sort(stale)
			rctx, cancel := context.WithDeadline(ctx, deadline)
			err := u.refreshLeaders(rctx, slices.Compact(stale), since)
			cancel()
			if err != nil {
				c.log.Debug("refresh leaders for a re-send", zap.Error(err))
			}
			since = time.Now()
		}
		byNode := map[int32][]refusal{}
		var waiting []refusal
		for _, r := range refused {
			if l, ok := u.leader(r.name, r.key.partition); ok && (l != r.by || round > 0) {
				byNode[l] = append(byNode[l], r)
			} else {
				waiting = append(waiting, r)
			}
		}
		refused = waiting
		nodes := make([]int32, 0, len(byNode))
		for n := range byNode {
			nodes = append(nodes, n)
		}
		slices.Sort(nodes)
		for _, node := range nodes {
			group := byNode[node]
			l, err := c.writerLink(ctx, u, gen, node)
			if errors.Is(err, errAbandoned) {
				return nil, pr.up, err, nil
			}
			if err != nil {
				// The leader cannot be reached: the refusal is the answer.
				c.log.Warn("dial the new leader of refused Produce partitions; the client gets the refusal", zap.Int32("broker", node), zap.Error(err))
				countAppended(c.p.m, group)
				continue
			}
			// Batches appended by the old leader are sent again only if
			// the new one does not have them (survival.go).
			group, answers, later := c.checkSurvival(ctx, l, pr, group, deadline)
			frames = append(frames, answers...)
			refused = append(refused, later...)
			if len(group) == 0 {
				continue
			}
			if l.isClosed() { // a check's exchange broke the link
				if l, err = c.writerLink(ctx, u, gen, node); err != nil {
					if errors.Is(err, errAbandoned) {
						return nil, pr.up, err, nil
					}
					refused = append(refused, group...) // next round
					continue
				}
			}
			keep := map[[2]int]bool{}
			for _, r := range group {
				keep[r.at] = true
			}
			// The broker may hold the part for the time left, not more.
			left := max(time.Until(deadline).Milliseconds(), 1)
			binary.BigEndian.PutUint32(body[timeoutAt:], uint32(int32(min(left, int64(max(rs.walk.timeout, 1))))))
			c.p.m.produceResends.Add(float64(len(group)))
			answer, sent, err := c.resendOn(l, produceFor(rs.frame[:pr.hdr.BodyOffset], body, pr.hdr.Version, rs.walk,
				func(ti, pi int) bool { return keep[[2]int{ti, pi}] }), deadline)
			if err != nil && !sent {
				// Nothing reached the broker: the refusal is the answer.
				c.log.Warn("re-send refused Produce partitions; the client gets the refusal", zap.Int32("broker", node), zap.Error(err))
				continue
			}
			if err != nil {
				return nil, l, err, nil
			}
			if len(answer) < 4 || int32(binary.BigEndian.Uint32(answer)) != pr.hdr.CorrID {
				l.close()
				return nil, nil, nil, fmt.Errorf("re-sent Produce: a response with another correlation id than %d", pr.hdr.CorrID)
			}
			again, bad := c.refusals(pr, [][]byte{answer}, []*upConn{l})
			if bad != nil {
				return nil, nil, nil, bad
			}
			frames = append(frames, answer)
			refused = append(refused, again...)
		}
		if !time.Now().Before(deadline) {
			break
		}
	}
	countAppended(c.p.m, refused) // never settled: the refusal stands
	order := produceOrder(body, rs.walk)
	if pr.split != nil {
		order = pr.split.order
	}
	// Later answers replace earlier ones for the same partition.
	frame, bad = mergeProduce(pr.hdr.Version, pr.hdr.CorrID, frames, order)
	return frame, nil, nil, bad
}

// refusals lists the partitions the answers refused with a resendable
// error, and learns from the answers (KIP-951) who leads them now.
func (c *clientConn) refusals(pr *pendingReq, frames [][]byte, from []*upConn) ([]refusal, error) {
	rs, u := pr.resend, pr.up.u
	body := rs.frame[pr.hdr.BodyOffset:]
	var out []refusal
	for i, f := range frames {
		hl, err := responseHeaderLen(keyProduce, pr.hdr.Version, f)
		if err != nil {
			return nil, fmt.Errorf("produce response: %w", err)
		}
		refused, err := walkProduceRefusals(f[hl:], pr.hdr.Version, nil)
		if err != nil {
			return nil, err
		}
		if len(refused) == 0 {
			continue
		}
		if pr.hdr.Version >= 10 {
			c.learnCurrentLeaders(u, pr.hdr.Version, f[hl:])
		}
		for _, r := range refused {
			at, ok := requestIndex(body, rs.walk, r.key)
			if !ok {
				return nil, fmt.Errorf("produce response: partition %d of a topic the request did not name", r.key.partition)
			}
			appendedAt := int64(-1)
			if records := rs.walk.topics[at[0]].parts[at[1]].records; r.appended && !idempotentBatches(records) {
				b := firstBatch(records)
				// Appended by the old leader, perhaps kept by the new
				// one: sent again, records without a producer id would
				// be written twice. The new leader is asked first
				// (survival.go) — for one batch; for several the
				// client gets the refusal, as it would from the broker.
				if b == nil || len(b) != len(records) {
					c.p.m.appendedRefusals.WithLabelValues("refused").Inc()
					continue
				}
				appendedAt = r.baseOffset
			}
			r.key.topic = strings.Clone(r.key.topic)
			out = append(out, refusal{key: r.key, at: at, name: strings.Clone(topicNameOf(u, body, &rs.walk.topics[at[0]])), by: from[i].node, appendedAt: appendedAt})
		}
	}
	return out, nil
}

// learnCurrentLeaders learns the leaders and broker addresses a Produce
// response (v10+) names for the partitions it refused.
func (c *clientConn) learnCurrentLeaders(u *upstream, version int16, body []byte) {
	resp := kmsg.NewPtrProduceResponse()
	if err := decodeResponse(resp, keyProduce, version, body); err != nil {
		return
	}
	for _, b := range resp.Brokers {
		u.learnBroker(b.NodeID, b.Host, b.Port)
	}
	for _, t := range resp.Topics {
		name := t.Topic
		if version >= 13 {
			name, _ = u.topicName(t.TopicID)
		}
		for _, p := range t.Partitions {
			if resendable(p.ErrorCode) {
				u.learnLeader(name, p.Partition, p.CurrentLeader.LeaderID, p.CurrentLeader.LeaderEpoch)
			}
		}
	}
}

// requestIndex finds a partition of a Produce response in the request's
// walk: its topic and partition index.
func requestIndex(body []byte, w *walkedProduce, k partKey) ([2]int, bool) {
	for ti := range w.topics {
		t := &w.topics[ti]
		if t.idOff >= 0 {
			if [16]byte(body[t.idOff:t.idOff+16]) != k.id {
				continue
			}
		} else if t.name != k.topic {
			continue
		}
		for pi, p := range t.parts {
			if p.partition == k.partition {
				return [2]int{ti, pi}, true
			}
		}
	}
	return [2]int{}, false
}

// topicNameOf is a walked request topic's name (by its id from v13); a
// name read from the request aliases body.
func topicNameOf(u *upstream, body []byte, t *produceTopic) string {
	if t.idOff < 0 {
		return t.name
	}
	name, _ := u.topicName([16]byte(body[t.idOff : t.idOff+16]))
	return name
}

// produceOrder lists a walked Produce's partitions in its order, each once:
// a merged response's order.
func produceOrder(body []byte, w *walkedProduce) []partKey {
	var order []partKey
	seen := map[partKey]bool{}
	for _, t := range w.topics {
		k := partKey{topic: strings.Clone(t.name)}
		if t.idOff >= 0 {
			copy(k.id[:], body[t.idOff:t.idOff+16])
		}
		for _, part := range t.parts {
			k.partition = part.partition
			if !seen[k] {
				seen[k] = true
				order = append(order, k)
			}
		}
	}
	return order
}

// resendOn writes a re-sent part on a writer link and reads its answer;
// sent reports whether the part was written (its outcome is unknown when
// the answer then fails).
func (c *clientConn) resendOn(l *upConn, pieces net.Buffers, deadline time.Time) (answer []byte, sent bool, err error) {
	l.lastUsed.Store(time.Now().UnixNano())
	if err := writeFrameBuffers(l.nc, pieces); err != nil {
		l.close()
		return nil, false, fmt.Errorf("re-send to broker %d: %w", l.node, err)
	}
	// The part asks the broker to answer by the deadline; past it and a
	// margin, the connection is taken for dead.
	l.nc.SetReadDeadline(deadline.Add(5 * time.Second))
	f, err := readFrame(l.nc, c.p.cfg.MaxFrameBytes, nil)
	l.nc.SetReadDeadline(time.Time{})
	if err != nil {
		l.close()
		return nil, true, fmt.Errorf("answer to a re-send from broker %d: %w", l.node, err)
	}
	return f, true, nil
}

// writerLink returns the writer's own connection to broker node of u,
// dialling it when there is none for this generation or it was idle for
// linkMaxIdle. Writer only (curMu guards the map against close).
func (c *clientConn) writerLink(ctx context.Context, u *upstream, gen uint64, node int32) (*upConn, error) {
	c.curMu.Lock()
	l := c.wlinks[node]
	c.curMu.Unlock()
	if l != nil && l.u == u && l.gen == gen && !l.isClosed() && !l.abandoned.Load() && time.Since(time.Unix(0, l.lastUsed.Load())) < linkMaxIdle {
		if l.sc.ReauthDue() {
			if err := u.sec.Reauthenticate(ctx, l.sc, c.p.cfg.DialTimeout); err != nil {
				l.close()
				return nil, fmt.Errorf("re-authenticate to broker %d: %w", node, err)
			}
			c.p.m.reauths.Inc()
		}
		return l, nil
	}
	if l != nil {
		l.close()
	}
	addr, ok := u.brokerAddr(node)
	if !ok {
		return nil, fmt.Errorf("broker %d of cluster %s: no known address", node, u.name)
	}
	l, err := c.dialLink(ctx, u, gen, node, addr)
	if err != nil {
		return nil, err
	}
	c.curMu.Lock()
	if c.wlinks == nil {
		c.wlinks = map[int32]*upConn{}
	}
	c.wlinks[node] = l
	closed, retired := c.closed, gen < c.retiredBelow
	c.curMu.Unlock()
	switch {
	case closed: // the connection closed while the link was dialled
		l.close()
		return nil, errClientGone
	case retired: // a switch abandoned this generation meanwhile
		l.close()
		return nil, errAbandoned
	}
	return l, nil
}

// idempotentBatches reports whether every record batch of a partition's
// records carries a producer id: a broker then recognises a batch it
// already has (the last five per producer) and answers it without writing
// it again.
func idempotentBatches(records []byte) bool {
	if len(records) == 0 {
		return false
	}
	for len(records) > 0 {
		b := firstBatch(records)
		if b == nil || int64(binary.BigEndian.Uint64(b[batchPIDOff:])) < 0 {
			return false
		}
		records = records[len(b):]
	}
	return true
}

// checkSurvival asks leader l, for each refusal of group whose batch the
// old leader had appended, whether it has the batch (survival.go). It
// returns the refusals to send again (the others of group, and those it
// does not have), answers for the batches it has, and the refusals to try
// again next round.
func (c *clientConn) checkSurvival(ctx context.Context, l *upConn, pr *pendingReq, group []refusal, deadline time.Time) (send []refusal, answers [][]byte, later []refusal) {
	rs := pr.resend
	for _, r := range group {
		if r.appendedAt < 0 {
			send = append(send, r)
			continue
		}
		epoch, ok := l.u.leaderEpoch(r.name, r.key.partition)
		outcome, answer := survivalPending, (*kmsg.ProduceResponseTopicPartition)(nil)
		if ok {
			var err error
			outcome, answer, err = c.survived(ctx, l, r.name, r.key.partition, epoch, r.appendedAt,
				rs.walk.topics[r.at[0]].parts[r.at[1]].records, deadline)
			if err != nil {
				c.log.Debug("ask the new leader for a batch refused after its append", zap.Int32("broker", l.node), zap.Error(err))
				outcome = survivalPending
			}
		}
		switch outcome {
		case survivalPresent:
			c.p.m.appendedRefusals.WithLabelValues("written").Inc()
			resp := kmsg.NewPtrProduceResponse()
			resp.Version = pr.hdr.Version
			t := kmsg.NewProduceResponseTopic()
			t.Topic, t.TopicID = r.key.topic, r.key.id
			t.Partitions = append(t.Partitions, *answer)
			resp.Topics = append(resp.Topics, t)
			answers = append(answers, responseFrame(keyProduce, pr.hdr.Version, pr.hdr.CorrID, resp.AppendTo(nil)))
		case survivalAbsent:
			c.p.m.appendedRefusals.WithLabelValues("resent").Inc()
			r.appendedAt = -1
			send = append(send, r)
		case survivalPending:
			r.refresh = true
			later = append(later, r)
		default:
			c.p.m.appendedRefusals.WithLabelValues("refused").Inc()
		}
	}
	return send, answers, later
}

// countAppended counts, as refused, the refusals after an append among rs
// whose refusal is the client's answer.
func countAppended(m *metrics, rs []refusal) {
	for _, r := range rs {
		if r.appendedAt >= 0 {
			m.appendedRefusals.WithLabelValues("refused").Inc()
		}
	}
}
