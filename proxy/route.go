package proxy

// Routing Produce requests by partition leader.
//
// A client sends a Produce for the partitions it believes a broker leads to
// that broker's virtual broker. Its belief can be stale: after a switch
// virtual broker n stands for the n-th broker of the other cluster, whose
// leaders differ, and a preferred-leader election or a reassignment moves
// leaders on a cluster any day. Sent to the virtual broker's own broker,
// such a request is answered NOT_LEADER_OR_FOLLOWER for the partitions that
// broker does not lead — an error a retries=0 producer shows its user, and a
// round trip and metadata refresh for every other.
//
// So a Produce goes to the real leaders as the proxy knows them (its
// cluster metadata, refreshed every 10 s and from every Metadata response a
// client gets through it): whole to the one broker that leads all its
// partitions, else split into one request per leader and the answers merged
// back into one response in the request's order. Each client connection
// keeps its own connection to each broker it routes to (links), dialled on
// first use: a broker serves one request of a connection at a time, so a
// shared connection would queue one client's acks=all Produce behind
// another's.
//
// Order is kept without matching: the reader writes a request's parts to
// their links in the order requests arrive, each broker answers a
// connection in order, and the writer takes a request's answers from its
// links only when every earlier request is answered.
//
// A partition answered NOT_LEADER_OR_FOLLOWER because the proxy's view was
// stale is sent again by the writer (resend.go). Fetch is routed in
// fetchroute.go; ListOffsets, OffsetForLeaderEpoch and DeleteRecords in
// routeparts.go.

import (
	"context"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"
)

// Routing modes (Config.Routing).
const (
	// RoutingLeader sends each Produce partition to its leader.
	RoutingLeader = "leader"
	// RoutingBroker sends every request to the real broker behind the
	// virtual broker the client chose, as kafka-proxy does.
	RoutingBroker = "broker"
)

// partKey names a partition in a Produce request or response: by topic
// name, or (v13+) by topic id.
type partKey struct {
	topic     string
	id        [16]byte
	partition int32
}

// requestSplit is a request sent in parts to several brokers.
type requestSplit struct {
	// subs are where the parts went, in the order they were written.
	subs []*upConn
	// order lists a Produce request's partitions in its order, each
	// once: the merged response's order.
	order []partKey
	// merge, for the other keys (routeparts.go), merges the parts'
	// answers (each from its correlation id on) into one response frame.
	merge func(frames [][]byte) ([]byte, error)
}

// routesByLeader reports whether this connection's Produce requests are
// routed by partition leader. A client that authenticated with its own
// SASL credentials (passthrough) has one authenticated upstream connection,
// which the proxy cannot replicate to other brokers.
func (c *clientConn) routesByLeader() bool {
	return c.p.cfg.Routing != RoutingBroker && !c.auth.passedThrough
}

// routeProduce decides where a rewritten Produce request goes: whole to
// one connection (split nil) when one broker leads every partition, or
// the request cannot be walked (up's broker answers it); else one part per
// leader, parts[i] for split.subs[i], and the split the writer merges the
// answers by. w, if not nil, is the walk of frame's body. seq, when not 0,
// numbers a request whose refused partitions may be sent again: its
// partitions follow their batches still in flight (fence, resend.go).
func (c *clientConn) routeProduce(ctx context.Context, adm admission, up *upConn, hdr requestHeader, frame []byte, w *walkedProduce, seq uint64) (to *upConn, parts []net.Buffers, split *requestSplit) {
	body := frame[hdr.BodyOffset:]
	if w == nil {
		walked, err := walkProduce(body, hdr.Version)
		if err != nil {
			return up, nil, nil
		}
		w = &walked
	}
	u := adm.u
	// Each partition's broker, in the walk's order: its leader, or where
	// its previous batch went while that is unanswered (the fence).
	answered := c.answeredSeq.Load()
	routes := c.routeScratch[:0]
	first, single := int32(-2), true
	for ti := range w.topics {
		t := &w.topics[ti]
		name := topicNameOf(u, body, t)
		for _, part := range t.parts {
			r := partRoute{node: up.node}
			if l, ok := u.leader(name, part.partition); ok {
				r.node = l
			}
			if seq != 0 {
				r.fence = c.fenceFor(name, part.partition)
				if f := r.fence; f.gen == adm.gen && f.seq > answered {
					r.node = f.node
				}
			}
			routes = append(routes, r)
			switch {
			case first == -2:
				first = r.node
			case r.node != first:
				single = false
			}
		}
	}
	c.routeScratch = routes[:0]
	if first == -2 {
		return up, nil, nil
	}
	if single {
		l := c.link(ctx, adm, up, first)
		for _, r := range routes {
			r.fence.set(l.node, adm.gen, seq)
		}
		return l, nil, nil
	}

	// The connection of each partition; connections in first-use order
	// (a leader that could not be dialled stands in as up).
	var (
		subs  []*upConn
		at    = make([][]int, len(w.topics))
		links = map[int32]*upConn{} // one link() per leader
		k     = 0                   // index in routes
	)
	for ti := range w.topics {
		t := &w.topics[ti]
		at[ti] = make([]int, len(t.parts))
		for pi := range t.parts {
			r := routes[k]
			k++
			l, ok := links[r.node]
			if !ok {
				l = c.link(ctx, adm, up, r.node)
				links[r.node] = l
			}
			i := slices.Index(subs, l)
			if i < 0 {
				i = len(subs)
				subs = append(subs, l)
			}
			at[ti][pi] = i
			r.fence.set(l.node, adm.gen, seq)
		}
	}
	if len(subs) == 1 {
		return subs[0], nil, nil
	}
	c.p.m.produceSplits.Inc()
	parts = make([]net.Buffers, len(subs))
	for s := range subs {
		parts[s] = produceFor(frame[:hdr.BodyOffset], body, hdr.Version, w, func(ti, pi int) bool { return at[ti][pi] == s })
	}
	return subs[0], parts, &requestSplit{subs: subs, order: produceOrder(body, w)}
}

