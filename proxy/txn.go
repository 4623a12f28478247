package proxy

// Transactional producers across a switch.
//
// InitProducerId: v0-5 (with a transactional id). AddPartitionsToTxn: v0-5
// (v4+: the batched form brokers use to verify, ids remapped per
// transaction). AddOffsetsToTxn: v0-4. TxnOffsetCommit: v0-5. EndTxn: v0-5
// (v5: KIP-890 part 2, the response carries the bumped epoch). Produce: v3+
// (the transactional id is the request's first field).
//
// A transactional producer holds an id and epoch from one cluster's
// transaction coordinator, and its transactions live on that cluster: a
// switch can only land between two of them. The proxy therefore follows
// each transactional id (txnTable) and knows whether a transaction is open:
//
//   - it opens when the cluster accepts the first request that adds to it
//     after InitProducerId or EndTxn: AddPartitionsToTxn or
//     AddOffsetsToTxn answered without error, a transactional Produce that
//     appended to a partition (KIP-890 part 2 adds partitions implicitly,
//     Produce v12+) or a TxnOffsetCommit that committed one (v5+ adds the
//     group implicitly). A request the cluster refused opens nothing: a
//     client cannot hold switches off with transactions the cluster never
//     began. Until its answer the request is simply in flight, which a
//     switch's drain waits for like any other;
//   - it closes when an EndTxn or an InitProducerId for the id succeeds
//     (the latter aborts whatever was open), or when the producer's
//     transaction timeout plus a margin for the coordinator's abort sweep
//     has passed since it opened — the coordinator has aborted it by then.
//     The timeout is the one the producer's last accepted InitProducerId
//     asked for (a refused one, say INVALID_TRANSACTION_TIMEOUT, changes
//     nothing), capped at Config.MaxTransactionTimeout (Kafka's
//     transaction.max.timeout.ms default, 15 minutes: a broker refuses
//     longer ones); 60 s when the proxy did not see it.
//
// A transactional Produce with acks=0 gets no answer, so the proxy could
// not tell whether it opened a transaction: it closes the connection
// instead of forwarding it (no client library sends one; transactions
// require acks=all).
//
// Admission (admit) uses it: while a gate blocks Produce, or a switch
// drains, a request that continues an open transaction — including its
// EndTxn — passes to the cluster the transaction lives on, and a request
// that would start one is gated like a Produce (held, or answered with the
// API's retriable error). A request that would start a transaction and is
// parked is woken when another of the transaction's requests, forwarded
// before, is accepted: it then continues the transaction (a client may send
// a transaction's first Produce to several brokers at once). An open
// transaction counts as one Produce and one EndTxn in flight
// (Status.InFlightByAPI): its records and its end are still to come, so a
// control plane waiting for in-flight Produce to reach zero waits for open
// transactions to end, and tells them apart by the EndTxn count. Switch waits for them within its drain timeout and fails
// with ErrOpenTransactions, staying on the old cluster, if one is still
// open then.
//
// After a switch the client's next transaction runs on the new cluster
// without the application re-creating its producer: the first request of
// the producer that reaches the new cluster makes the proxy run
// InitProducerId with the transactional id (and the client's transaction
// timeout) there, and from then on the producer id and epoch are rewritten
// in Produce batch headers (with sequences rebased to start at 0 per
// partition and the CRC recomputed, as for idempotent producers),
// AddPartitionsToTxn (every version), AddOffsetsToTxn, TxnOffsetCommit,
// EndTxn and InitProducerId requests. The client keeps the id it holds; its
// epoch is shown as the real epoch plus a delta, so the epochs it sees
// never go backwards: an EndTxn v5 response (KIP-890 part 2 bumps the
// epoch at every transaction end, and hands out a new producer id when the
// epochs run out) is mapped back to the client's id with its epoch moved
// on by as much (by one for a new id). Should the client's own epochs run
// out, it is given the cluster's ids, as a broker would give a new id. When
// the client re-initialises (InitProducerId) on the new cluster it is given
// that cluster's id as is, and nothing is rewritten for it any more.
// FindCoordinator for the transactional id is translated like any other.
// While a switch waits for open transactions, Metadata and FindCoordinator
// are not parked (see admit): a client may need them before its EndTxn.
//
// The table forgets a transactional id unused for 7 days, as brokers do.
// An id seen for the first time is taken to be native to the cluster its
// first request goes to (a proxy restarted mid-life knows no better).
// Requests the cluster refuses add no id to the table.
//
// Not covered: DescribeProducers, DescribeTransactions and ListTransactions
// show the cluster's own ids. A transaction whose first request's answer
// the proxy never read (the connection failed, or a switch's drain
// deadline closed it) is not known open: like any request in flight past
// the deadline, the client retries it, on the new cluster after a switch,
// and the old cluster's coordinator aborts what it may have begun when its
// timeout passes.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"
)

