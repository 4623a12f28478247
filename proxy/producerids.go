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
// sequence rebased so that the first batch the new cluster sees from this
// producer on a partition starts at 0 — and recomputes the batch CRC
// (CRC32C over bytes 21..end; nothing is decompressed). A switch drains
// every in-flight Produce first, so no batch straddles two clusters.
//
// Transactional producers are followed by transactional id instead
// (txn.go): their batches and transaction requests are rewritten through
// the producer's mapping there, never through this table.

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Byte offsets in a v2 record batch.
const (
	batchLengthOff   = 8
	batchMagicOff    = 16
	batchCRCOff      = 17
	batchAttrsOff    = 21
	batchPIDOff      = 43
	batchEpochOff    = 51
	batchSeqOff      = 53
	batchHeaderBytes = 61
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
}

// remappedProducer is a producer's identity on a cluster that did not issue
// the client's id, with the sequence base per partition.
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
	// base maps a partition to the client sequence presented as 0 in the
	// current client epoch; after a client bump every base is 0.
	base   map[topicPartition]int32
	bumped bool
}

type topicPartition struct {
	topic     string
	partition int32
}

func newProducerIDs() *producerIDs {
	return &producerIDs{byID: map[int64]*producerEntry{}, next: firstRemappedID, txns: newTxnTable()}
}

// issued records an id a cluster issued and returns the id to present.
// prev is the presented id the client sent in the request (-1 for none): a
// producer re-initialising (an epoch bump) keeps its presented id.
func (ids *producerIDs) issued(u *upstream, prev, realID int64, realEpoch int16) int64 {
	ids.mu.Lock()
	defer ids.mu.Unlock()
	if e, ok := ids.byID[prev]; ok && prev >= 0 {
		e.issuer, e.realID, e.realEpoch, e.onOther, e.issuerLeft = u, realID, realEpoch, nil, false
		ids.updateRewritingLocked()
		return prev
	}
	presented := realID
	if e, taken := ids.byID[presented]; taken && (e.issuer != u || e.realID != realID) {
		presented = ids.next
		ids.next++
	}
	ids.byID[presented] = &producerEntry{presented: presented, issuer: u, realID: realID, realEpoch: realEpoch}
	ids.updateRewritingLocked()
	return presented
}

func (ids *producerIDs) updateRewritingLocked() {
	for _, e := range ids.byID {
		if e.presented != e.realID {
			ids.rewriting.Store(true)
			return
		}
	}
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
		base: map[topicPartition]int32{}}
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

func (p *Proxy) rewriteBatches(ctx context.Context, b []byte, u *upstream, tp topicPartition) (bool, error) {
	changed := false
	for len(b) >= batchHeaderBytes {
		length := int(int32(binary.BigEndian.Uint32(b[batchLengthOff:])))
		total := 12 + length
		if length < 0 || total > len(b) || total < batchHeaderBytes {
			return changed, fmt.Errorf("produce to %s/%d: malformed record batch", tp.topic, tp.partition)
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
		e, ok := p.pids.lookup(pid)
		if !ok {
			continue // an id the proxy did not see issued: left alone
		}
		var (
			id    int64
			epoch int16
			seq   = int32(binary.BigEndian.Uint32(batch[batchSeqOff:]))
		)
		p.pids.mu.Lock()
		native := e.issuer == u && !e.issuerLeft
		realID := e.realID
		p.pids.mu.Unlock()
		if native {
			if realID == pid {
				continue
			}
			id, epoch = realID, int16(binary.BigEndian.Uint16(batch[batchEpochOff:]))
		} else {
			rm, err := p.remapOn(ctx, e, u)
			if err != nil {
				return changed, err
			}
			cepoch := int16(binary.BigEndian.Uint16(batch[batchEpochOff:]))
			rm.mu.Lock()
			if rm.clientEpoch < 0 {
				rm.clientEpoch, rm.lastClientEpoch = cepoch, cepoch
			}
			if cepoch > rm.lastClientEpoch {
				// The client started a new epoch on its own: its
				// sequences restart at 0 on every partition, and so do
				// the cluster's under the matching new epoch.
				rm.lastClientEpoch = cepoch
				rm.base = map[topicPartition]int32{}
				rm.bumped = true
			}
			id, epoch = rm.id, rm.epoch+(cepoch-rm.clientEpoch)
			base, ok := rm.base[tp]
			bumped := rm.bumped
			rm.mu.Unlock()
			if !ok {
				base = seq // the first batch of this partition here
				if bumped {
					base = 0
				}
				rm.mu.Lock()
				if b, ok := rm.base[tp]; ok {
					base = b // another connection set it meanwhile
				} else {
					rm.base[tp] = base
				}
				rm.mu.Unlock()
			}
			seq -= base
			if seq < 0 { // sequences wrap at 2^31
				seq += 1<<31 - 1
				seq++
			}
		}
		binary.BigEndian.PutUint64(batch[batchPIDOff:], uint64(id))
		binary.BigEndian.PutUint16(batch[batchEpochOff:], uint16(epoch))
		binary.BigEndian.PutUint32(batch[batchSeqOff:], uint32(seq))
		binary.BigEndian.PutUint32(batch[batchCRCOff:], crc32.Checksum(batch[batchAttrsOff:], castagnoli))
		changed = true
	}
	return changed, nil
}
