package proxy

// The answer to a routed fetch at Fetch v12+, spliced.
//
// Decoding the brokers' answers and encoding one response copied every
// record byte twice more and cost ~2 ms per MiB (BenchmarkRoutedFetchAnswer
// before): more than everything else the proxy does to a forwarded fetch.
// Instead each broker's answer is translated in place when it arrives (as a
// forwarded response is: topic ids, node ids, epochs, batch epochs) and
// walked for its partitions' entries; the client's answer is a new header
// and topic headers around those entries, written with one vectored write —
// the records are never copied. A broker answer carrying broker endpoints
// (KIP-951, beside "not the leader" errors, which are absorbed) cannot be
// translated in place: it is decoded, translated and encoded once, then
// walked the same way.

import (
	"context"
	"errors"
	"net"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// subFetchEntries turns a sub-fetch's answer body (Fetch v12+) into one
// answer per partition asked, each its translated entry, and the topics
// whose leaders must be refreshed.
func (c *clientConn) subFetchEntries(ctx context.Context, u *upstream, sf *subFetch, body []byte) (map[topicPartition]*fetchAnswer, []string, error) {
	p := c.p
	tr := &respTranslator{ctx: ctx, p: p, u: u, offset: u.epochOffset.Load()}
	fp, err := patchFetchEntries(body, sf.version, tr, true)
	if errors.Is(err, errNoFastPath) {
		resp := kmsg.NewPtrFetchResponse()
		if err := decodeResponse(resp, keyFetch, sf.version, body); err != nil {
			return nil, nil, err
		}
		translateMessage(resp, tr)
		rewriteFetchEpochs(resp, tr.offset, p)
		resp.Brokers = nil // the endpoints of leaders the client is not to follow
		body = resp.AppendTo(nil)
		fp, err = walkFetchEntries(body, sf.version, true)
	}
	if err != nil {
		return nil, nil, err
	}
	set := newSubAnswers(sf)
	if fp.errCode != 0 {
		return set.allAsked(), nil, nil
	}
	for _, e := range fp.parts {
		name := e.topic.name
		if sf.version >= 13 {
			// The real id (walked before the patch), or the presented
			// one (an answer encoded again after translation).
			if n, ok := u.topicName(e.topic.id); ok {
				name = n
			} else if n, ok := p.topicNames.Load(e.topic.id); ok {
				name = n.(string)
			}
		}
		a, absorbed := set.add(topicPartition{name, e.partition}, e.code)
		if absorbed {
			set.stale = append(set.stale, a.topic)
		}
		if a.answer == nil {
			continue
		}
		// The proxy fetches from leaders; a follower named here would
		// send the client around its routing.
		kbin.AppendInt32(body[e.preferredAt:e.preferredAt], -1)
		a.answer.throttle, a.answer.records, a.answer.entry = fp.throttle, e.records, body[e.span[0]:e.span[1]]
		a.answer.hw, a.answer.lso, a.answer.logStart = e.hw, e.lso, e.logStart
	}
	return set.result(), set.stale, nil
}

// spliceRoutedFetch builds the answer to a routed fetch at v12+: a header,
// then per topic of the request its identity and, in the request's order,
// each partition's entry as its broker encoded it (translated), or an
// entry without records for one not answered. It returns the frame (after
// its size) in pieces; the entries are not copied.
func (c *clientConn) spliceRoutedFetch(fr *fetchRouter, plan *fetchPlan, hdr requestHeader, got []*fetchAnswer) net.Buffers {
	var throttle int32
	topics := 0
	for i := range plan.parts {
		if i == 0 || plan.parts[i].ti != plan.parts[i-1].ti {
			topics++
		}
		if a := got[i]; a != nil && a.entry != nil {
			throttle = max(throttle, a.throttle)
		}
	}
	// One buffer for everything the proxy writes: pieces are taken of it
	// as it grows (a piece of an outgrown array stays as it was).
	small := make([]byte, 0, 64+48*len(plan.parts))
	mark := 0
	var out net.Buffers
	cut := func() {
		if len(small) > mark {
			out = append(out, small[mark:])
		}
		mark = len(small)
	}
	small = kbin.AppendInt32(small, hdr.CorrID)
	small = append(small, 0) // response header tags
	small = kbin.AppendInt32(small, throttle)
	small = kbin.AppendInt16(small, 0) // error
	small = kbin.AppendInt32(small, 0) // session id: none (stage F1)
	small = kbin.AppendUvarint(small, uint32(topics+1))
	fr.mu.Lock()
	defer fr.mu.Unlock()
	for i := 0; i < len(plan.parts); {
		// The partitions of one topic of the request.
		j := i + 1
		for j < len(plan.parts) && plan.parts[j].ti == plan.parts[i].ti {
			j++
		}
		name := plan.parts[i].key.topic
		if hdr.Version >= 13 {
			id := virtualTopicID(c.p.clusterID, name)
			c.p.topicNames.Store(id, name)
			small = append(small, id[:]...)
		} else {
			small = kbin.AppendCompactString(small, name)
		}
		small = kbin.AppendUvarint(small, uint32(j-i+1))
		for ; i < j; i++ {
			pp := &plan.parts[i]
			if a := got[i]; a != nil && a.entry != nil {
				cut()
				out = append(out, a.entry)
				continue
			}
			hw, lso, logStart := fr.emptyOffsetsLocked(plan, pp)
			small = kbin.AppendInt32(small, pp.key.partition)
			small = kbin.AppendInt16(small, 0)
			small = kbin.AppendInt64(small, hw)
			small = kbin.AppendInt64(small, lso)
			small = kbin.AppendInt64(small, logStart)
			small = kbin.AppendUvarint(small, 0) // aborted transactions: null
			small = kbin.AppendInt32(small, -1)  // preferred read replica
			small = kbin.AppendUvarint(small, 1) // records: empty
			small = append(small, 0)             // tags
		}
		small = append(small, 0) // topic tags
	}
	small = append(small, 0) // response tags: no broker endpoints
	cut()
	return out
}
