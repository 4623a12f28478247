//go:build unix

package crashtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/switchyard/switchyard/internal/kafkatest"
	"github.com/switchyard/switchyard/mirror/offsetmap"
)

// The workload: records numbered by a sequence number unique across
// partitions and producers, written by a plain (idempotent) producer at a
// steady pace and by a transactional producer that commits most of its
// transactions, aborts some and holds some open for a while (the source's
// last stable offset then stands still while the plain producer goes on).
const (
	plainEvery     = 10 * time.Millisecond // one chunk of plain records per tick
	plainChunk     = 12                    // ~1,200 records/s (the default of workload.plainChunk)
	maxRecords     = 50_000                // the producers go idle beyond this (the default of workload.maxRecords)
	txnPause       = 100 * time.Millisecond
	txnAbortOneIn  = 4
	txnHoldOneIn   = 5
	txnHoldMax     = 800 * time.Millisecond
	txnRecordsMax  = 40
	backlogTxnSize = 40
)

// workload produces the records and keeps the ledger of what became
// visible to read_committed consumers (committed) and what was aborted.
type workload struct {
	topic      string
	partitions int32
	base       time.Time // timestamp of sequence number 0
	// bulk writes the backlog (large lz4 batches), plain the steady
	// stream (small snappy batches), txn the transactions (uncompressed).
	// Small lz4 batches are avoided: each costs its reader a 4 MiB block
	// buffer, which makes reads crawl under the race detector.
	bulk, plain, txn *kgo.Client
	// plainChunk records are written by the plain producer every
	// plainEvery; both producers go idle once maxRecords sequence numbers
	// are taken. Set them before start.
	plainChunk int
	maxRecords int64

	next atomic.Int64 // next sequence number

	mu            sync.Mutex
	committed     map[int64]int32 // sequence number → partition
	aborted       map[int64]int32
	txnsCommitted int
	txnsAborted   int
	err           error // first producer error

	cancel   context.CancelFunc
	stopping chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

func newWorkload(t *testing.T, src *kafkatest.Cluster, topic string, partitions int32) *workload {
	t.Helper()
	w := &workload{
		topic:      topic,
		partitions: partitions,
		plainChunk: plainChunk,
		maxRecords: maxRecords,
		base:       time.Now().Add(-30 * time.Minute).Truncate(time.Millisecond),
		committed:  map[int64]int32{},
		aborted:    map[int64]int32{},
		stopping:   make(chan struct{}),
	}
	w.bulk = src.Client(t,
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerBatchCompression(kgo.Lz4Compression()),
		kgo.ProducerLinger(50*time.Millisecond))
	w.plain = src.Client(t,
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerBatchCompression(kgo.SnappyCompression()),
		kgo.ProducerLinger(5*time.Millisecond))
	w.txn = src.Client(t,
		kgo.TransactionalID(kafkatest.Topic(t, "crashtest-producer")),
		kgo.TransactionTimeout(30*time.Second),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerBatchCompression(kgo.NoCompression()))
	// Registered after the clients: runs before they are closed.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = w.stop(ctx) // errors are reported by the test's own call
	})
	return w
}

func (w *workload) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = err
	}
}

func (w *workload) firstErr() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// record builds the record with sequence number seq. Every variant a copy
// could get wrong is in the mix: null and empty keys, null (tombstone) and
// empty values, no headers, null and empty header values, a repeated header
// key, timestamps that go backwards.
func (w *workload) record(seq int64, p int32) *kgo.Record {
	r := &kgo.Record{Topic: w.topic, Partition: p, Timestamp: w.base.Add(time.Duration(seq) * time.Millisecond)}
	if seq%9 == 0 {
		r.Timestamp = r.Timestamp.Add(-5 * time.Second)
	}
	switch seq % 10 {
	case 0: // null key
	case 1:
		r.Key = []byte{}
	default:
		r.Key = fmt.Appendf(nil, "key-%d", seq%64)
	}
	if seq%7 == 0 {
		// No headers: the sequence number is in the value.
		r.Value = fmt.Appendf(nil, "seq=%d;%s", seq, filler(seq))
		return r
	}
	r.Headers = []kgo.RecordHeader{
		{Key: "seq", Value: strconv.AppendInt(nil, seq, 10)},
		{Key: "origin", Value: []byte("crashtest")},
	}
	if seq%5 == 0 {
		r.Headers = append(r.Headers,
			kgo.RecordHeader{Key: "empty", Value: []byte{}},
			kgo.RecordHeader{Key: "null"},
			kgo.RecordHeader{Key: "origin", Value: []byte("again")})
	}
	switch {
	case seq%13 == 0: // tombstone
	case seq%17 == 0:
		r.Value = []byte{}
	default:
		r.Value = fmt.Appendf(nil, "seq=%d;%s", seq, filler(seq))
	}
	return r
}