const (
	// defaultTxnTimeout is assumed for a producer whose InitProducerId the
	// proxy did not see (Kafka's default transaction.timeout.ms).
	defaultTxnTimeout = 60 * time.Second
	// txnAbortMargin covers the coordinator's sweep for timed-out
	// transactions (transaction.abort.timed.out.transaction.cleanup.interval.ms,
	// 10 s by default).
	txnAbortMargin = 15 * time.Second
	// txnIDExpiry: a transactional id unused this long is forgotten, as
	// brokers forget it (transactional.id.expiration.ms, 7 days by
	// default), so ids that applications mint per run or per checkpoint
	// do not accumulate.
	txnIDExpiry = 7 * 24 * time.Hour
)

// errTxnAcks0 refuses a transactional Produce with acks=0 (see above).
var errTxnAcks0 = errors.New("transactional Produce with acks=0: the proxy could not learn whether it opened a transaction (transactions require acks=all)")

// txnKind is what a request does to its producer's transaction.
type txnKind int

const (
	txnNone      txnKind = iota
	txnAdds              // adds to the transaction (opens it if none is open)
	txnEnds              // EndTxn
	txnReinit            // InitProducerId with the transactional id
	txnContinues         // decided at admission: adds to an open transaction
	txnStarts            // decided at admission: would open a transaction
)

// txnNote is what admission learnt about a transactional request; the
// writer hands it back with the response.
type txnNote struct {
	id string
	// req is what the request does (txnAdds, txnEnds, txnReinit); kind is
	// what admission made of it, given the producer's state.
	req  txnKind
	kind txnKind
	// gen is the producer's transaction generation when the request was
	// admitted: a response closes only the transaction it belongs to.
	gen uint64
	// timeout is the transaction timeout an InitProducerId asks for, taken
	// on only if the cluster accepts it.
	timeout time.Duration
}

// txnTable follows every transactional producer seen through the proxy.
// Lock order: Proxy.mu before txnTable.mu.
type txnTable struct {
	// remapping is true once a switch happened while transactional
	// producers were known: until then nothing transactional is rewritten.
	remapping atomic.Bool

	mu         sync.Mutex
	byID       map[string]*txnProducer
	open       int
	swept      time.Time     // the last look for expired ids
	maxTimeout time.Duration // Config.MaxTransactionTimeout
	clock      clock
}

// txnProducer is one transactional id.
type txnProducer struct {
	id       string
	timeout  time.Duration
	lastUsed time.Time
	open     bool
	gen      uint64      // bumped when a transaction opens
	expiry   func() bool // stops the open transaction's timeout

	// seen is false until the producer's first request was forwarded: the
	// cluster that request went to issued the ids the client holds.
	seen bool
	// native is the cluster whose ids the client holds and which needs no
	// rewriting; nil after a switch away from it.
	native *upstream
	// m maps the client's ids onto another cluster.
	m *txnMapping
	// initMu serialises InitProducerId on a new cluster for this producer.
	initMu sync.Mutex
}