// partRoute is where routeProduce sends one partition: its broker, and
// the partition's fence entry (nil when the request is not numbered).
type partRoute struct {
	node  int32
	fence *fenceEntry
}

// produceFor builds a Produce request frame of the request header head and
// the partitions of body that keep selects (by topic and partition index),
// their entries as they are: records, producer ids and sequences are the
// client's (after rewriting) byte for byte. The frame is returned as
// pieces of head and body — nothing is copied but the counts; body must
// stay as it is until the frame is written.
func produceFor(head, body []byte, version int16, w *walkedProduce, keep func(ti, pi int) bool) net.Buffers {
	flexible := version >= 9
	kept := make([]int, len(w.topics)) // partitions kept per topic
	topics := 0
	for ti, t := range w.topics {
		for pi := range t.parts {
			if keep(ti, pi) {
				kept[ti]++
			}
		}
		if kept[ti] > 0 {
			topics++
		}
	}
	// The counts: at most 5 bytes each, in one array that never grows, so
	// the slices taken of it stay valid.
	nums := make([]byte, 0, 5*(1+topics))
	count := func(n int) []byte {
		at := len(nums)
		if flexible {
			nums = kbin.AppendUvarint(nums, uint32(n+1))
		} else {
			nums = kbin.AppendInt32(nums, int32(n))
		}
		return nums[at:]
	}
	var (
		out  net.Buffers
		from = -1 // the body range [from, to) not yet added
		to   int
	)
	flush := func() {
		if from >= 0 && to > from {
			out = append(out, body[from:to])
		}
		from = -1
	}
	span := func(a, b int) { // body[a:b], joined to the range before it when adjacent
		if from >= 0 && a == to {
			to = b
			return
		}
		flush()
		from, to = a, b
	}
	piece := func(p []byte) {
		flush()
		out = append(out, p)
	}
	piece(head)
	span(0, w.topicsAt)
	piece(count(topics))
	for ti, t := range w.topics {
		n := kept[ti]
		if n == 0 {
			continue
		}
		span(t.key[0], t.key[1])
		piece(count(n))
		for pi, p := range t.parts {
			if keep(ti, pi) {
				span(p.span[0], p.span[1])
			}
		}
		span(t.tagsAt, t.end)
	}
	span(w.topicsEnd, len(body))
	flush()
	return out
}

// writeFrameBuffers writes a frame given in pieces: one piece as it is;
// several with one vectored write on a TCP connection, joined into one
// buffer on any other (a TLS connection would send a record per piece).
func writeFrameBuffers(nc net.Conn, pieces net.Buffers) error {
	if len(pieces) == 1 {
		return writeFrame(nc, pieces[0])
	}
	size := 0
	for _, p := range pieces {
		size += len(p)
	}
	if _, ok := nc.(*net.TCPConn); !ok {
		frame := make([]byte, 0, size)
		for _, p := range pieces {
			frame = append(frame, p...)
		}
		return writeFrame(nc, frame)
	}
	sz := kbin.AppendInt32(make([]byte, 0, 4), int32(size))
	bufs := append(net.Buffers{sz}, pieces...)
	_, err := bufs.WriteTo(nc)
	return err
}

// linkMaxIdle is how long a link may go unused before it is dialled
// again rather than used: brokers close connections idle for
// connections.max.idle.ms, 10 minutes by default, and a Produce written to
// a connection the broker just closed would fail. The connection the
// client chose stays in use by its other requests (Metadata every 5
// minutes in the common clients).
var linkMaxIdle = 4 * time.Minute

