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
// Not done here (docs/DESIGN.md, "Produce routing"): a partition answered
// NOT_LEADER_OR_FOLLOWER because the proxy's metadata was stale is returned
// to the client, not re-sent; Fetch, ListOffsets and OffsetForLeaderEpoch
// still go to the virtual broker's own broker.

import (
	"context"
	"fmt"
	"slices"
	"strings"

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

// produceSplit is a Produce request sent in parts to several brokers.
type produceSplit struct {
	// subs are where the parts went, in the order they were written.
	subs []*upConn
	// order lists the forwarded request's partitions in its order, each
	// once: the merged response's order.
	order []partKey
}

// routesByLeader reports whether this connection's Produce requests are
// routed by partition leader. A client that authenticated with its own
// SASL credentials (passthrough) has one authenticated upstream connection,
// which the proxy cannot replicate to other brokers.
func (c *clientConn) routesByLeader() bool {
	return c.p.cfg.Routing != RoutingBroker && !c.auth.passedThrough
}

// routeProduce decides where a rewritten Produce request goes: the
// connections to send to and the frame for each. One target with frame
// itself when one broker leads every partition (or the request cannot be
// walked: up's broker answers it); else one part per leader, and the split
// the writer merges the answers by.
func (c *clientConn) routeProduce(ctx context.Context, adm admission, up *upConn, hdr requestHeader, frame []byte) ([]*upConn, [][]byte, *produceSplit) {
	body := frame[hdr.BodyOffset:]
	w, err := walkProduce(body, hdr.Version)
	if err != nil || len(w.topics) == 0 {
		return []*upConn{up}, [][]byte{frame}, nil
	}
	u := adm.u
	// The target of each partition, and the targets in first-use order.
	var (
		targets []*upConn
		at      = make([][]int, len(w.topics))
	)
	byNode := map[int32]int{}
	for ti := range w.topics {
		t := &w.topics[ti]
		name := t.name
		if t.idOff >= 0 {
			var id [16]byte
			copy(id[:], body[t.idOff:t.idOff+16])
			name, _ = u.topicName(id)
		}
		at[ti] = make([]int, len(t.parts))
		for pi, part := range t.parts {
			node := up.node
			if l, ok := u.leader(name, part.partition); ok {
				node = l
			}
			i, ok := byNode[node]
			if !ok {
				i = len(targets)
				byNode[node] = i
				targets = append(targets, c.link(ctx, adm, up, node))
			}
			at[ti][pi] = i
		}
	}
	// Links that could not be dialled stand in for up: merge targets that
	// are the same connection.
	same := make([]int, len(targets))
	var uniq []*upConn
	for i, t := range targets {
		j := slices.Index(uniq, t)
		if j < 0 {
			j = len(uniq)
			uniq = append(uniq, t)
		}
		same[i] = j
	}
	if len(uniq) == 1 {
		return uniq, [][]byte{frame}, nil
	}
	c.p.m.produceSplits.Inc()
	frames := make([][]byte, len(uniq))
	for s := range uniq {
		frames[s] = produceFor(frame[:hdr.BodyOffset], body, hdr.Version, &w, func(ti, pi int) bool { return same[at[ti][pi]] == s })
	}
	split := &produceSplit{subs: uniq}
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
				split.order = append(split.order, k)
			}
		}
	}
	return uniq, frames, split
}

// produceFor builds a Produce request frame of the request header head and
// the partitions of body that keep selects (by topic and partition index),
// copying their entries as they are: records, producer ids and sequences
// are the client's (after rewriting) byte for byte.
func produceFor(head, body []byte, version int16, w *walkedProduce, keep func(ti, pi int) bool) []byte {
	flexible := version >= 9
	appendLen := func(dst []byte, n int) []byte {
		if flexible {
			return kbin.AppendUvarint(dst, uint32(n+1))
		}
		return kbin.AppendInt32(dst, int32(n))
	}
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
	dst := make([]byte, 0, len(head)+len(body))
	dst = append(dst, head...)
	dst = append(dst, body[:w.topicsAt]...)
	dst = appendLen(dst, topics)
	for ti, t := range w.topics {
		n := kept[ti]
		if n == 0 {
			continue
		}
		dst = append(dst, body[t.key[0]:t.key[1]]...)
		dst = appendLen(dst, n)
		for pi, p := range t.parts {
			if keep(ti, pi) {
				dst = append(dst, body[p.span[0]:p.span[1]]...)
			}
		}
		dst = append(dst, body[t.tagsAt:t.end]...)
	}
	return append(dst, body[w.topicsEnd:]...)
}

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
		return l
	}
	addr, ok := adm.u.brokerAddr(node)
	if !ok {
		return up
	}
	sc, err := adm.u.sec.Dial(ctx, addr, c.p.cfg.DialTimeout)
	if err != nil {
		c.log.Warn("dial the leader of a Produce's partitions; the connection's own broker answers for them", zap.Int32("broker", node), zap.String("address", addr), zap.Error(err))
		return up
	}
	l = &upConn{nc: sc.Conn, sc: sc, u: adm.u, gen: adm.gen, node: node}
	c.curMu.Lock()
	if c.links == nil {
		c.links = map[int32]*upConn{}
	}
	c.links[node] = l
	c.curMu.Unlock()
	c.p.m.links.Inc()
	return l
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
