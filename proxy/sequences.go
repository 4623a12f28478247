package proxy

// Sequences of idempotent producers across a switch.
//
// A cluster that does not know a producer on a partition accepts its first
// batch there whatever its sequence (Kafka's ProducerAppendInfo.checkSequence
// skips the check when it has no epoch for the producer). After a switch
// every producer is unknown to the new cluster, so the new cluster cannot
// tell a batch that follows on from what the old cluster wrote from one
// that was already written there (a resend after a lost acknowledgement) or
// one that overtook an earlier batch (a client that resends out of order
// after an error): both would be written, duplicating or reordering
// records, and every later batch would be judged against the wrong start.
//
// The proxy therefore does that check itself, once per producer and
// partition, for the first batch the new cluster sees:
//
//   - it follows every idempotent batch into its Produce response and keeps,
//     per producer and partition, the sequence after the last batch a
//     cluster acknowledged (in the client's numbering; ackedSeq);
//   - on a cluster that did not issue the producer's id, the sequence the
//     client should send next on a partition is presented to that cluster
//     as 0. A first batch that starts there is forwarded as the partition's
//     probe; batches behind it wait for the probe's response (one round
//     trip, no error to the client); once a cluster acknowledged the probe
//     it checks the order itself and the proxy only rewrites;
//   - a first batch wholly below that sequence was written before: the
//     proxy answers it as written (error none, offset unknown — what Kafka
//     answers with DUPLICATE_SEQUENCE_NUMBER, and what every client takes
//     as success); any other first batch is answered
//     OUT_OF_ORDER_SEQUENCE_NUMBER, which is what the old cluster would
//     have said, and the client resends in order or bumps its epoch.
//
// A partition answered by the proxy is removed from the request and its
// answer merged into the cluster's response.
//
// No batch waits without a bound: one behind a probe is answered
// NOT_ENOUGH_REPLICAS (nothing written, retriable) once the hold budget has
// passed without the probe's answer (admitFirst), and a probe whose request
// is refused before it is forwarded (a later batch does not parse, say) is
// released at once (rewriteBatches). A partition named twice in one
// request is forwarded once, its last occurrence, as Kafka keeps only that
// one (supersededParts), so a request never waits for its own answer.

import (
	"context"
	"encoding/binary"
	"math"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"
)

// batchLastOffsetDeltaOff is the offset of lastOffsetDelta in a v2 batch.
const batchLastOffsetDeltaOff = 23

// ackedSeq is the client sequence after the last batch a cluster wrote for
// a producer on a partition, in the client epoch it belongs to.
type ackedSeq struct {
	epoch int16
	next  int32
}

// ackedSeqs holds a producer's ackedSeq per partition: a short list for
// the few partitions most producers write to (a map costs ten times the
// memory of one entry, and the proxy follows up to MaxProducerIDs
// producers), a map once there are more.
type ackedSeqs struct {
	few  []ackedPart
	many map[topicPartition]ackedSeq
}

type ackedPart struct {
	tp topicPartition
	ackedSeq
}

// ackedFew is how many partitions ackedSeqs lists before it takes a map.
const ackedFew = 8

func (a *ackedSeqs) get(tp topicPartition) (ackedSeq, bool) {
	if a.many != nil {
		s, ok := a.many[tp]
		return s, ok
	}
	for _, p := range a.few {
		if p.tp == tp {
			return p.ackedSeq, true
		}
	}
	return ackedSeq{}, false
}

func (a *ackedSeqs) set(tp topicPartition, s ackedSeq) {
	if a.many != nil {
		a.many[tp] = s
		return
	}
	for i := range a.few {
		if a.few[i].tp == tp {
			a.few[i].ackedSeq = s
			return
		}
	}
	if len(a.few) < ackedFew {
		a.few = append(a.few, ackedPart{tp, s})
		return
	}
	a.many = make(map[topicPartition]ackedSeq, 2*ackedFew)
	for _, p := range a.few {
		a.many[p.tp] = p.ackedSeq
	}
	a.many[tp] = s
	a.few = nil
}

// seqGate is one partition of a producer on a cluster that did not issue
// the client's id.
type seqGate struct {
	// base is the client sequence presented to the cluster as 0: the one
	// after the last batch acknowledged before (0 in a new client epoch).
	base int32
	// established: the cluster acknowledged a batch here and checks the
	// order from now on.
	established bool
	// probe is open while the first batch is in flight.
	probe chan struct{}
}

// sentBatch is one idempotent batch of a Produce request, followed into the
// response.
type sentBatch struct {
	e           *producerEntry
	tp          topicPartition
	epoch       int16 // the client's
	first, last int32 // client sequences
	// rm and gate are set when the batch is its partition's probe.
	rm   *remappedProducer
	gate *seqGate
}