// linkRetryAfter is how long after a failed dial of a leader the
// connection's own broker answers for its partitions without another try:
// a dial can take DialTimeout, which every Produce to a broker that is down
// would otherwise wait.
const linkRetryAfter = time.Second

// link returns this connection's connection to broker node of the
// admission's cluster, dialling it on first use. up (the virtual broker's
// own) serves when node is its broker, unknown (-1), has no known address
// or cannot be dialled now: that broker then answers for the partitions,
// NOT_LEADER_OR_FOLLOWER if it does not lead them, as without routing.
func (c *clientConn) link(ctx context.Context, adm admission, up *upConn, node int32) *upConn {
	if node < 0 || node == up.node {
		return up
	}
	c.curMu.Lock()
	l := c.links[node]
	c.curMu.Unlock()
	if l != nil && l.gen == adm.gen && l.u == adm.u {
		if time.Since(time.Unix(0, l.lastUsed.Load())) < linkMaxIdle {
			return l
		}
		// The broker may have closed it (connections.max.idle.ms):
		// a new one, the old one closed after its last response.
		c.curMu.Lock()
		delete(c.links, node)
		c.curMu.Unlock()
		if err := c.enqueue(ctx, &pendingReq{closeUp: l}); err != nil {
			return up
		}
	}
	addr, ok := adm.u.brokerAddr(node)
	if !ok {
		return up
	}
	if at, failed := c.linkFailed[node]; failed && time.Since(at) < linkRetryAfter {
		return up
	}
	l, err := c.dialLink(ctx, adm.u, adm.gen, node, addr)
	if err != nil {
		if c.linkFailed == nil {
			c.linkFailed = map[int32]time.Time{}
		}
		c.linkFailed[node] = time.Now()
		c.log.Warn("dial the leader of a Produce's partitions; the connection's own broker answers for them", zap.Int32("broker", node), zap.String("address", addr), zap.Error(err))
		return up
	}
	delete(c.linkFailed, node)
	c.curMu.Lock()
	if c.links == nil {
		c.links = map[int32]*upConn{}
	}
	c.links[node] = l
	c.curMu.Unlock()
	return l
}

// dialLink opens a connection to broker node of u at addr, for a link
// (reader's or writer's), counted in leader_links_total.
func (c *clientConn) dialLink(ctx context.Context, u *upstream, gen uint64, node int32, addr string) (*upConn, error) {
	sc, err := u.sec.Dial(ctx, addr, c.p.cfg.DialTimeout)
	if err != nil {
		return nil, err
	}
	l := &upConn{nc: sc.Conn, sc: sc, u: u, gen: gen, node: node}
	l.lastUsed.Store(time.Now().UnixNano())
	c.p.m.links.Inc()
	return l, nil
}

// mergeProduce merges the answers to a split Produce (frames, each from
// its correlation id on) into one response frame, its partitions in the
// request's order.
func mergeProduce(version int16, corrID int32, frames [][]byte, order []partKey) ([]byte, error) {
	merged := kmsg.NewPtrProduceResponse()
	merged.Version = version
	parts := map[partKey]*kmsg.ProduceResponseTopicPartition{}
	brokers := map[int32]bool{}
	for i, f := range frames {
		hl, err := responseHeaderLen(keyProduce, version, f)
		if err != nil {
			return nil, fmt.Errorf("part %d of a split Produce: %w", i+1, err)
		}
		r := kmsg.NewPtrProduceResponse()
		if err := decodeResponse(r, keyProduce, version, f[hl:]); err != nil {
			return nil, fmt.Errorf("part %d of a split Produce: %w", i+1, err)
		}
		merged.ThrottleMillis = max(merged.ThrottleMillis, r.ThrottleMillis)
		for _, b := range r.Brokers {
			if !brokers[b.NodeID] {
				brokers[b.NodeID] = true
				merged.Brokers = append(merged.Brokers, b)
			}
		}
		for ti := range r.Topics {
			t := &r.Topics[ti]
			for pi := range t.Partitions {
				k := partKey{partition: t.Partitions[pi].Partition}
				if version >= 13 {
					k.id = t.TopicID
				} else {
					k.topic = t.Topic
				}
				parts[k] = &t.Partitions[pi]
			}
		}
	}
	for _, k := range order {
		p := parts[k]
		if p == nil {
			continue // not answered: not written (settleProduce)
		}
		n := len(merged.Topics)
		if n == 0 || merged.Topics[n-1].Topic != k.topic || merged.Topics[n-1].TopicID != k.id {
			t := kmsg.NewProduceResponseTopic()
			t.Topic, t.TopicID = k.topic, k.id
			merged.Topics = append(merged.Topics, t)
			n++
		}
		merged.Topics[n-1].Partitions = append(merged.Topics[n-1].Partitions, *p)
	}
	return responseFrame(keyProduce, version, corrID, merged.AppendTo(nil)), nil
}