// txnMapping is a producer's identity on a cluster that did not issue the
// ids the client holds. Guarded by txnTable.mu.
type txnMapping struct {
	on        *upstream
	presID    int64 // the id the client holds
	presEpoch int16 // the epoch the client holds now
	realID    int64
	realEpoch int16
	base      map[topicPartition]int32 // sequence base per partition at realEpoch
	// ends counts the EndTxn v5+ responses that moved the identity on
	// (KIP-890 part 2).
	ends int
}

func newTxnTable(maxTimeout time.Duration) *txnTable {
	return &txnTable{byID: map[string]*txnProducer{}, maxTimeout: maxTimeout, clock: realClock{}}
}

// classify reads what a request does to a transaction, without copying
// record data. It returns nil for requests that are not transactional or
// do not parse (the broker answers those as it sees fit).
func classifyTxn(hdr requestHeader, body []byte) (*txnNote, time.Duration) {
	if !hdr.Known {
		return nil, 0
	}
	switch hdr.Key {
	case keyProduce:
		if hdr.Version < 3 {
			return nil, 0
		}
		b := kbin.Reader{Src: body}
		var id *string
		if hdr.Version >= 9 {
			id = b.CompactNullableString()
		} else {
			id = b.NullableString()
		}
		if id == nil || !b.Ok() {
			return nil, 0
		}
		return &txnNote{id: *id, req: txnAdds}, 0
	case keyAddPartitionsToTxn, keyAddOffsetsToTxn, keyTxnOffsetCommit, keyEndTxn, keyInitProducerID:
	default:
		return nil, 0
	}
	req := kmsg.RequestForKey(hdr.Key)
	if err := decodeRequest(req, hdr, body); err != nil {
		return nil, 0
	}
	switch r := req.(type) {
	case *kmsg.AddPartitionsToTxnRequest:
		if hdr.Version >= 4 {
			// The batched form is sent by brokers to verify, never by a
			// producer adding to its own transaction.
			return nil, 0
		}
		return &txnNote{id: r.TransactionalID, req: txnAdds}, 0
	case *kmsg.AddOffsetsToTxnRequest:
		return &txnNote{id: r.TransactionalID, req: txnAdds}, 0
	case *kmsg.TxnOffsetCommitRequest:
		return &txnNote{id: r.TransactionalID, req: txnAdds}, 0
	case *kmsg.EndTxnRequest:
		return &txnNote{id: r.TransactionalID, req: txnEnds}, 0
	case *kmsg.InitProducerIDRequest:
		if r.TransactionalID == nil {
			return nil, 0
		}
		return &txnNote{id: *r.TransactionalID, req: txnReinit}, time.Duration(r.TransactionTimeoutMillis) * time.Millisecond
	}
	return nil, 0
}

func (t *txnTable) producerLocked(id string) *txnProducer {
	e, ok := t.byID[id]
	if !ok {
		e = &txnProducer{id: id, timeout: defaultTxnTimeout, lastUsed: t.clock.Now()}
		t.byID[id] = e
	}
	return e
}

// settle decides, under Proxy.mu, how admission treats a transactional
// request: it continues an open transaction (never gated), would start one
// (gated like a Produce), or neither. The note is updated in place;
// timeout is the transaction timeout an InitProducerId asks for. An id the
// table does not know is not added: only the cluster's answer does that.
func (t *txnTable) settle(n *txnNote, timeout time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.clock.Now()
	if now.Sub(t.swept) > time.Hour {
		t.swept = now
		for id, e := range t.byID {
			if !e.open && now.Sub(e.lastUsed) > txnIDExpiry {
				delete(t.byID, id)
			}
		}
	}
	if n.req == txnReinit {
		n.timeout = timeout
	}
	e, known := t.byID[n.id]
	if known {
		e.lastUsed = now
		n.gen = e.gen
	}
	switch {
	case known && e.open:
		n.kind = txnContinues
	case n.req == txnAdds:
		n.kind = txnStarts
	default:
		// EndTxn or InitProducerId with nothing open: an ordinary request.
		n.kind = txnNone
	}
}

