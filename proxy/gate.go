package proxy

import (
	"context"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// admission is the outcome of admitting a request: forward it to cluster u
// (as of switch generation gen), or reject it.
type admission struct {
	reject bool
	u      *upstream
	gen    uint64
	// txn is set for transactional requests (txn.go); the writer hands it
	// back with the response.
	txn *txnNote
}

// admit decides what to do with a request: forward it, reject it (REJECT
// gate, or a hold that cannot go on), or park it while a HOLD gate blocks
// its key or a switch drains. A forwarded request is counted in flight
// before admit releases the proxy lock, so a switch that starts afterwards
// waits for it.
//
// Transactions (txn.go): a request that continues an open transaction is
// never parked or rejected — the transaction must be able to end on the
// cluster it lives on — and one that would start a transaction is treated
// like a Produce while a gate blocks Produce or a switch drains. While a
// switch waits for open transactions, Metadata and FindCoordinator are not
// parked either.
//
// Order. Parked requests of one connection stay in arrival order because
// the connection's reader is the one parked: after the gate lifts (or the
// switch flips) they are forwarded one after the other, onto the cluster
// active then. A held request that cannot be held any longer — it outlived
// its hold (holdDeadline), or holding it would take the proxy past
// MaxHeldBytes — is answered with the API's retriable error, and from then
// on every gated request of that connection and API key is answered the
// same way at once, until one of them is admitted: a later request (the
// next batch of the same partition, say) must not reach a cluster before
// an earlier one the client will retry. MaxHold is therefore the longest a
// request waits, and must stay below the client's request timeout
// (request.timeout.ms, 30 s in the Java client; franz-go's produce timeout
// plus its RequestTimeoutOverhead); each retry after it counts against the
// client's delivery timeout (delivery.timeout.ms, 120 s in the Java
// client; franz-go's RecordDeliveryTimeout, unbounded by default).
//
// Modes are per key (Gate.ModeFor): a gate that replaces a HOLD gate and
// still holds the key keeps a parked request parked, even if it refuses
// other keys.
func (p *Proxy) admit(ctx context.Context, c *clientConn, hdr requestHeader, body []byte) (admission, error) {
	key := hdr.Key
	note, txnTimeout := classifyTxn(hdr, body)
	// A held request keeps its frame (and the connection's read buffer)
	// in memory.
	size := int64(len(body)) + int64(hdr.BodyOffset) + 4
	var (
		holding  bool
		bounded  bool      // a request with a retriable error: its hold ends (holdDeadline)
		parkedAt time.Time // when it was parked
		timer    *time.Timer
	)
	defer func() {
		if holding {
			c.held.Add(-1)
			p.m.held.Dec()
			p.m.heldBytes.Sub(float64(size))
			p.heldBytes.Add(-size)
		}
		if timer != nil {
			timer.Stop()
		}
	}()
	reject := func(outcome string) (admission, error) {
		if c.gateAnswered == nil {
			c.gateAnswered = map[int16]string{}
		}
		c.gateAnswered[key] = outcome
		p.m.gated.WithLabelValues(apiName(key), outcome).Inc()
		return admission{reject: true}, nil
	}
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return admission{}, ErrClosed
		}
		ch := p.stateCh
		mode, gated := p.gate.ModeFor(key)
		switching := p.switching
		budget := p.gate.HoldBudget
		if budget <= 0 {
			budget = p.cfg.HoldBudget
		}
		lease := p.holdLease
		if note != nil {
			p.pids.txns.settle(note, txnTimeout)
			switch note.kind {
			case txnContinues:
				gated, switching = false, false
			case txnStarts:
				if !gated {
					mode, gated = p.gate.ModeFor(keyProduce)
				}
			}
		}
		if gated && key == keyFetch && p.gate.FetchWaitsForTransactions && p.pids.txns.openCount() > 0 {
			// An open transaction may need more input to reach its end;
			// its EndTxn passes every gate (txnContinues).
			gated = false
		}
		if switching && !gated && (key == keyMetadata || key == keyFindCoordinator) && p.pids.txns.openCount() > 0 {
			// A transaction's EndTxn may follow a metadata or coordinator
			// lookup on the same connection (one connection per broker in
			// the Java client); parked, the lookup would keep the
			// transaction from ending and the switch from draining. They
			// are answered by the old cluster and drained like the rest.
			switching = false
		}
		if gated && mode == GateReject {
			p.mu.Unlock()
			p.m.gated.WithLabelValues(apiName(key), "reject").Inc()
			if key == keyFetch {
				// A refused Fetch is an empty long poll (rejectResponse):
				// answered after its MaxWait, at most refusedFetchWait,
				// or as soon as the gate changes.
				if err := waitRefusedFetch(ctx, ch, hdr, body); err != nil {
					return admission{}, err
				}
			}
			return admission{reject: true}, nil
		}
		if !gated && !switching {
			c.inflight.Add(1)
			if isLongPoll(key) {
				c.inflightFetch.Add(1)
			}
			p.inflightByKey(key).Add(1)
			adm := admission{u: p.active, gen: p.gen, txn: note}
			p.mu.Unlock()
			delete(c.gateAnswered, key)
			return adm, nil
		}
		p.mu.Unlock()
		if !holding {
			// Only a request that can be answered with a retriable error
			// has a deadline and a byte limit. Others (Metadata, say)
			// parked by a switch wait for it: a switch is bounded by its
			// drain timeout.
			if gateable(key) {
				if o, ok := c.gateAnswered[key]; ok {
					return reject(o)
				}
				if p.heldBytes.Add(size) > p.cfg.MaxHeldBytes {
					p.heldBytes.Add(-size)
					return reject("hold_limit")
				}
				bounded, parkedAt = true, time.Now()
			} else {
				p.heldBytes.Add(size)
			}
			holding = true
			c.held.Add(1)
			p.m.held.Inc()
			p.m.heldBytes.Add(float64(size))
			if gated {
				p.m.gated.WithLabelValues(apiName(key), "hold").Inc()
			}
		}
		var expired <-chan time.Time
		if bounded {
			// Recomputed at every turn: the gate in force now gives the
			// budget, the lease may have been renewed since.
			wait := time.Until(holdDeadline(parkedAt, budget, lease, p.cfg.MaxHold))
			if wait <= 0 {
				return reject("hold_expired")
			}
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			expired = timer.C
		}
		select {
		case <-ch:
		case <-expired:
			// The deadline may have moved (a lease): the next turn decides.
		case <-ctx.Done():
			return admission{}, ctx.Err()
		}
	}
}