const fillerText = "the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs; "

// filler returns 0 to 255 bytes of compressible text.
func filler(seq int64) string {
	n := int(seq*7919) % 256
	return strings.Repeat(fillerText, n/len(fillerText)+1)[:n]
}

// seqOf recovers a record's sequence number: from its first "seq" header,
// or from its value when it has no headers. -1 if it has neither.
func seqOf(key, value []byte, headers []kgo.RecordHeader) int64 {
	for _, h := range headers {
		if h.Key == "seq" {
			if n, err := strconv.ParseInt(string(h.Value), 10, 64); err == nil {
				return n
			}
			return -1
		}
	}
	if s, ok := bytes.CutPrefix(value, []byte("seq=")); ok {
		if i := bytes.IndexByte(s, ';'); i > 0 {
			if n, err := strconv.ParseInt(string(s[:i]), 10, 64); err == nil {
				return n
			}
		}
	}
	return -1
}

// producePlain writes one record with a non-transactional producer,
// asynchronously.
func (w *workload) producePlain(ctx context.Context, cl *kgo.Client, p int32) {
	seq := w.next.Add(1) - 1
	cl.Produce(ctx, w.record(seq, p), func(r *kgo.Record, err error) {
		if err != nil {
			w.fail(fmt.Errorf("produce record %d to %s/%d: %w", seq, r.Topic, r.Partition, err))
			return
		}
		w.mu.Lock()
		w.committed[seq] = p
		w.mu.Unlock()
	})
}

// backlog writes n non-transactional records synchronously, interleaved with one
// aborted and one committed transaction on the same partitions, so the
// copy starts with a backlog that holds an aborted transaction whatever
// the timing of the rest.
func (w *workload) backlog(ctx context.Context, rng *rand.Rand, n int) error {
	for i, abort := range []bool{true, false} {
		if err := w.txn.BeginTransaction(); err != nil {
			return fmt.Errorf("backlog: begin transaction: %w", err)
		}
		seqs, err := w.produceTxn(ctx, rng, backlogTxnSize)
		if err != nil {
			return fmt.Errorf("backlog: %w", err)
		}
		half := n / 2
		if i == 1 {
			half = n - n/2
		}
		for range half {
			w.producePlain(ctx, w.bulk, int32(rng.IntN(int(w.partitions))))
		}
		if err := w.bulk.Flush(ctx); err != nil {
			return fmt.Errorf("backlog: flush: %w", err)
		}
		if err := w.endTxn(ctx, seqs, abort); err != nil {
			return fmt.Errorf("backlog: %w", err)
		}
	}
	return w.firstErr()
}

// produceTxn writes n records inside the open transaction.
func (w *workload) produceTxn(ctx context.Context, rng *rand.Rand, n int) (map[int64]int32, error) {
	seqs := make(map[int64]int32, n)
	recs := make([]*kgo.Record, 0, n)
	for range n {
		p := int32(rng.IntN(int(w.partitions)))
		seq := w.next.Add(1) - 1
		seqs[seq] = p
		recs = append(recs, w.record(seq, p))
	}
	if err := w.txn.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return nil, fmt.Errorf("transactional produce: %w", err)
	}
	return seqs, nil
}