// localPart is a partition the proxy answers itself, or drops.
type localPart struct {
	topicIndex, partIndex int // in the client's request
	topic                 string
	topicID               [16]byte // as the client sent it (v13+)
	partition             int32
	code                  int16
	// superseded: the request names the partition again later; dropped
	// without an answer of its own (supersededParts).
	superseded bool
}

// produceSeqs is what a Produce request's response needs from its request.
type produceSeqs struct {
	batches []sentBatch
	local   []localPart
}

// addSeq adds n to a sequence; sequences wrap from MaxInt32 to 0.
func addSeq(seq int32, n int64) int32 {
	return int32((int64(seq) + n) % (math.MaxInt32 + 1))
}

// seqBefore reports whether sequence a comes before b, within half the
// sequence space.
func seqBefore(a, b int32) bool {
	d := (int64(b) - int64(a) + math.MaxInt32 + 1) % (math.MaxInt32 + 1)
	return d > 0 && d < 1<<30
}

// ackedNext is the client sequence after the last batch of the producer a
// cluster acknowledged on tp in the given client epoch (0 if none).
func (ids *producerIDs) ackedNext(e *producerEntry, tp topicPartition, epoch int16) int32 {
	ids.mu.Lock()
	defer ids.mu.Unlock()
	if a, ok := e.acked.get(tp); ok && a.epoch == epoch {
		return a.next
	}
	return 0
}

// seqGateFor returns the producer's id and epoch on the cluster for a batch in
// client epoch cepoch, and the partition's gate. A client epoch above the
// highest seen is a client that bumped its epoch itself (sarama does, after
// OUT_OF_ORDER_SEQUENCE_NUMBER, without InitProducerId): its sequences
// restart at 0 on every partition, and the cluster's epoch is bumped with
// it. stale is set for a batch of an epoch older than the current one (the
// cluster fences it; the proxy does not check its sequence).
func (p *Proxy) seqGateFor(rm *remappedProducer, e *producerEntry, tp topicPartition, cepoch int16) (id int64, epoch int16, g *seqGate, stale bool) {
	acked := p.pids.ackedNext(e, tp, cepoch)
	rm.mu.Lock()
	defer rm.mu.Unlock()
	if rm.clientEpoch < 0 {
		rm.clientEpoch, rm.lastClientEpoch = cepoch, cepoch
	}
	if cepoch > rm.lastClientEpoch {
		rm.lastClientEpoch = cepoch
		rm.parts = map[topicPartition]*seqGate{}
	}
	id, epoch = rm.id, rm.epoch+(cepoch-rm.clientEpoch)
	if cepoch < rm.lastClientEpoch {
		// A batch of an older epoch, still on its way after the client
		// bumped: rebased on what its own epoch acknowledged, and kept out
		// of rm.parts, which holds the current epoch's gates (its base
		// there would make the new epoch's first batch, at sequence 0,
		// look like a duplicate).
		return id, epoch, &seqGate{base: acked}, true
	}
	g, ok := rm.parts[tp]
	if !ok {
		g = &seqGate{base: acked}
		rm.parts[tp] = g
	}
	return id, epoch, g, false
}

// admitFirst decides a partition's first batch on a cluster that has not
// acknowledged the producer there yet: forward it (as the probe, or after
// the probe was acknowledged), or answer it with the returned code.
//
// A batch behind a probe in flight waits for the probe's answer, at most
// the hold budget (Config.HoldBudget, below the clients' request
// timeout): then it is answered NOT_ENOUGH_REPLICAS — nothing written,
// retried by every client — rather than left hanging on an answer that
// may never come (metric producer_sequence_checks_total{outcome="wait_expired"}).
func (p *Proxy) admitFirst(ctx context.Context, rm *remappedProducer, g *seqGate, sb *sentBatch) (forward bool, code int16, err error) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		rm.mu.Lock()
		if g.established {
			rm.mu.Unlock()
			return true, 0, nil
		}
		if ch := g.probe; ch != nil {
			rm.mu.Unlock()
			if timer == nil {
				p.m.seqChecks.WithLabelValues("waited").Inc()
				timer = time.NewTimer(p.cfg.HoldBudget)
			}
			select {
			case <-ch:
				continue
			case <-timer.C:
				p.m.seqChecks.WithLabelValues("wait_expired").Inc()
				p.log.Warn("batch behind the first batch of its partition after a switch: no answer to that one within the hold budget; answered with a retriable error",
					zap.String("topic", sb.tp.topic), zap.Int32("partition", sb.tp.partition),
					zap.Int64("producer_id", sb.e.presented), zap.Duration("hold_budget", p.cfg.HoldBudget))
				return false, gateErrors[keyProduce], nil
			case <-ctx.Done():
				return false, 0, ctx.Err()
			}
		}
		switch {
		case sb.first == g.base:
			g.probe = make(chan struct{})
			sb.rm, sb.gate = rm, g
			rm.mu.Unlock()
			return true, 0, nil
		default:
			rm.mu.Unlock()
			return false, p.refuseFirst(sb, g.base), nil
		}
	}
}

