package proxy

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// respTranslator maps values a cluster reports to what clients see.
type respTranslator struct {
	ctx       context.Context
	p         *Proxy
	u         *upstream
	offset    int32
	refreshed bool
}

func (t *respTranslator) topicID(real [16]byte) [16]byte {
	name, ok := t.u.topicName(real)
	if !ok && !t.refreshed {
		// An id the proxy has not seen in a metadata response yet (a topic
		// created a moment ago): learn the cluster's topics once.
		t.refreshed = true
		rctx, cancel := context.WithTimeout(t.ctx, t.p.cfg.DialTimeout)
		t.u.refreshOnMiss(rctx)
		cancel()
		name, ok = t.u.topicName(real)
	}
	if !ok {
		return real
	}
	v := virtualTopicID(t.p.clusterID, name)
	t.p.topicNames.Store(v, name)
	return v
}

func (t *respTranslator) nodeID(real int32) int32 { return t.p.virtualFor(t.u, real) }

func (t *respTranslator) epoch(e int32) int32 {
	if e < 0 {
		return e
	}
	v := e + t.offset
	t.p.raiseMaxEpoch(v)
	return v
}

func (t *respTranslator) address(v int32) (string, int32, bool) { return t.p.brokerAddress(v) }

// reqTranslator maps values a client sends back to the cluster's own.
type reqTranslator struct {
	ctx    context.Context
	p      *Proxy
	u      *upstream
	offset int32
}

func (t *reqTranslator) topicID(virtual [16]byte) [16]byte {
	n, ok := t.p.topicNames.Load(virtual)
	if !ok {
		return virtual // not one of ours: the cluster answers UNKNOWN_TOPIC_ID
	}
	name := n.(string)
	if real, ok := t.u.topicID(name); ok {
		return real
	}
	rctx, cancel := context.WithTimeout(t.ctx, t.p.cfg.DialTimeout)
	t.u.refreshOnMiss(rctx)
	cancel()
	if real, ok := t.u.topicID(name); ok {
		return real
	}
	return virtual
}

func (t *reqTranslator) nodeID(v int32) int32 {
	if r, ok := t.p.realFor(t.u, v); ok {
		return r
	}
	return v
}

// epoch maps a presented epoch back. An epoch from before the last switch
// to this cluster maps below zero and is sent as -1 ("unknown"), which makes
// the broker skip the fencing check instead of failing the request.
func (t *reqTranslator) epoch(e int32) int32 {
	if e < 0 {
		return e
	}
	if r := e - t.offset; r >= 0 {
		return r
	}
	return -1
}

func (t *reqTranslator) address(int32) (string, int32, bool) { return "", 0, false }

func (p *Proxy) raiseMaxEpoch(v int32) {
	for {
		cur := p.maxEpoch.Load()
		if v <= cur || p.maxEpoch.CompareAndSwap(cur, v) {
			return
		}
	}
}

// rewriteKinds caches, per API key, whether requests and responses of that
// key carry anything to translate.
var rewriteKinds sync.Map // int16 → [2]bool{request, response}

func needsRewrite(key int16) (req, resp bool) {
	if v, ok := rewriteKinds.Load(key); ok {
		k := v.([2]bool)
		return k[0], k[1]
	}
	if r := kmsg.RequestForKey(key); r != nil {
		req = planFor(reflect.TypeOf(r).Elem()) != nil
		resp = planFor(reflect.TypeOf(r.ResponseKind()).Elem()) != nil
	}
	switch key {
	case keyMetadata, keyDescribeCluster, keyFetch, keyDescribeQuorum, keyInitProducerID:
		resp = true
	}
	rewriteKinds.Store(key, [2]bool{req, resp})
	return req, resp
}

// rewritten is a request after rewriteRequest: what to send upstream, or a
// response the proxy answers with itself, and what the response will need.
type rewritten struct {
	frame  []byte // the request to send upstream (nil when local is set)
	local  []byte // a response the proxy answers with instead of forwarding
	expect bool   // a response will come (false for acks=0 Produce)
	// InitProducerId only: the presented id it re-initialises (-1: none)
	// and whether the producer is transactional.
	prevProducerID int64
	transactional  bool
	// member: after a switch, what to learn from a JoinGroup or
	// ConsumerGroupHeartbeat response (groupMembers).
	member *memberNote
	// Produce: the idempotent batches to follow into the response, and the
	// partitions the proxy answers (sequences.go).
	seqs *produceSeqs
	// produce: the walk of frame's body (a Produce v3+ forwarded as the
	// client sent it), for routing.
	produce *walkedProduce
	// fetch: a Fetch request as translated into frame, for routing.
	fetch *kmsg.FetchRequest
}