// endTxn commits or aborts the open transaction and notes its records.
func (w *workload) endTxn(ctx context.Context, seqs map[int64]int32, abort bool) error {
	commit := kgo.TryCommit
	if abort {
		commit = kgo.TryAbort
	}
	if err := w.txn.EndTransaction(ctx, commit); err != nil {
		return fmt.Errorf("end transaction (abort %v) of %d records: %w", abort, len(seqs), err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	into := w.committed
	if abort {
		into = w.aborted
		w.txnsAborted++
	} else {
		w.txnsCommitted++
	}
	for s, p := range seqs {
		into[s] = p
	}
	return nil
}

// start runs the plain and the transactional producer until stop.
func (w *workload) start(seed uint64) {
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	w.wg.Add(2)
	go func() {
		defer w.wg.Done()
		rng := rand.New(rand.NewPCG(seed, 2))
		tick := time.NewTicker(plainEvery)
		defer tick.Stop()
		for {
			select {
			case <-w.stopping:
				return
			case <-tick.C:
			}
			if w.next.Load() >= w.maxRecords {
				continue
			}
			for range w.plainChunk {
				w.producePlain(ctx, w.plain, int32(rng.IntN(int(w.partitions))))
			}
		}
	}()
	go func() {
		defer w.wg.Done()
		rng := rand.New(rand.NewPCG(seed, 3))
		for {
			pause := time.NewTimer(txnPause + time.Duration(rng.Int64N(int64(2*txnPause))))
			select {
			case <-w.stopping:
				pause.Stop()
				return
			case <-pause.C:
			}
			if w.next.Load() >= w.maxRecords {
				continue
			}
			if err := w.transaction(ctx, rng); err != nil {
				w.fail(err)
				return
			}
		}
	}()
}

// transaction runs one transaction of the background producer: committed,
// aborted, sometimes held open a while first. Stopping cuts the hold short
// and still ends the transaction, so no transaction stays open.
func (w *workload) transaction(ctx context.Context, rng *rand.Rand) error {
	abort := rng.IntN(txnAbortOneIn) == 0
	var hold time.Duration
	if rng.IntN(txnHoldOneIn) == 0 {
		hold = time.Duration(rng.Int64N(int64(txnHoldMax)))
	}
	if err := w.txn.BeginTransaction(); err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	seqs, err := w.produceTxn(ctx, rng, 1+rng.IntN(txnRecordsMax))
	if err != nil {
		_ = w.txn.EndTransaction(ctx, kgo.TryAbort)
		return err
	}
	if hold > 0 {
		timer := time.NewTimer(hold)
		select {
		case <-timer.C:
		case <-w.stopping:
			timer.Stop()
		}
	}
	return w.endTxn(ctx, seqs, abort)
}

// stop ends production: the producers finish what they are doing (the
// transactional one ends its transaction), buffered records are flushed.
// It returns the first producer error.
func (w *workload) stop(ctx context.Context) error {
	w.stopOnce.Do(func() { close(w.stopping) })
	w.wg.Wait()
	if err := w.plain.Flush(ctx); err != nil {
		w.fail(fmt.Errorf("flush the plain producer: %w", err))
	}
	if w.cancel != nil {
		w.cancel()
	}
	return w.firstErr()
}

// counts returns the ledger's totals.
func (w *workload) counts() (committed, aborted, txnsCommitted, txnsAborted int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.committed), len(w.aborted), w.txnsCommitted, w.txnsAborted
}

// rec is one record as read back, everything a copy must preserve.
type rec struct {
	offset  int64
	key     []byte
	value   []byte
	headers []kgo.RecordHeader
	ts      int64 // milliseconds
	tsType  int8
	seq     int64
}

func (r rec) String() string {
	return fmt.Sprintf("seq %d at offset %d (key %s, value %s, %d headers, timestamp %d type %d)",
		r.seq, r.offset, showBytes(r.key), showBytes(r.value), len(r.headers), r.ts, r.tsType)
}

func showBytes(b []byte) string {
	switch {
	case b == nil:
		return "null"
	case len(b) > 24:
		return strconv.Quote(string(b[:24])) + "..."
	default:
		return strconv.Quote(string(b))
	}
}

// sameBytes tells null from empty.
func sameBytes(a, b []byte) bool { return (a == nil) == (b == nil) && bytes.Equal(a, b) }

// diff returns how target record d differs from source record s, "" if
// it does not.
func diff(s, d rec) string {
	var out []string
	if !sameBytes(s.key, d.key) {
		out = append(out, fmt.Sprintf("key %s vs %s", showBytes(s.key), showBytes(d.key)))
	}
	if !sameBytes(s.value, d.value) {
		out = append(out, fmt.Sprintf("value %s vs %s", showBytes(s.value), showBytes(d.value)))
	}
	if s.ts != d.ts || s.tsType != d.tsType {
		out = append(out, fmt.Sprintf("timestamp %d (type %d) vs %d (type %d)", s.ts, s.tsType, d.ts, d.tsType))
	}
	if len(s.headers) != len(d.headers) {
		out = append(out, fmt.Sprintf("%d headers vs %d", len(s.headers), len(d.headers)))
	} else {
		for i := range s.headers {
			if s.headers[i].Key != d.headers[i].Key || !sameBytes(s.headers[i].Value, d.headers[i].Value) {
				out = append(out, fmt.Sprintf("header %d: %q=%s vs %q=%s", i,
					s.headers[i].Key, showBytes(s.headers[i].Value), d.headers[i].Key, showBytes(d.headers[i].Value)))
				break
			}
		}
	}
	return strings.Join(out, "; ")
}

// readAll reads every committed record of topic below ends, per
// partition, read_committed. Control records are read (not returned) so
// the reader knows it has passed trailing transaction markers.
func readAll(ctx context.Context, c *kafkatest.Cluster, topic string, ends kadm.ListedOffsets) (map[int32][]rec, error) {
	want := map[int32]int64{}
	start := map[int32]kgo.Offset{}
	var lookupErr error
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			lookupErr = errors.Join(lookupErr, fmt.Errorf("end offset of %s/%d: %w", o.Topic, o.Partition, o.Err))
		}
		want[o.Partition] = o.Offset
		start[o.Partition] = kgo.NewOffset().AtStart()
	})
	if lookupErr != nil {
		return nil, lookupErr
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Bootstrap...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: start}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords())
	if err != nil {
		return nil, fmt.Errorf("%s: reader of %s: %w", c.Name, topic, err)
	}
	defer cl.Close()
	pos := map[int32]int64{}
	out := map[int32][]rec{}
	behind := func() string {
		for p, end := range want {
			if pos[p] < end {
				return fmt.Sprintf("%s/%d at %d of %d", topic, p, pos[p], end)
			}
		}
		return ""
	}
	for behind() != "" {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s: read %s: %s: %w", c.Name, topic, behind(), ctx.Err())
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) {
			ferr = errors.Join(ferr, fmt.Errorf("fetch %s/%d: %w", t, p, err))
		})
		if ferr != nil {
			return nil, fmt.Errorf("%s: read %s: %w", c.Name, topic, ferr)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset >= want[r.Partition] {
				return
			}
			pos[r.Partition] = r.Offset + 1
			if r.Attrs.IsControl() {
				return
			}
			out[r.Partition] = append(out[r.Partition], rec{
				offset: r.Offset, key: r.Key, value: r.Value, headers: r.Headers,
				ts: r.Timestamp.UnixMilli(), tsType: r.Attrs.TimestampType(),
				seq: seqOf(r.Key, r.Value, r.Headers),
			})
		})
	}
	return out, nil
}