// refuseFirst answers a partition's first batch on a cluster that does not
// start at want, the sequence after the last one acknowledged: wholly below
// it, the batch was written before and is answered as written (0); any
// other, OUT_OF_ORDER_SEQUENCE_NUMBER, as the old cluster would have.
func (p *Proxy) refuseFirst(sb *sentBatch, want int32) int16 {
	if seqBefore(sb.last, want) {
		p.m.seqChecks.WithLabelValues("duplicate").Inc()
		p.logSeqCheck("duplicate", sb, want)
		return 0
	}
	p.m.seqChecks.WithLabelValues("out_of_order").Inc()
	p.logSeqCheck("out_of_order", sb, want)
	return kerr.OutOfOrderSequenceNumber.Code
}

func (p *Proxy) logSeqCheck(outcome string, sb *sentBatch, want int32) {
	p.log.Warn("first batch after a switch does not follow on",
		zap.String("outcome", outcome), zap.String("topic", sb.tp.topic), zap.Int32("partition", sb.tp.partition),
		zap.Int64("producer_id", sb.e.presented), zap.Int16("epoch", sb.epoch),
		zap.Int32("first_sequence", sb.first), zap.Int32("last_sequence", sb.last), zap.Int32("expected_sequence", want))
}

// settleBatch records a batch's outcome: the acknowledged sequence, and for
// a probe, whether the cluster now knows the producer on the partition.
func (p *Proxy) settleBatch(sb *sentBatch, code int16) {
	written := code == 0 || code == kerr.DuplicateSequenceNumber.Code
	if written {
		next := addSeq(sb.last, 1)
		p.pids.mu.Lock()
		// A batch of an older client epoch, written late (stale), must not
		// replace what the newer epoch acknowledged: the next switch would
		// judge that epoch's resends against 0.
		if a, ok := sb.e.acked.get(sb.tp); !ok || sb.epoch > a.epoch || (sb.epoch == a.epoch && seqBefore(a.next, next)) {
			sb.e.acked.set(sb.tp, ackedSeq{epoch: sb.epoch, next: next})
		}
		p.pids.mu.Unlock()
	}
	if sb.gate != nil {
		sb.rm.mu.Lock()
		if written {
			sb.gate.established = true
		}
		if sb.gate.probe != nil {
			close(sb.gate.probe)
			sb.gate.probe = nil
		}
		sb.rm.mu.Unlock()
		sb.gate = nil
	}
}

// releaseSeqs ends the probes of a request whose response will not be
// read (the connection failed): the batches behind them decide again.
func (p *Proxy) releaseSeqs(s *produceSeqs) {
	if s == nil {
		return
	}
	for i := range s.batches {
		if s.batches[i].gate != nil {
			p.settleBatch(&s.batches[i], -1)
		}
	}
}

// settleProduce follows a Produce response into the request's batches and
// adds the partitions the proxy answered. The response's topic ids are the
// client's (translated) ones.
func (p *Proxy) settleProduce(r *kmsg.ProduceResponse, s *produceSeqs) {
	type key struct {
		topic string
		part  int32
	}
	codes := make(map[key]int16, len(s.batches))
	for _, t := range r.Topics {
		name := t.Topic
		if name == "" {
			if n, ok := p.topicNames.Load(t.TopicID); ok {
				name = n.(string)
			}
		}
		for _, part := range t.Partitions {
			codes[key{name, part.Partition}] = part.ErrorCode
		}
	}
	for i := range s.batches {
		sb := &s.batches[i]
		code, ok := codes[key{sb.tp.topic, sb.tp.partition}]
		if !ok {
			code = -1 // not answered: not written
		}
		p.settleBatch(sb, code)
	}
	addLocalParts(r, s.local)
}

// addLocalParts adds the partitions the proxy answered to a response.
func addLocalParts(r *kmsg.ProduceResponse, local []localPart) {
	for _, lp := range local {
		if lp.superseded {
			continue
		}
		var rt *kmsg.ProduceResponseTopic
		for i := range r.Topics {
			if (r.Version >= 13 && r.Topics[i].TopicID == lp.topicID) || (r.Version < 13 && r.Topics[i].Topic == lp.topic) {
				rt = &r.Topics[i]
				break
			}
		}
		if rt == nil {
			t := kmsg.NewProduceResponseTopic()
			t.Topic, t.TopicID = lp.topic, lp.topicID
			r.Topics = append(r.Topics, t)
			rt = &r.Topics[len(r.Topics)-1]
		}
		rt.Partitions = append(rt.Partitions, localProducePartition(lp))
	}
}