// holdDeadline is when a request parked at parkedAt stops being held: a
// budget after it was parked, or later while a hold lease runs (a control
// plane renews it while its cutover progresses), but never more than
// maxHold after it was parked.
func holdDeadline(parkedAt time.Time, budget time.Duration, lease time.Time, maxHold time.Duration) time.Time {
	end := parkedAt.Add(budget)
	if lease.After(end) {
		end = lease
	}
	if limit := parkedAt.Add(maxHold); end.After(limit) {
		end = limit
	}
	return end
}

// Retriable errors a gate answers with, per API. Each is one that every
// major client retries without surfacing it to the application:
//   - Produce: NOT_ENOUGH_REPLICAS — nothing was written, retry after backoff.
//   - Fetch: no error at all — an empty long poll (see rejectResponse and
//     waitRefusedFetch); the code below only marks Fetch gateable.
//   - ListOffsets, OffsetForLeaderEpoch: NOT_LEADER_OR_FOLLOWER —
//     clients refresh metadata and retry.
//   - OffsetCommit, OffsetFetch, TxnOffsetCommit, InitProducerId,
//     AddPartitionsToTxn, AddOffsetsToTxn, EndTxn: COORDINATOR_LOAD_IN_PROGRESS
//     — retried against the same coordinator.
//   - JoinGroup, SyncGroup, Heartbeat, LeaveGroup, FindCoordinator,
//     ConsumerGroupHeartbeat: COORDINATOR_NOT_AVAILABLE — clients
//     rediscover the coordinator and retry.
var gateErrors = map[int16]int16{
	keyProduce:                kerr.NotEnoughReplicas.Code,
	keyFetch:                  kerr.NotLeaderForPartition.Code,
	keyListOffsets:            kerr.NotLeaderForPartition.Code,
	keyOffsetForLeaderEpoch:   kerr.NotLeaderForPartition.Code,
	keyOffsetCommit:           kerr.CoordinatorLoadInProgress.Code,
	keyOffsetFetch:            kerr.CoordinatorLoadInProgress.Code,
	keyTxnOffsetCommit:        kerr.CoordinatorLoadInProgress.Code,
	keyInitProducerID:         kerr.CoordinatorLoadInProgress.Code,
	keyAddPartitionsToTxn:     kerr.CoordinatorLoadInProgress.Code,
	keyAddOffsetsToTxn:        kerr.CoordinatorLoadInProgress.Code,
	keyEndTxn:                 kerr.CoordinatorLoadInProgress.Code,
	keyJoinGroup:              kerr.CoordinatorNotAvailable.Code,
	keySyncGroup:              kerr.CoordinatorNotAvailable.Code,
	keyHeartbeat:              kerr.CoordinatorNotAvailable.Code,
	keyLeaveGroup:             kerr.CoordinatorNotAvailable.Code,
	keyFindCoordinator:        kerr.CoordinatorNotAvailable.Code,
	keyConsumerGroupHeartbeat: kerr.CoordinatorNotAvailable.Code,
}