// checkSource checks the source against the producers' ledger: it holds
// exactly the committed records, none aborted. A failure here is the test
// bed's or the producers', not the mirror's.
func checkSource(t *testing.T, w *workload, src map[int32][]rec) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	seen := map[int64]bool{}
	n := 0
	for p, rs := range src {
		for _, r := range rs {
			n++
			switch part, ok := w.committed[r.seq]; {
			case r.seq < 0:
				t.Errorf("source %d: record with no sequence number: %v", p, r)
			case seen[r.seq]:
				t.Errorf("source %d: %v appears twice on the source", p, r)
			case !ok:
				if _, ab := w.aborted[r.seq]; ab {
					t.Errorf("source %d: aborted %v is visible to read_committed on the source", p, r)
				} else {
					t.Errorf("source %d: %v was never acknowledged to the producer", p, r)
				}
			case part != p:
				t.Errorf("source %d: %v was produced to partition %d", p, r, part)
			}
			seen[r.seq] = true
		}
	}
	if n != len(w.committed) {
		var missing []int64
		for s := range w.committed {
			if !seen[s] {
				missing = append(missing, s)
			}
		}
		sort.Slice(missing, func(i, j int) bool { return missing[i] < missing[j] })
		t.Errorf("source holds %d records, the producers had %d acknowledged/committed; missing %v", n, len(w.committed), head(missing, 10))
	}
}