// opened opens the producer's transaction once the cluster accepted a
// request that adds to it, unless one is open already. An open transaction
// counts as one Produce and one EndTxn in flight on p, and ends by itself
// (close) once the producer's transaction timeout, capped at maxTimeout,
// and txnAbortMargin have passed. Requests that would have started a
// transaction and are parked (a Produce gate, a switch draining) are woken
// to be admitted as continuing it. Called without Proxy.mu.
func (t *txnTable) opened(p *Proxy, id string) {
	t.mu.Lock()
	e := t.producerLocked(id)
	e.lastUsed = t.clock.Now()
	if e.open {
		t.mu.Unlock()
		return
	}
	e.open = true
	e.gen++
	t.open++
	p.inflightByKey(keyProduce).Add(1)
	p.inflightByKey(keyEndTxn).Add(1)
	gen := e.gen
	e.expiry = t.clock.AfterFunc(min(e.timeout, t.maxTimeout)+txnAbortMargin, func() { t.close(p, id, gen) })
	t.mu.Unlock()

	p.mu.Lock()
	if p.switching || p.gate.Blocks(keyProduce) {
		p.broadcastLocked()
	}
	p.mu.Unlock()
}

// initAccepted records, once the cluster accepted a transactional
// producer's InitProducerId, the transaction timeout it asked for (capped
// at maxTimeout), and closes what was open.
func (t *txnTable) initAccepted(p *Proxy, n *txnNote) {
	t.close(p, n.id, n.gen)
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.producerLocked(n.id)
	if n.timeout > 0 {
		e.timeout = min(n.timeout, t.maxTimeout)
	}
}

// close ends the producer's open transaction of generation gen, if it is
// still open.
func (t *txnTable) close(p *Proxy, id string, gen uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.byID[id]
	if !ok || !e.open || e.gen != gen {
		return
	}
	e.open = false
	if e.expiry != nil {
		e.expiry()
		e.expiry = nil
	}
	t.open--
	p.inflightByKey(keyProduce).Add(-1)
	p.inflightByKey(keyEndTxn).Add(-1)
}

// openIDs returns the transactional ids with a transaction open, sorted.
func (t *txnTable) openIDs() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.open == 0 {
		return nil
	}
	ids := make([]string, 0, t.open)
	for id, e := range t.byID {
		if e.open {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

func (t *txnTable) openCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.open
}

// markSwitched is called by a switch to cluster to, after the drain: every
// producer needs a fresh identity there (its epoch may have moved on
// elsewhere), obtained on its next request.
func (t *txnTable) markSwitched(to *upstream) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, e := range t.byID {
		e.seen = true
		if e.native != to {
			e.native = nil
		}
		if e.m != nil && e.m.on != to {
			e.m = nil
		}
	}
	if len(t.byID) > 0 {
		t.remapping.Store(true)
	}
}

// mappingFor returns the producer's mapping onto cluster u, or nil when the
// client's ids are u's own. The first request of the producer that
// reaches u after a switch obtains an identity there (InitProducerId with
// the transactional id); presID and presEpoch are the ids the client holds.
func (p *Proxy) txnMappingFor(ctx context.Context, txnID string, u *upstream, presID int64, presEpoch int16) (*txnMapping, error) {
	t := p.pids.txns
	t.mu.Lock()
	e := t.producerLocked(txnID)
	if !e.seen {
		e.seen, e.native = true, u
	}
	if e.native == u {
		t.mu.Unlock()
		return nil, nil
	}
	if e.m != nil && e.m.on == u {
		m := e.m
		t.mu.Unlock()
		return m, nil
	}
	timeout := e.timeout
	t.mu.Unlock()

	e.initMu.Lock()
	defer e.initMu.Unlock()
	t.mu.Lock()
	if e.native == u || (e.m != nil && e.m.on == u) { // another connection won
		m := e.m
		if e.native == u {
			m = nil
		}
		t.mu.Unlock()
		return m, nil
	}
	t.mu.Unlock()

	id, epoch, err := initTxnProducer(ctx, u, txnID, timeout, p.cfg.DialTimeout)
	if err != nil {
		return nil, err
	}
	m := &txnMapping{on: u, presID: presID, presEpoch: presEpoch, realID: id, realEpoch: epoch, base: map[topicPartition]int32{}}
	t.mu.Lock()
	e.m = m
	t.mu.Unlock()
	p.m.pidRemaps.WithLabelValues(u.name).Inc()
	return m, nil
}

