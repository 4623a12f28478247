package proxy

// Producer ids across a switch.
//
// InitProducerId: v0-5. Produce: every version (record batch headers).
//
// An idempotent producer holds a producer id and epoch issued by one
// cluster and numbers its batches per partition. Another cluster does not
// know that id — or has issued the same number to another producer, since
// every KRaft cluster allocates ids from 0 — so after a switch its batches
// would be fenced, rejected as OUT_OF_ORDER_SEQUENCE_NUMBER, or acknowledged
// as duplicates and never written.
//
// The proxy therefore presents producer ids of its own. An id a cluster
// issues is shown to the client unchanged when that number is free in the
// proxy's space (so before any switch nothing is rewritten), else as a fresh
// number above 2^40. When a client's batch reaches a cluster other than the
// one that issued its id, the proxy obtains an id for that producer from
// the new cluster (InitProducerId, once per producer and cluster) and
// rewrites producer id, epoch and base sequence in each batch header — the
// sequence rebased so that the one after the last batch a cluster
// acknowledged is presented as 0, and the first batch on each partition
// checked against it (sequences.go) — and recomputes the batch CRC
// (CRC32C over bytes 21..end; nothing is decompressed). A switch drains
// every in-flight Produce first, so no batch straddles two clusters.
//
// Transactional producers are followed by transactional id instead
// (txn.go): their batches and transaction requests are rewritten through
// the producer's mapping there, never through this table.
//
// The table is bounded. A producer unused for Config.ProducerIDExpiry is
// forgotten, as brokers forget it (producer.id.expiration.ms, 1 day by
// default; "used": an InitProducerId answered for it, or a batch of it
// forwarded), and beyond Config.MaxProducerIDs producers the least recently
// used one is forgotten, so applications that create a producer per task
// (short-lived idempotent producers, the default since Kafka 3) do not grow
// the sidecar. Entries are threaded in the order of their last use, so
// both cost O(1) per InitProducerId and nothing scans the table. A
// forgotten producer's batches are forwarded as they are, like those of a
// producer the proxy never saw issued (one initialised before the proxy
// started): before a switch that changes nothing; after one, its id is not
// remapped, so a producer idle longer than the expiry (or pushed out by
// MaxProducerIDs newer ones) crosses a switch like a client without the
// proxy — it sees the new cluster's answer to an id it does not know.

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Byte offsets in a v2 record batch.
const (
	batchLengthOff       = 8
	batchLeaderEpochOff  = 12
	batchMagicOff        = 16
	batchCRCOff          = 17
	batchAttrsOff        = 21
	batchMaxTimestampOff = 35
	batchPIDOff          = 43
	batchEpochOff        = 51
	batchSeqOff          = 53
	batchHeaderBytes     = 61
)

// firstRemappedID is where producer ids of the proxy's own start when a
// cluster's id is already taken in the proxy's space.
const firstRemappedID = int64(1) << 40

// producerIDs maps the producer ids clients hold to each cluster's own.
type producerIDs struct {
	// rewriting is true once any presented id differs from the real id on
	// the cluster a batch goes to: until then Produce is forwarded as bytes.
	rewriting atomic.Bool

	mu   sync.Mutex
	byID map[int64]*producerEntry // presented id → entry
	next int64
	// oldest and newest end the list of entries in the order of their
	// last use (producerEntry.older, newer).
	oldest, newest *producerEntry
	expiry         time.Duration // Config.ProducerIDExpiry
	max            int           // Config.MaxProducerIDs
	clock          clock
	base           time.Time // lastUsed counts from here (monotonic)
	m              *metrics  // nil in unit tests

	// txns follows transactional producers (txn.go).
	txns *txnTable
}

// producerEntry is one producer a client holds.
type producerEntry struct {
	presented int64
	// issuer is the cluster that issued the id the client holds, with the
	// real id and epoch.
	issuer    *upstream
	realID    int64
	realEpoch int16
	// issuerLeft is set once the proxy switched away from the issuer: a
	// client's sequences then no longer follow on from what the issuer saw,
	// so even the issuer needs a fresh id if traffic returns to it.
	issuerLeft bool
	// onOther holds the id the producer was given on each other cluster
	// after a switch, keyed by cluster name.
	onOther map[string]*remappedProducer
	// acked is, per partition, the sequence after the last batch a cluster
	// acknowledged (sequences.go).
	acked ackedSeqs

	// lastUsed is when the producer was last used, since producerIDs.base;
	// older and newer are its neighbours in the order of last use. Guarded
	// by producerIDs.mu; gone is set once the table forgot the entry.
	lastUsed     time.Duration
	older, newer *producerEntry
	gone         bool
}