// rewriteRequest translates a client request for cluster u.
func (p *Proxy) rewriteRequest(ctx context.Context, c *clientConn, u *upstream, hdr requestHeader, frame []byte) (rewritten, error) {
	pass := rewritten{frame: frame, expect: true, prevProducerID: -1}
	if !hdr.Known {
		return pass, nil
	}
	body := frame[hdr.BodyOffset:]
	decoded, usageNote := p.noteUsage(hdr, body)
	local, note := p.checkStale(c, hdr, body, decoded)
	if local != nil {
		return rewritten{local: local}, nil
	}
	pass.member = note.withUsage(usageNote)
	if hdr.Key == keyProduce {
		out, err := p.patchProduceRequest(ctx, u, hdr, frame, body)
		if !errors.Is(err, errNoFastPath) {
			return out, err
		}
		// v0-2: message sets without producer ids; only acks matters.
	}
	reqNeeds, _ := needsRewrite(hdr.Key)
	txnRemap := p.pids.txns.remapping.Load() && isTxnKey(hdr.Key)
	if !reqNeeds && hdr.Key != keyProduce && hdr.Key != keyInitProducerID && !txnRemap {
		return pass, nil
	}
	req := decoded
	if req == nil {
		req = kmsg.RequestForKey(hdr.Key)
		if err := decodeRequest(req, hdr, body); err != nil {
			// The broker will answer this malformed request as it sees fit.
			return pass, nil
		}
	}
	out := rewritten{expect: true, prevProducerID: -1, member: pass.member}
	switch r := req.(type) {
	case *kmsg.ProduceRequest:
		out.expect = r.Acks != 0
		if hdr.Version < 3 { // v3+ took patchProduceRequest
			now := p.usage.now().UnixNano()
			for _, t := range r.Topics {
				p.usage.produced(t.Topic, now)
			}
		}
	case *kmsg.InitProducerIDRequest:
		out.prevProducerID = p.translateInitProducerID(r, u)
		out.transactional = r.TransactionalID != nil
	case *kmsg.FetchRequest:
		if local := c.checkFetchSession(hdr, r); local != nil {
			return rewritten{local: local}, nil
		}
		p.noteFetch(c, r)
		out.fetch = r
	case *kmsg.OffsetForLeaderEpochRequest:
		liftStaleEpochs(r, u)
	}
	if txnRemap {
		if local, err := p.remapTxnRequestOrAnswer(ctx, c, u, hdr, body, req); local != nil || err != nil {
			return rewritten{local: local}, err
		}
	}
	translateMessage(req, &reqTranslator{ctx: ctx, p: p, u: u, offset: u.epochOffset.Load()})
	if r, ok := req.(*kmsg.FetchRequest); ok && c.routesByLeader() {
		liftFetchEpochs(r, u, hdr.Version)
	}
	out.frame = requestFrame(hdr, req.AppendTo(nil))
	return out, nil
}

// patchProduceRequest translates a Produce request in place: topic ids
// (v13+) and the producer ids of record batches, whose sequences it also
// follows (sequences.go). It returns errNoFastPath when the request must
// take the full path.
func (p *Proxy) patchProduceRequest(ctx context.Context, u *upstream, hdr requestHeader, frame, body []byte) (rewritten, error) {
	out := rewritten{frame: frame, expect: true, prevProducerID: -1}
	w, err := walkProduce(body, hdr.Version)
	txnID, acks, topics := w.txnID, w.acks, w.topics
	if err != nil {
		if errors.Is(err, errNoFastPath) {
			return out, err
		}
		// Malformed: forward it as is; the broker answers as it sees fit.
		return out, nil
	}
	out.expect = acks != 0
	if txnID != nil && acks == 0 {
		return out, errTxnAcks0
	}
	tr := &reqTranslator{ctx: ctx, p: p, u: u, offset: u.epochOffset.Load()}
	rewriteTxn := txnID != nil && p.pids.txns.remapping.Load()
	// Batches of idempotent producers are followed into the response
	// (acks=0 has none) and rewritten after a switch.
	followPIDs := txnID == nil && (out.expect || p.pids.rewriting.Load())
	var seqs produceSeqs
	var superseded map[[2]int]bool
	if followPIDs || rewriteTxn {
		superseded = supersededParts(body, topics)
	}
	parts := 0
	now := p.usage.now().UnixNano()
	for ti, t := range topics {
		name := t.name
		if t.idOff < 0 && (followPIDs || rewriteTxn) {
			// t.name aliases the read buffer, which the next request
			// overwrites; the name outlives it in sequence and
			// transaction state.
			name = strings.Clone(name)
		}
		var clientTopicID [16]byte
		if t.idOff >= 0 {
			copy(clientTopicID[:], body[t.idOff:t.idOff+16])
			if n, ok := p.topicNames.Load(clientTopicID); ok {
				name = n.(string)
			}
			real := tr.topicID(clientTopicID)
			copy(body[t.idOff:t.idOff+16], real[:])
		}
		p.usage.produced(name, now)
		parts += len(t.parts)
		if !followPIDs && !rewriteTxn {
			continue
		}
		for pi, part := range t.parts {
			if superseded[[2]int{ti, pi}] {
				seqs.local = append(seqs.local, localPart{topicIndex: ti, partIndex: pi, superseded: true})
				continue
			}
			if rewriteTxn {
				if err := p.rewriteTxnBatches(ctx, *txnID, part.records, u, topicPartition{name, part.partition}); err != nil {
					return out, err
				}
				continue
			}
			batches, answered, code, err := p.rewriteBatches(ctx, part.records, u, topicPartition{name, part.partition}, out.expect)
			if err != nil {
				p.releaseSeqs(&seqs)
				return out, err
			}
			if answered {
				seqs.local = append(seqs.local, localPart{topicIndex: ti, partIndex: pi, topic: t.name,
					topicID: clientTopicID, partition: part.partition, code: code})
				continue
			}
			seqs.batches = append(seqs.batches, batches...)
		}
	}
	switch {
	case len(seqs.local) == 0:
	case len(seqs.local) == parts:
		p.releaseSeqs(&seqs)
		return rewritten{local: localProduceResponse(hdr, seqs.local)}, nil
	default:
		if out.frame, err = dropLocalParts(hdr, body, seqs.local); err != nil {
			p.releaseSeqs(&seqs)
			return out, err
		}
	}
	if len(seqs.batches) > 0 || len(seqs.local) > 0 {
		out.seqs = &seqs
	}
	if len(seqs.local) == 0 {
		out.produce = &w // frame is the walked one
	}
	return out, nil
}