// initTxnProducer runs InitProducerId for a transactional id on cluster u,
// retrying while the coordinator is busy (loading, or finishing an earlier
// transaction of the id) for up to wait.
func initTxnProducer(ctx context.Context, u *upstream, txnID string, timeout, wait time.Duration) (int64, int16, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	backoff := 10 * time.Millisecond
	for {
		req := kmsg.NewPtrInitProducerIDRequest()
		req.TransactionalID = &txnID
		req.TransactionTimeoutMillis = int32(timeout / time.Millisecond)
		req.ProducerID, req.ProducerEpoch = -1, -1
		resp, err := req.RequestWith(ctx, u.client)
		if err == nil {
			err = kerr.ErrorForCode(resp.ErrorCode)
			if err == nil {
				return resp.ProducerID, resp.ProducerEpoch, nil
			}
		}
		if !kerr.IsRetriable(err) {
			return 0, 0, fmt.Errorf("init transactional producer %q on cluster %s: %w", txnID, u.name, err)
		}
		select {
		case <-ctx.Done():
			return 0, 0, fmt.Errorf("init transactional producer %q on cluster %s: %w (last: %v)", txnID, u.name, ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 500*time.Millisecond)
	}
}

// toReal maps the ids a client sent to the cluster's own.
func (t *txnTable) toReal(m *txnMapping, id int64, epoch int16) (int64, int16) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if id != m.presID {
		return id, epoch // not the id the proxy gave out: the broker judges it
	}
	return m.realID, epoch - (m.presEpoch - m.realEpoch)
}

// remapTxnRequest rewrites the producer ids in a decoded transactional
// request for cluster u. It returns an error only when the producer's
// identity on u cannot be obtained; the caller then answers the request
// with the API's retriable error.
func (p *Proxy) remapTxnRequest(ctx context.Context, u *upstream, req kmsg.Request) error {
	t := p.pids.txns
	one := func(txnID string, id *int64, epoch *int16) error {
		if *id < 0 {
			return nil
		}
		m, err := p.txnMappingFor(ctx, txnID, u, *id, *epoch)
		if err != nil || m == nil {
			return err
		}
		*id, *epoch = t.toReal(m, *id, *epoch)
		return nil
	}
	switch r := req.(type) {
	case *kmsg.AddPartitionsToTxnRequest:
		if r.Version < 4 {
			return one(r.TransactionalID, &r.ProducerID, &r.ProducerEpoch)
		}
		for i := range r.Transactions {
			tx := &r.Transactions[i]
			if err := one(tx.TransactionalID, &tx.ProducerID, &tx.ProducerEpoch); err != nil {
				return err
			}
		}
	case *kmsg.AddOffsetsToTxnRequest:
		return one(r.TransactionalID, &r.ProducerID, &r.ProducerEpoch)
	case *kmsg.TxnOffsetCommitRequest:
		return one(r.TransactionalID, &r.ProducerID, &r.ProducerEpoch)
	case *kmsg.EndTxnRequest:
		return one(r.TransactionalID, &r.ProducerID, &r.ProducerEpoch)
	case *kmsg.InitProducerIDRequest:
		if r.TransactionalID == nil || r.ProducerID < 0 {
			return nil
		}
		t.mu.Lock()
		e := t.producerLocked(*r.TransactionalID)
		native := (!e.seen || e.native == u)
		m := e.m
		t.mu.Unlock()
		switch {
		case native:
		case m != nil && m.on == u:
			r.ProducerID, r.ProducerEpoch = t.toReal(m, r.ProducerID, r.ProducerEpoch)
		default:
			// The cluster never gave this producer an identity: a fresh
			// one (the response makes the client's ids native here).
			r.ProducerID, r.ProducerEpoch = -1, -1
		}
	}
	return nil
}