// remappedProducer is a producer's identity on a cluster that did not issue
// the client's id, with the sequence gate per partition.
type remappedProducer struct {
	id    int64
	epoch int16 // obtained with InitProducerId
	mu    sync.Mutex
	// clientEpoch is the client epoch of the first batch seen here (-1
	// before it); a client epoch is presented as epoch plus its distance
	// from clientEpoch, so a client that bumps its epoch itself (sarama
	// does, after OUT_OF_ORDER_SEQUENCE_NUMBER, without InitProducerId)
	// bumps it on the cluster too. lastClientEpoch is the highest seen.
	clientEpoch, lastClientEpoch int16
	// parts holds each partition's gate in the current client epoch.
	parts map[topicPartition]*seqGate
}

// topicPartition names a partition by its (real) topic name.
type topicPartition struct {
	topic     string
	partition int32
}

// newProducerIDs returns an empty table with cfg's limits; m may be nil.
func newProducerIDs(cfg Config, m *metrics) *producerIDs {
	return &producerIDs{byID: map[int64]*producerEntry{}, next: firstRemappedID,
		expiry: cfg.ProducerIDExpiry, max: cfg.MaxProducerIDs, clock: realClock{}, base: time.Now(), m: m,
		txns: newTxnTable(cfg.MaxTransactionTimeout)}
}

// setClock replaces the time source of the producer and transaction
// tables (tests).
func (ids *producerIDs) setClock(c clock) {
	ids.mu.Lock()
	ids.clock, ids.base = c, c.Now()
	ids.mu.Unlock()
	ids.txns.mu.Lock()
	ids.txns.clock = c
	ids.txns.mu.Unlock()
}

// issued records an id a cluster issued and returns the id to present.
// prev is the presented id the client sent in the request (-1 for none): a
// producer re-initialising (an epoch bump) keeps its presented id.
func (ids *producerIDs) issued(u *upstream, prev, realID int64, realEpoch int16) int64 {
	ids.mu.Lock()
	defer ids.mu.Unlock()
	now := ids.sinceBaseLocked()
	if e, ok := ids.byID[prev]; ok && prev >= 0 {
		// A new epoch: the client's sequences restart at 0 everywhere.
		e.issuer, e.realID, e.realEpoch, e.onOther, e.issuerLeft, e.acked = u, realID, realEpoch, nil, false, ackedSeqs{}
		if prev != realID {
			ids.rewriting.Store(true)
		}
		ids.touchLocked(e, now)
		return prev
	}
	presented := realID
	if e, taken := ids.byID[presented]; taken && (e.issuer != u || e.realID != realID) {
		presented = ids.next
		ids.next++
	}
	if old, taken := ids.byID[presented]; taken {
		ids.unlinkLocked(old) // the same id issued again: replaced
	}
	ids.expireLocked(now, 1)
	e := &producerEntry{presented: presented, issuer: u, realID: realID, realEpoch: realEpoch}
	ids.byID[presented] = e
	ids.touchLocked(e, now)
	if presented != realID {
		ids.rewriting.Store(true)
	}
	if ids.m != nil {
		ids.m.producerIDs.Set(float64(len(ids.byID)))
	}
	return presented
}

// sinceBaseLocked is the time now, as lastUsed counts it.
func (ids *producerIDs) sinceBaseLocked() time.Duration {
	return ids.clock.Now().Sub(ids.base)
}

// touchLocked marks e used at now: it moves to the newest end of the list.
func (ids *producerIDs) touchLocked(e *producerEntry, now time.Duration) {
	e.lastUsed = now
	if ids.newest == e || e.gone {
		return
	}
	if e.older != nil || ids.oldest == e {
		ids.detachLocked(e)
	}
	e.older, e.newer = ids.newest, nil
	if ids.newest != nil {
		ids.newest.newer = e
	} else {
		ids.oldest = e
	}
	ids.newest = e
}

