package proxy

import (
	"context"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestRemapTxnRequest: once a transactional producer is mapped onto a
// cluster, every request that carries its id and epoch is rewritten — the
// epoch through the mapping's delta — at every version, the batched
// AddPartitionsToTxn (v4+) per transaction; ids the proxy did not give
// out, and producers native to the cluster, are left alone.
func TestRemapTxnRequest(t *testing.T) {
	u := &upstream{name: "target"}
	p := &Proxy{pids: newProducerIDs(DefaultConfig(), nil)}
	tt := p.pids.txns
	tt.byID["mapped"] = &txnProducer{id: "mapped", seen: true,
		m: &txnMapping{on: u, presID: 5, presEpoch: 10, realID: 77, realEpoch: 2, base: map[topicPartition]int32{}}}
	tt.byID["native"] = &txnProducer{id: "native", seen: true, native: u}

	type ids struct {
		id    int64
		epoch int16
	}
	for _, tc := range []struct {
		name string
		req  func(txnID string, id int64, epoch int16) kmsg.Request
		get  func(kmsg.Request) []ids
	}{
		{"AddPartitionsToTxn v3", func(txn string, id int64, e int16) kmsg.Request {
			r := kmsg.NewPtrAddPartitionsToTxnRequest()
			r.Version, r.TransactionalID, r.ProducerID, r.ProducerEpoch = 3, txn, id, e
			return r
		}, func(r kmsg.Request) []ids {
			x := r.(*kmsg.AddPartitionsToTxnRequest)
			return []ids{{x.ProducerID, x.ProducerEpoch}}
		}},
		{"AddPartitionsToTxn v5 batched", func(txn string, id int64, e int16) kmsg.Request {
			r := kmsg.NewPtrAddPartitionsToTxnRequest()
			r.Version = 5
			for range 2 {
				tx := kmsg.NewAddPartitionsToTxnRequestTransaction()
				tx.TransactionalID, tx.ProducerID, tx.ProducerEpoch = txn, id, e
				r.Transactions = append(r.Transactions, tx)
			}
			return r
		}, func(r kmsg.Request) []ids {
			var out []ids
			for _, tx := range r.(*kmsg.AddPartitionsToTxnRequest).Transactions {
				out = append(out, ids{tx.ProducerID, tx.ProducerEpoch})
			}
			return out
		}},
		{"AddOffsetsToTxn v4", func(txn string, id int64, e int16) kmsg.Request {
			r := kmsg.NewPtrAddOffsetsToTxnRequest()
			r.Version, r.TransactionalID, r.ProducerID, r.ProducerEpoch = 4, txn, id, e
			return r
		}, func(r kmsg.Request) []ids {
			x := r.(*kmsg.AddOffsetsToTxnRequest)
			return []ids{{x.ProducerID, x.ProducerEpoch}}
		}},
		{"TxnOffsetCommit v5", func(txn string, id int64, e int16) kmsg.Request {
			r := kmsg.NewPtrTxnOffsetCommitRequest()
			r.Version, r.TransactionalID, r.ProducerID, r.ProducerEpoch = 5, txn, id, e
			return r
		}, func(r kmsg.Request) []ids {
			x := r.(*kmsg.TxnOffsetCommitRequest)
			return []ids{{x.ProducerID, x.ProducerEpoch}}
		}},
		{"EndTxn v5", func(txn string, id int64, e int16) kmsg.Request {
			r := kmsg.NewPtrEndTxnRequest()
			r.Version, r.TransactionalID, r.ProducerID, r.ProducerEpoch = 5, txn, id, e
			return r
		}, func(r kmsg.Request) []ids {
			x := r.(*kmsg.EndTxnRequest)
			return []ids{{x.ProducerID, x.ProducerEpoch}}
		}},
		{"InitProducerId v5", func(txn string, id int64, e int16) kmsg.Request {
			r := kmsg.NewPtrInitProducerIDRequest()
			r.Version, r.TransactionalID, r.ProducerID, r.ProducerEpoch = 5, &txn, id, e
			return r
		}, func(r kmsg.Request) []ids {
			x := r.(*kmsg.InitProducerIDRequest)
			return []ids{{x.ProducerID, x.ProducerEpoch}}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, c := range []struct {
				txn  string
				in   ids
				want ids
			}{
				{"mapped", ids{5, 10}, ids{77, 2}}, // the presented epoch
				{"mapped", ids{5, 9}, ids{77, 1}},  // an older one: the broker fences it
				{"mapped", ids{6, 10}, ids{6, 10}}, // not the id the proxy gave out
				{"native", ids{5, 10}, ids{5, 10}}, // the cluster's own ids
			} {
				req := tc.req(c.txn, c.in.id, c.in.epoch)
				if err := p.remapTxnRequest(context.Background(), u, req); err != nil {
					t.Fatalf("%s %v: %v", c.txn, c.in, err)
				}
				for _, got := range tc.get(req) {
					if got != c.want {
						t.Errorf("%s %v: sent as %v, want %v", c.txn, c.in, got, c.want)
					}
				}
			}
		})
	}
}

// TestTxnEndTxnV5ResponseMapsEpoch: an EndTxn v5 response (KIP-890 part
// 2) carries the bumped epoch; the client is shown its own id with its
// epoch bumped the same, the mapping follows, and the sequence bases
// restart. A new producer id from the cluster (its epochs ran out) still
// shows as the client's id with the next epoch; when the client's own
// epochs would run out, it is given the cluster's ids.
func TestTxnEndTxnV5ResponseMapsEpoch(t *testing.T) {
	u := &upstream{name: "target"}
	p := &Proxy{pids: newProducerIDs(DefaultConfig(), nil)}
	m := &txnMapping{on: u, presID: 5, presEpoch: 10, realID: 77, realEpoch: 2,
		base: map[topicPartition]int32{{"t", 0}: 40}}
	p.pids.txns.byID["tx"] = &txnProducer{id: "tx", seen: true, m: m}
	end := func(realID int64, realEpoch int16) (int64, int16) {
		t.Helper()
		r := kmsg.NewPtrEndTxnResponse()
		r.Version, r.ProducerID, r.ProducerEpoch = 5, realID, realEpoch
		hdr := requestHeader{Key: keyEndTxn, Version: 5, CorrID: 9, Known: true}
		frame := responseFrame(keyEndTxn, 5, 9, r.AppendTo(nil))
		out, err := p.txnResponse(u, &pendingReq{hdr: hdr, txn: &txnNote{id: "tx", req: txnEnds}}, frame)
		if err != nil {
			t.Fatal(err)
		}
		hl, err := responseHeaderLen(keyEndTxn, 5, out)
		if err != nil {
			t.Fatal(err)
		}
		got := kmsg.NewPtrEndTxnResponse()
		got.Version = 5
		if err := got.ReadFrom(out[hl:]); err != nil {
			t.Fatal(err)
		}
		return got.ProducerID, got.ProducerEpoch
	}
	if id, e := end(77, 3); id != 5 || e != 11 {
		t.Errorf("epoch bump: client shown %d/%d, want 5/11", id, e)
	}
	if len(m.base) != 0 || m.realEpoch != 3 || m.presEpoch != 11 {
		t.Errorf("after the bump: mapping %+v", m)
	}
	if id, e := end(78, 0); id != 5 || e != 12 {
		t.Errorf("new producer id: client shown %d/%d, want 5/12", id, e)
	}
	if got, _ := p.pids.txns.toReal(m, 5, 12); got != 78 {
		t.Errorf("after a new producer id, requests go to %d, want 78", got)
	}
	// The epochs the client could be shown run out: it is given the
	// cluster's own ids, and nothing is rewritten for it any more.
	m.presEpoch = 32766
	if id, e := end(78, 1); id != 78 || e != 1 {
		t.Errorf("epochs exhausted: client shown %d/%d, want the cluster's 78/1", id, e)
	}
	if e := p.pids.txns.byID["tx"]; e.m != nil || e.native != u {
		t.Errorf("epochs exhausted: mapping %+v, native %v; want none, native on the cluster", e.m, e.native)
	}
}