// isTxnKey reports whether requests of the key carry a transactional
// producer's id and epoch outside record batches.
func isTxnKey(key int16) bool {
	switch key {
	case keyInitProducerID, keyAddPartitionsToTxn, keyAddOffsetsToTxn, keyTxnOffsetCommit, keyEndTxn:
		return true
	}
	return false
}

// remapTxnRequestOrAnswer is remapTxnRequest for the request path: when the
// producer's identity on u cannot be obtained (u's coordinator is still
// loading, say), the request is answered with the API's retriable error
// instead, and the client retries it.
func (p *Proxy) remapTxnRequestOrAnswer(ctx context.Context, c *clientConn, u *upstream, hdr requestHeader, body []byte, req kmsg.Request) ([]byte, error) {
	err := p.remapTxnRequest(ctx, u, req)
	if err == nil {
		return nil, nil
	}
	local, rerr := rejectResponse(hdr, body)
	if rerr != nil {
		return nil, fmt.Errorf("%w; answering instead: %w", err, rerr)
	}
	c.log.Warn("transactional request answered with a retriable error", zap.String("api", apiName(hdr.Key)), zap.Error(err))
	return local, nil
}

// rewriteTxnBatches rewrites the producer id, epoch and base sequence of a
// transactional producer's record batches for cluster u.
func (p *Proxy) rewriteTxnBatches(ctx context.Context, txnID string, b []byte, u *upstream, tp topicPartition) error {
	t := p.pids.txns
	for len(b) >= batchHeaderBytes {
		length := int(int32(binary.BigEndian.Uint32(b[batchLengthOff:])))
		total := 12 + length
		if length < 0 || total > len(b) || total < batchHeaderBytes {
			return fmt.Errorf("produce to %s/%d: malformed record batch", tp.topic, tp.partition)
		}
		batch := b[:total]
		b = b[total:]
		if batch[batchMagicOff] != 2 {
			continue
		}
		pid := int64(binary.BigEndian.Uint64(batch[batchPIDOff:]))
		epoch := int16(binary.BigEndian.Uint16(batch[batchEpochOff:]))
		seq := int32(binary.BigEndian.Uint32(batch[batchSeqOff:]))
		if pid < 0 {
			continue
		}
		m, err := p.txnMappingFor(ctx, txnID, u, pid, epoch)
		if err != nil {
			return err
		}
		if m == nil {
			continue
		}
		id, realEpoch := t.toReal(m, pid, epoch)
		t.mu.Lock()
		if id == m.realID {
			base, ok := m.base[tp]
			if !ok {
				base = seq
				m.base[tp] = base
			}
			seq -= base
			if seq < 0 { // sequences wrap at 2^31
				seq += math.MaxInt32
				seq++
			}
		}
		t.mu.Unlock()
		binary.BigEndian.PutUint64(batch[batchPIDOff:], uint64(id))
		binary.BigEndian.PutUint16(batch[batchEpochOff:], uint16(realEpoch))
		binary.BigEndian.PutUint32(batch[batchSeqOff:], uint32(seq))
		binary.BigEndian.PutUint32(batch[batchCRCOff:], crc32.Checksum(batch[batchAttrsOff:], castagnoli))
	}
	return nil
}