// compareCopy checks the target partition by partition against the
// source: same records, same order, byte for byte, nothing aborted,
// nothing twice.
func compareCopy(t *testing.T, w *workload, src, dst map[int32][]rec) {
	t.Helper()
	w.mu.Lock()
	aborted := make(map[int64]bool, len(w.aborted))
	for s := range w.aborted {
		aborted[s] = true
	}
	w.mu.Unlock()
	for p := range dst {
		if _, ok := src[p]; !ok && len(dst[p]) > 0 {
			t.Errorf("target partition %d holds %d records, the source partition none", p, len(dst[p]))
		}
	}
	for p := int32(0); p < w.partitions; p++ {
		srs, drs := src[p], dst[p]
		dstSeqs := map[int64]int{}
		for _, d := range drs {
			dstSeqs[d.seq]++
			if aborted[d.seq] {
				t.Errorf("partition %d: aborted record copied: target %v", p, d)
			}
		}
		var dups []int64
		for s, n := range dstSeqs {
			if n > 1 {
				dups = append(dups, s)
			}
		}
		sort.Slice(dups, func(i, j int) bool { return dups[i] < dups[j] })
		if len(dups) > 0 {
			t.Errorf("partition %d: %d records on the target more than once, sequence numbers %v", p, len(dups), head(dups, 10))
		}
		if len(srs) != len(drs) {
			srcSeqs := map[int64]bool{}
			var missing, extra []int64
			for _, s := range srs {
				srcSeqs[s.seq] = true
				if dstSeqs[s.seq] == 0 {
					missing = append(missing, s.seq)
				}
			}
			for s := range dstSeqs {
				if !srcSeqs[s] {
					extra = append(extra, s)
				}
			}
			sort.Slice(extra, func(i, j int) bool { return extra[i] < extra[j] })
			t.Errorf("partition %d: %d records on the source, %d on the target; missing on the target %v, not from the source %v",
				p, len(srs), len(drs), head(missing, 10), head(extra, 10))
		}
		bad := 0
		for i := range min(len(srs), len(drs)) {
			s, d := srs[i], drs[i]
			if s.seq != d.seq {
				t.Errorf("partition %d: record %d in order is seq %d on the source (offset %d), seq %d on the target (offset %d)",
					p, i, s.seq, s.offset, d.seq, d.offset)
				bad++
			} else if why := diff(s, d); why != "" {
				t.Errorf("partition %d: %v differs on the target at offset %d: %s", p, s, d.offset, why)
				bad++
			}
			if bad >= 5 {
				t.Errorf("partition %d: more differences not shown", p)
				break
			}
		}
	}
}

// checkOffsetMap checks that the persisted map of each partition covers
// the whole source partition and translates each source record's offset
// to the target offset that record was found at.
func checkOffsetMap(t *testing.T, p int32, om *offsetmap.Map, srcEnd int64, srs, drs []rec) {
	t.Helper()
	if om == nil {
		t.Errorf("partition %d: no persisted offset map", p)
		return
	}
	if om.Start() != 0 || om.Next() != srcEnd {
		t.Errorf("partition %d: offset map covers source offsets [%d, %d), the source partition is [0, %d)", p, om.Start(), om.Next(), srcEnd)
	}
	var mapped int64
	for _, r := range om.Ranges() {
		mapped += r.Len
	}
	if mapped != int64(len(srs)) {
		t.Errorf("partition %d: offset map ranges cover %d records, the source partition holds %d", p, mapped, len(srs))
	}
	wantNext := int64(0)
	if len(drs) > 0 {
		wantNext = drs[len(drs)-1].offset + 1
	}
	if om.TargetNext() != wantNext {
		t.Errorf("partition %d: offset map TargetNext %d, the last copied record is at %d", p, om.TargetNext(), wantNext-1)
	}
	if got, err := om.Translate(srcEnd); err != nil || got != om.TargetNext() {
		t.Errorf("partition %d: source end %d translates to %d (%v), want TargetNext %d", p, srcEnd, got, err, om.TargetNext())
	}
	bad := 0
	for i := range min(len(srs), len(drs)) {
		got, err := om.Translate(srs[i].offset)
		if err == nil && got == drs[i].offset {
			continue
		}
		t.Errorf("partition %d: source offset %d (seq %d) translates to %d (err %v); the record is at target offset %d",
			p, srs[i].offset, srs[i].seq, got, err, drs[i].offset)
		if bad++; bad >= 5 {
			t.Errorf("partition %d: more translation errors not shown", p)
			return
		}
	}
}

func head(s []int64, n int) []int64 {
	if len(s) > n {
		return s[:n]
	}
	return s
}