func localProducePartition(lp localPart) kmsg.ProduceResponseTopicPartition {
	rp := kmsg.NewProduceResponseTopicPartition()
	rp.Partition, rp.ErrorCode = lp.partition, lp.code
	rp.BaseOffset, rp.LogAppendTime, rp.LogStartOffset = -1, -1, -1
	return rp
}

// localProduceResponse answers a Produce request every partition of which
// the proxy answers itself.
func localProduceResponse(hdr requestHeader, local []localPart) []byte {
	r := kmsg.NewPtrProduceResponse()
	r.Version = hdr.Version
	addLocalParts(r, local)
	return responseFrame(keyProduce, hdr.Version, hdr.CorrID, r.AppendTo(nil))
}

// dropLocalParts re-encodes a Produce request without the partitions the
// proxy answers. body already carries the cluster's topic ids and batches.
func dropLocalParts(hdr requestHeader, body []byte, local []localPart) ([]byte, error) {
	req := kmsg.NewPtrProduceRequest()
	if err := decodeRequest(req, hdr, body); err != nil {
		return nil, err
	}
	drop := make(map[[2]int]bool, len(local))
	for _, lp := range local {
		drop[[2]int{lp.topicIndex, lp.partIndex}] = true
	}
	topics := req.Topics[:0]
	for ti, t := range req.Topics {
		parts := t.Partitions[:0]
		for pi, part := range t.Partitions {
			if !drop[[2]int{ti, pi}] {
				parts = append(parts, part)
			}
		}
		if len(parts) > 0 {
			t.Partitions = parts
			topics = append(topics, t)
		}
	}
	req.Topics = topics
	return requestFrame(hdr, req.AppendTo(nil)), nil
}

// supersededParts returns the occurrences of a partition that a Produce
// request names again later (nil when none does). Kafka keeps only the
// last: KafkaApis.handleProduceRequest collects the request's partitions
// in a map keyed by partition, so an earlier occurrence is replaced before
// anything is appended, and the response, built from that map, answers
// the partition once. The proxy forwards only the last occurrence too,
// which is also what its sequence check needs: one first batch per
// producer and partition, never a second one waiting behind the first in
// the same request for an answer that request would carry.
func supersededParts(body []byte, topics []produceTopic) map[[2]int]bool {
	n := 0
	for _, t := range topics {
		n += len(t.parts)
	}
	if n < 2 {
		return nil
	}
	type at struct {
		ti, pi int
	}
	var small [32]at
	all := small[:0]
	for ti, t := range topics {
		for pi := range t.parts {
			all = append(all, at{ti, pi})
		}
	}
	same := func(a, b at) bool {
		ta, tb := topics[a.ti], topics[b.ti]
		if ta.parts[a.pi].partition != tb.parts[b.pi].partition {
			return false
		}
		if ta.idOff >= 0 {
			return string(body[ta.idOff:ta.idOff+16]) == string(body[tb.idOff:tb.idOff+16])
		}
		return ta.name == tb.name
	}
	var out map[[2]int]bool
	mark := func(a at) {
		if out == nil {
			out = map[[2]int]bool{}
		}
		out[[2]int{a.ti, a.pi}] = true
	}
	if len(all) <= 32 {
		for i, a := range all {
			for _, b := range all[i+1:] {
				if same(a, b) {
					mark(a)
					break
				}
			}
		}
		return out
	}
	type key struct {
		name      string
		partition int32
	}
	last := make(map[key]at, len(all))
	keyOf := func(a at) key {
		t := topics[a.ti]
		k := key{name: t.name, partition: t.parts[a.pi].partition}
		if t.idOff >= 0 {
			k.name = string(body[t.idOff : t.idOff+16])
		}
		return k
	}
	for _, a := range all {
		last[keyOf(a)] = a
	}
	for _, a := range all {
		if last[keyOf(a)] != a {
			mark(a)
		}
	}
	return out
}

// batchSeqs reads a batch's client epoch, first and last sequence.
func batchSeqs(batch []byte) (epoch int16, first, last int32) {
	epoch = int16(binary.BigEndian.Uint16(batch[batchEpochOff:]))
	first = int32(binary.BigEndian.Uint32(batch[batchSeqOff:]))
	delta := int32(binary.BigEndian.Uint32(batch[batchLastOffsetDeltaOff:]))
	return epoch, first, addSeq(first, int64(max(delta, 0)))
}