// rewriteResponse translates a response from cluster u for the client.
// A response that cannot be decoded is an error: forwarding it could leak
// an upstream address.
// pr is the queued request the response answers (its header, and for
// InitProducerId the presented id it re-initialised).
func (p *Proxy) rewriteResponse(ctx context.Context, u *upstream, pr *pendingReq, frame []byte) ([]byte, error) {
	hdr := pr.hdr
	if !hdr.Known {
		return frame, nil
	}
	_, respNeeds := needsRewrite(hdr.Key)
	// Produce responses carry broker addresses and leaders from v9 on: kmsg
	// (and brokers like kfake) use the KIP-951 tags at every flexible version.
	if pr.seqs == nil && (!respNeeds || (hdr.Key == keyProduce && hdr.Version < 9)) {
		return frame, nil
	}
	hl, err := responseHeaderLen(hdr.Key, hdr.Version, frame)
	if err != nil {
		return nil, err
	}
	if hdr.Key == keyFetch {
		tr := &respTranslator{ctx: ctx, p: p, u: u, offset: u.epochOffset.Load()}
		if fp, err := patchFetchResponse(frame[hl:], hdr.Version, tr); err == nil {
			if len(fp.wrong) > 0 && p.sessionLost(ctx, u, pr, fp.wrong) {
				return sessionLostResponse(hdr), nil
			}
			return frame, nil
		}
	}
	resp := kmsg.ResponseForKey(hdr.Key)
	if err := decodeResponse(resp, hdr.Key, hdr.Version, frame[hl:]); err != nil {
		return nil, err
	}
	offset := u.epochOffset.Load()
	switch r := resp.(type) {
	case *kmsg.MetadataResponse:
		u.learnMetadata(r)
	case *kmsg.DescribeClusterResponse:
		for _, b := range r.Brokers {
			u.learnBroker(b.NodeID, b.Host, b.Port)
		}
	case *kmsg.FetchResponse:
		if wrong := wrongLeaders(r); len(wrong) > 0 && p.sessionLost(ctx, u, pr, wrong) {
			return sessionLostResponse(hdr), nil
		}
		rewriteFetchEpochs(r, offset, p)
	case *kmsg.ShareFetchResponse:
		rewriteShareFetchEpochs(r, offset, p)
	case *kmsg.FindCoordinatorResponse:
		if hdr.Version >= 4 {
			// The top-level node id does not exist from v4 on (batched
			// coordinators); decoded as 0 it would be taken for node 0.
			r.NodeID = -1
		}
	case *kmsg.DescribeQuorumResponse:
		// Controller ids and raft epochs are not broker state clients cache
		// or dial; only the controllers' addresses are removed.
		hideQuorumListeners(r)
		out := make([]byte, 0, len(frame))
		out = append(out, frame[:hl]...)
		return r.AppendTo(out), nil
	case *kmsg.InitProducerIDResponse:
		if r.ErrorCode == 0 && r.ProducerID >= 0 && !pr.transactional {
			r.ProducerID = p.pids.issued(u, pr.prevProducerID, r.ProducerID, r.ProducerEpoch)
		}
	}
	translateMessage(resp, &respTranslator{ctx: ctx, p: p, u: u, offset: offset})
	switch r := resp.(type) {
	case *kmsg.ProduceResponse:
		if pr.seqs != nil {
			p.settleProduce(r, pr.seqs)
		}
		if pr.stable {
			hideLeaderHints(r)
		}
	case *kmsg.MetadataResponse:
		if r.ClusterID != nil {
			r.ClusterID = &p.clusterID
		}
		if pr.stable {
			p.stabilizeMetadata(r)
		}
	case *kmsg.DescribeClusterResponse:
		r.ClusterID = p.clusterID
	}
	out := make([]byte, 0, len(frame)+64)
	out = append(out, frame[:hl]...)
	return resp.AppendTo(out), nil
}