func gateable(key int16) bool { _, ok := gateErrors[key]; return ok }

func gateableList() string {
	keys := make([]int, 0, len(gateErrors))
	for k := range gateErrors {
		keys = append(keys, int(k))
	}
	sort.Ints(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%d (%s)", k, apiName(int16(k)))
	}
	return strings.Join(parts, ", ")
}

// rejectResponse builds the response a gate answers a request with: the
// same topics and partitions as the request, each with the API's retriable
// error. It returns nil for an acks=0 Produce, which gets no response.
func rejectResponse(hdr requestHeader, body []byte) ([]byte, error) {
	code, ok := gateErrors[hdr.Key]
	if !ok || !hdr.Known {
		return nil, fmt.Errorf("API key %d v%d cannot be rejected", hdr.Key, hdr.Version)
	}
	return answerWith(hdr, body, code, false)
}

// notLeaderResponse answers a request for partitions (Produce, Fetch,
// ListOffsets, OffsetForLeaderEpoch) with NOT_LEADER_OR_FOLLOWER for every
// partition: what a broker that leads none of them says.
func notLeaderResponse(hdr requestHeader, body []byte) ([]byte, error) {
	if !leaderBound(hdr.Key) || !hdr.Known {
		return nil, fmt.Errorf("API key %d v%d is not answered for a leader", hdr.Key, hdr.Version)
	}
	return answerWith(hdr, body, kerr.NotLeaderForPartition.Code, true)
}

// leaderBound reports whether requests of key go to a partition's leader.
func leaderBound(key int16) bool {
	switch key {
	case keyProduce, keyFetch, keyListOffsets, keyOffsetForLeaderEpoch:
		return true
	}
	return false
}