// txnResponse follows a transactional request's response from cluster u:
// an accepted request that adds to a transaction opens it, a successful
// EndTxn or InitProducerId closes it, and ids in EndTxn v5+ responses are
// mapped back to the ones the client holds. It returns the frame to pass
// on (rewritten in place or anew).
func (p *Proxy) txnResponse(u *upstream, pr *pendingReq, frame []byte) ([]byte, error) {
	n := pr.txn
	if n.req == txnAdds {
		return frame, p.txnAddAnswered(pr, frame)
	}
	if pr.hdr.Key != keyEndTxn && pr.hdr.Key != keyInitProducerID {
		return frame, nil
	}
	hl, err := responseHeaderLen(pr.hdr.Key, pr.hdr.Version, frame)
	if err != nil {
		return nil, err
	}
	resp := kmsg.ResponseForKey(pr.hdr.Key)
	if err := decodeResponse(resp, pr.hdr.Key, pr.hdr.Version, frame[hl:]); err != nil {
		return nil, err
	}
	t := p.pids.txns
	switch r := resp.(type) {
	case *kmsg.InitProducerIDResponse:
		if r.ErrorCode != 0 {
			return frame, nil
		}
		t.initAccepted(p, n)
		// The client now holds u's own ids.
		t.mu.Lock()
		e := t.producerLocked(n.id)
		e.seen, e.native, e.m = true, u, nil
		t.mu.Unlock()
		return frame, nil
	case *kmsg.EndTxnResponse:
		if r.ErrorCode != 0 {
			return frame, nil
		}
		t.close(p, n.id, n.gen)
		if pr.hdr.Version < 5 || r.ProducerID < 0 {
			return frame, nil
		}
		t.mu.Lock()
		e := t.producerLocked(n.id)
		m := e.m
		if m == nil || m.on != u {
			t.mu.Unlock()
			return frame, nil
		}
		next := int(m.presEpoch) + 1
		if r.ProducerID == m.realID {
			next = int(m.presEpoch) + int(r.ProducerEpoch-m.realEpoch)
		}
		if next >= math.MaxInt16 || next < 0 {
			// The epochs the client holds ran out: give it the cluster's
			// own ids, as a broker gives a new id when epochs run out.
			e.native, e.m = u, nil
			t.mu.Unlock()
			return frame, nil
		}
		if r.ProducerID != m.realID || r.ProducerEpoch != m.realEpoch {
			m.base = map[topicPartition]int32{}
		}
		m.realID, m.realEpoch, m.presEpoch = r.ProducerID, r.ProducerEpoch, int16(next)
		m.ends++
		r.ProducerID, r.ProducerEpoch = m.presID, m.presEpoch
		t.mu.Unlock()
		out := make([]byte, 0, len(frame))
		out = append(out, frame[:hl]...)
		return r.AppendTo(out), nil
	}
	return frame, nil
}

// txnAddAnswered opens the producer's transaction if the cluster accepted
// a request that adds to it: AddPartitionsToTxn or TxnOffsetCommit with a
// partition without error, AddOffsetsToTxn without error, a Produce that
// appended to a partition (or found its batch appended before). The
// response is decoded only while no transaction is known open.
func (p *Proxy) txnAddAnswered(pr *pendingReq, frame []byte) error {
	t := p.pids.txns
	t.mu.Lock()
	e, ok := t.byID[pr.txn.id]
	open := ok && e.open
	t.mu.Unlock()
	if open {
		return nil
	}
	hl, err := responseHeaderLen(pr.hdr.Key, pr.hdr.Version, frame)
	if err != nil {
		return err
	}
	resp := kmsg.ResponseForKey(pr.hdr.Key)
	if err := decodeResponse(resp, pr.hdr.Key, pr.hdr.Version, frame[hl:]); err != nil {
		return err
	}
	accepted := false
	take := func(code int16) {
		accepted = accepted || code == 0 || code == kerr.DuplicateSequenceNumber.Code
	}
	switch r := resp.(type) {
	case *kmsg.ProduceResponse:
		for _, rt := range r.Topics {
			for _, rp := range rt.Partitions {
				take(rp.ErrorCode)
			}
		}
	case *kmsg.AddPartitionsToTxnResponse:
		for _, rt := range r.Topics {
			for _, rp := range rt.Partitions {
				take(rp.ErrorCode)
			}
		}
	case *kmsg.AddOffsetsToTxnResponse:
		take(r.ErrorCode)
	case *kmsg.TxnOffsetCommitResponse:
		for _, rt := range r.Topics {
			for _, rp := range rt.Partitions {
				take(rp.ErrorCode)
			}
		}
	}
	if accepted {
		t.opened(p, pr.txn.id)
	}
	return nil
}