// detachLocked takes e out of the list, leaving it in byID.
func (ids *producerIDs) detachLocked(e *producerEntry) {
	if e.older != nil {
		e.older.newer = e.newer
	} else if ids.oldest == e {
		ids.oldest = e.newer
	}
	if e.newer != nil {
		e.newer.older = e.older
	} else if ids.newest == e {
		ids.newest = e.older
	}
	e.older, e.newer = nil, nil
}

// unlinkLocked forgets e.
func (ids *producerIDs) unlinkLocked(e *producerEntry) {
	ids.detachLocked(e)
	delete(ids.byID, e.presented)
	e.gone = true
}

// expireLocked forgets the producers unused for the expiry, and the least
// recently used ones while adding room more would exceed the maximum. It
// looks only at the oldest end of the list: O(1) per producer forgotten.
func (ids *producerIDs) expireLocked(now time.Duration, room int) {
	for e := ids.oldest; e != nil; e = ids.oldest {
		reason := ""
		switch {
		case len(ids.byID)+room > ids.max:
			reason = "limit"
		case now-e.lastUsed > ids.expiry:
			reason = "idle"
		default:
			return
		}
		ids.unlinkLocked(e)
		if ids.m != nil {
			ids.m.producerIDsExpired.WithLabelValues(reason).Inc()
			ids.m.producerIDs.Set(float64(len(ids.byID)))
		}
	}
}

// size returns the number of producers in the table.
func (ids *producerIDs) size() int {
	ids.mu.Lock()
	defer ids.mu.Unlock()
	return len(ids.byID)
}

// markSwitched is called by a switch to cluster to, after the drain: every
// producer starts a new period there, with a fresh id and sequences from 0
// (the ids obtained in earlier periods on other clusters are dropped, since
// the client's sequences moved on since). Produce goes through rewriting
// from now on.
func (ids *producerIDs) markSwitched(to *upstream) {
	ids.txns.markSwitched(to)
	ids.mu.Lock()
	defer ids.mu.Unlock()
	for _, e := range ids.byID {
		e.onOther = nil
		if e.issuer != to {
			e.issuerLeft = true
		}
	}
	if len(ids.byID) > 0 {
		ids.rewriting.Store(true)
	}
}

func (ids *producerIDs) lookup(presented int64) (*producerEntry, bool) {
	ids.mu.Lock()
	defer ids.mu.Unlock()
	e, ok := ids.byID[presented]
	return e, ok
}

// onCluster returns the producer's id on cluster u, obtaining one with
// InitProducerId the first time.
func (p *Proxy) remapOn(ctx context.Context, e *producerEntry, u *upstream) (*remappedProducer, error) {
	p.pids.mu.Lock()
	rm, ok := e.onOther[u.name]
	p.pids.mu.Unlock()
	if ok {
		return rm, nil
	}
	req := kmsg.NewPtrInitProducerIDRequest()
	req.ProducerID, req.ProducerEpoch = -1, -1
	rctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
	defer cancel()
	resp, err := req.RequestWith(rctx, u.client)
	if err != nil {
		return nil, fmt.Errorf("init producer id on cluster %s: %w", u.name, err)
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return nil, fmt.Errorf("init producer id on cluster %s: %w", u.name, err)
	}
	p.pids.mu.Lock()
	defer p.pids.mu.Unlock()
	if rm, ok := e.onOther[u.name]; ok { // another connection won the race
		return rm, nil
	}
	if e.onOther == nil {
		e.onOther = map[string]*remappedProducer{}
	}
	rm = &remappedProducer{id: resp.ProducerID, epoch: resp.ProducerEpoch, clientEpoch: -1, lastClientEpoch: -1,
		parts: map[topicPartition]*seqGate{}}
	e.onOther[u.name] = rm
	p.m.pidRemaps.WithLabelValues(u.name).Inc()
	return rm, nil
}

// translateInitProducerID maps the presented id in a re-initialising
// request (KIP-360 epoch bump, v3+) to the cluster's own. It returns the
// presented id the client sent (-1 for none).
func (p *Proxy) translateInitProducerID(r *kmsg.InitProducerIDRequest, u *upstream) int64 {
	prev := r.ProducerID
	if prev < 0 || r.TransactionalID != nil {
		return -1
	}
	e, ok := p.pids.lookup(prev)
	if !ok {
		return -1
	}
	p.pids.mu.Lock()
	defer p.pids.mu.Unlock()
	switch rm, remapped := e.onOther[u.name]; {
	case e.issuer == u && !e.issuerLeft:
		r.ProducerID, r.ProducerEpoch = e.realID, e.realEpoch
	case remapped:
		r.ProducerID, r.ProducerEpoch = rm.id, rm.epoch
	default:
		// The cluster never knew this producer: ask for a fresh id.
		r.ProducerID, r.ProducerEpoch = -1, -1
	}
	return prev
}