// answerWith builds a response to the request carrying code wherever the
// API has an error code; a Fetch gets an empty answer instead unless
// fetchError.
func answerWith(hdr requestHeader, body []byte, code int16, fetchError bool) ([]byte, error) {
	req := kmsg.RequestForKey(hdr.Key)
	if err := decodeRequest(req, hdr, body); err != nil {
		return nil, err
	}
	resp := req.ResponseKind()
	resp.SetVersion(hdr.Version)
	switch r := req.(type) {
	case *kmsg.ProduceRequest:
		if r.Acks == 0 {
			return nil, nil
		}
		pr := resp.(*kmsg.ProduceResponse)
		for _, t := range r.Topics {
			rt := kmsg.NewProduceResponseTopic()
			rt.Topic, rt.TopicID = t.Topic, t.TopicID
			for _, part := range t.Partitions {
				rp := kmsg.NewProduceResponseTopicPartition()
				rp.Partition, rp.ErrorCode = part.Partition, code
				rt.Partitions = append(rt.Partitions, rp)
			}
			pr.Topics = append(pr.Topics, rt)
		}
	case *kmsg.FetchRequest:
		// No error and no records: the client's position is presented
		// as the end. An error would do harm: kafkajs answers
		// NOT_LEADER_OR_FOLLOWER (and every other leadership error) by
		// rejoining its group from each of its fetchers at once
		// (consumerGroup.recoverFromFetch), and after a switch, when the
		// new cluster does not know its member id, each of those joins
		// obtains a member id of its own: the group gets members nobody
		// heartbeats for, and every rebalance waits for their session
		// timeout (30s) to expire them. Answered empty, kafkajs
		// heartbeats after the fetch, is told UNKNOWN_MEMBER_ID
		// (members.go) and rejoins once.
		fr := resp.(*kmsg.FetchResponse)
		for _, t := range r.Topics {
			rt := kmsg.NewFetchResponseTopic()
			rt.Topic, rt.TopicID = t.Topic, t.TopicID
			for _, part := range t.Partitions {
				rp := kmsg.NewFetchResponseTopicPartition()
				rp.Partition = part.Partition
				rp.HighWatermark, rp.LastStableOffset, rp.LogStartOffset = part.FetchOffset, part.FetchOffset, -1
				// An empty record set, not a null one: librdkafka 2.0
				// fails the whole response on a record set size of -1.
				rp.RecordBatches = []byte{}
				if fetchError {
					rp.ErrorCode, rp.HighWatermark, rp.LastStableOffset = code, -1, -1
				}
				rt.Partitions = append(rt.Partitions, rp)
			}
			fr.Topics = append(fr.Topics, rt)
		}
	case *kmsg.ListOffsetsRequest:
		lr := resp.(*kmsg.ListOffsetsResponse)
		for _, t := range r.Topics {
			rt := kmsg.NewListOffsetsResponseTopic()
			rt.Topic = t.Topic
			for _, part := range t.Partitions {
				rp := kmsg.NewListOffsetsResponseTopicPartition()
				rp.Partition, rp.ErrorCode = part.Partition, code
				rt.Partitions = append(rt.Partitions, rp)
			}
			lr.Topics = append(lr.Topics, rt)
		}
	case *kmsg.OffsetForLeaderEpochRequest:
		or := resp.(*kmsg.OffsetForLeaderEpochResponse)
		for _, t := range r.Topics {
			rt := kmsg.NewOffsetForLeaderEpochResponseTopic()
			rt.Topic = t.Topic
			for _, part := range t.Partitions {
				rp := kmsg.NewOffsetForLeaderEpochResponseTopicPartition()
				rp.Partition, rp.ErrorCode = part.Partition, code
				rt.Partitions = append(rt.Partitions, rp)
			}
			or.Topics = append(or.Topics, rt)
		}
	case *kmsg.OffsetCommitRequest:
		cr := resp.(*kmsg.OffsetCommitResponse)
		for _, t := range r.Topics {
			rt := kmsg.NewOffsetCommitResponseTopic()
			rt.Topic, rt.TopicID = t.Topic, t.TopicID
			for _, part := range t.Partitions {
				rp := kmsg.NewOffsetCommitResponseTopicPartition()
				rp.Partition, rp.ErrorCode = part.Partition, code
				rt.Partitions = append(rt.Partitions, rp)
			}
			cr.Topics = append(cr.Topics, rt)
		}
	case *kmsg.TxnOffsetCommitRequest:
		cr := resp.(*kmsg.TxnOffsetCommitResponse)
		for _, t := range r.Topics {
			rt := kmsg.NewTxnOffsetCommitResponseTopic()
			rt.Topic, rt.TopicID = t.Topic, t.TopicID
			for _, part := range t.Partitions {
				rp := kmsg.NewTxnOffsetCommitResponseTopicPartition()
				rp.Partition, rp.ErrorCode = part.Partition, code
				rt.Partitions = append(rt.Partitions, rp)
			}
			cr.Topics = append(cr.Topics, rt)
		}
	case *kmsg.OffsetFetchRequest:
		fr := resp.(*kmsg.OffsetFetchResponse)
		fr.ErrorCode = code
		// v0-1 have no top-level error: each partition carries it.
		for _, t := range r.Topics {
			rt := kmsg.NewOffsetFetchResponseTopic()
			rt.Topic = t.Topic
			for _, part := range t.Partitions {
				rp := kmsg.NewOffsetFetchResponseTopicPartition()
				rp.Partition, rp.ErrorCode = part, code
				rt.Partitions = append(rt.Partitions, rp)
			}
			fr.Topics = append(fr.Topics, rt)
		}
		for _, g := range r.Groups {
			rg := kmsg.NewOffsetFetchResponseGroup()
			rg.Group, rg.ErrorCode = g.Group, code
			fr.Groups = append(fr.Groups, rg)
		}
	case *kmsg.FindCoordinatorRequest:
		fr := resp.(*kmsg.FindCoordinatorResponse)
		fr.ErrorCode, fr.NodeID = code, -1
		for _, k := range r.CoordinatorKeys {
			c := kmsg.NewFindCoordinatorResponseCoordinator()
			c.Key, c.NodeID, c.ErrorCode = k, -1, code
			fr.Coordinators = append(fr.Coordinators, c)
		}
	case *kmsg.AddPartitionsToTxnRequest:
		ar := resp.(*kmsg.AddPartitionsToTxnResponse)
		ar.ErrorCode = code
		for _, t := range r.Topics {
			rt := kmsg.NewAddPartitionsToTxnResponseTopic()
			rt.Topic = t.Topic
			for _, part := range t.Partitions {
				rp := kmsg.NewAddPartitionsToTxnResponseTopicPartition()
				rp.Partition, rp.ErrorCode = part, code
				rt.Partitions = append(rt.Partitions, rp)
			}
			ar.Topics = append(ar.Topics, rt)
		}
		for _, tx := range r.Transactions {
			rtx := kmsg.NewAddPartitionsToTxnResponseTransaction()
			rtx.TransactionalID = tx.TransactionalID
			for _, t := range tx.Topics {
				rt := kmsg.NewAddPartitionsToTxnResponseTransactionTopic()
				rt.Topic = t.Topic
				for _, part := range t.Partitions {
					rp := kmsg.NewAddPartitionsToTxnResponseTransactionTopicPartition()
					rp.Partition, rp.ErrorCode = part, code
					rt.Partitions = append(rt.Partitions, rp)
				}
				rtx.Topics = append(rtx.Topics, rt)
			}
			ar.Transactions = append(ar.Transactions, rtx)
		}
	default:
		// Group membership and transaction APIs: one top-level error code.
		f := reflect.ValueOf(resp).Elem().FieldByName("ErrorCode")
		if !f.IsValid() || f.Kind() != reflect.Int16 {
			return nil, fmt.Errorf("%s response has no top-level error code", apiName(hdr.Key))
		}
		f.SetInt(int64(code))
	}
	return responseFrame(hdr.Key, hdr.Version, hdr.CorrID, resp.AppendTo(nil)), nil
}

// refusedFetchWait bounds how long a refused Fetch waits before its empty
// answer: a client that heartbeats from its fetch loop (kafkajs) hears of a
// lost membership soon after a switch.
const refusedFetchWait = time.Second

// waitRefusedFetch waits as a broker with nothing to return would: for the
// Fetch's MaxWait (at most refusedFetchWait), or until the proxy's state
// changes (ch: a gate lifted, a switch), so that the client does not spin
// on empty answers and fetches at once when the gate lifts.
func waitRefusedFetch(ctx context.Context, ch <-chan struct{}, hdr requestHeader, body []byte) error {
	wait := refusedFetchWait
	req := kmsg.NewPtrFetchRequest()
	if err := decodeRequest(req, hdr, body); err == nil {
		wait = min(wait, time.Duration(max(req.MaxWaitMillis, 0))*time.Millisecond)
	}
	if wait <= 0 {
		return nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ch:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}