// rewriteBatches rewrites the producer ids of one partition's record
// batches for cluster u. With follow (acks other than 0), it returns the
// idempotent batches to follow into the response, or answered set when
// the proxy answers the partition itself with code (sequences.go).
//
// Every probe it opened is released when it returns an error.
func (p *Proxy) rewriteBatches(ctx context.Context, b []byte, u *upstream, tp topicPartition, follow bool) (batches []sentBatch, answered bool, code int16, err error) {
	first := true
	fail := func(err error) ([]sentBatch, bool, int16, error) {
		// A probe opened for an earlier batch would never be answered:
		// the request is not forwarded.
		p.releaseSeqs(&produceSeqs{batches: batches})
		return nil, false, 0, err
	}
	// Consecutive batches of one producer (a partition's usual case) share
	// one lookup and one followed entry.
	var (
		prevPID int64 = -1
		e       *producerEntry
		native  bool
		realID  int64
	)
	for len(b) >= batchHeaderBytes {
		length := int(int32(binary.BigEndian.Uint32(b[batchLengthOff:])))
		total := 12 + length
		if length < 0 || total > len(b) || total < batchHeaderBytes {
			return fail(fmt.Errorf("produce to %s/%d: malformed record batch", tp.topic, tp.partition))
		}
		batch := b[:total]
		b = b[total:]
		if batch[batchMagicOff] != 2 {
			continue
		}
		pid := int64(binary.BigEndian.Uint64(batch[batchPIDOff:]))
		if pid < 0 {
			continue
		}
		if pid != prevPID {
			var ok bool
			p.pids.mu.Lock()
			if e, ok = p.pids.byID[pid]; ok {
				native, realID = e.issuer == u && !e.issuerLeft, e.realID
				now := p.pids.sinceBaseLocked()
				p.pids.touchLocked(e, now)
				p.pids.expireLocked(now, 0)
			}
			p.pids.mu.Unlock()
			if !ok {
				continue // an id the proxy did not see issued: left alone
			}
			prevPID = pid
		}
		cepoch, seq, last := batchSeqs(batch)
		sb := sentBatch{e: e, tp: tp, epoch: cepoch, first: seq, last: last}
		id, epoch := realID, cepoch
		if !native {
			rm, err := p.remapOn(ctx, e, u)
			if err != nil {
				return fail(err)
			}
			var g *seqGate
			var stale bool
			id, epoch, g, stale = p.seqGateFor(rm, e, tp, cepoch)
			if first && follow {
				forward, c := true, int16(0)
				switch {
				case !stale:
					if forward, c, err = p.admitFirst(ctx, rm, g, &sb); err != nil {
						return fail(err)
					}
				case seqBefore(sb.first, g.base):
					// An older client epoch than the current one, reaching
					// back into what that epoch had acknowledged: the
					// cluster has no state for the epoch on the partition
					// and would write it. What does not reach back is
					// forwarded without a probe (the new epoch's gate is
					// not this batch's).
					forward, c = false, p.refuseFirst(&sb, g.base)
				}
				if !forward {
					p.releaseSeqs(&produceSeqs{batches: batches})
					return nil, true, c, nil
				}
			}
			seq = addSeq(seq, -int64(g.base)+math.MaxInt32+1)
		}
		first = false
		if follow {
			if n := len(batches); n > 0 && batches[n-1].e == e && batches[n-1].epoch == cepoch {
				batches[n-1].last = sb.last // the same producer's next batch
			} else {
				batches = append(batches, sb)
			}
		}
		if id == pid && native {
			continue
		}
		binary.BigEndian.PutUint64(batch[batchPIDOff:], uint64(id))
		binary.BigEndian.PutUint16(batch[batchEpochOff:], uint16(epoch))
		binary.BigEndian.PutUint32(batch[batchSeqOff:], uint32(seq))
		binary.BigEndian.PutUint32(batch[batchCRCOff:], crc32.Checksum(batch[batchAttrsOff:], castagnoli))
	}
	return batches, false, 0, nil
}
