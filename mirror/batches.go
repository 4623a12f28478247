package mirror

// Record batches, as fetched and as produced. The copy engine moves a
// source batch to the target whole whenever the target broker accepts it as
// it is — compressed bytes are never decompressed or recompressed — and
// re-encodes it otherwise. The rules, each checked against real Kafka:
//
//   - Control batches (transaction markers) and batches of aborted
//     transactions are not copied; they only move the position.
//   - Empty batches (kept by compaction for producer state) are not copied.
//   - A batch whose record count equals lastOffsetDelta+1 (no offset gaps)
//     with CreateTime timestamps is copied whole. Only its header changes:
//     base offset 0, leader epoch -1, the transactional bit, the mirror's
//     producer id, epoch and sequence, and the CRC over the new header.
//   - A batch with offset gaps inside (compaction removed records) is
//     re-encoded with consecutive offset deltas and the same codec: a broker
//     rejects a gapped batch ("Inconsistent batch offset range").
//   - A batch with LogAppendTime timestamps is re-encoded with every record
//     at the batch's append time, the timestamp a consumer of the source
//     sees; produced as is, the target would reject or restamp it.
//   - A batch carrying a compaction delete horizon (attribute bit 6) is
//     re-encoded without it: the horizon belongs to the source's cleaner.
//   - A batch that starts before the position (the fetch returned a batch
//     the previous round copied part of) is re-encoded from the position on.
//   - Message format v0/v1 (Kafka < 0.11 producers, long gone from Kafka
//     4) is not supported: the partition fails with a clear error.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"sort"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Byte offsets of the v2 record batch header fields.
const (
	batchBaseOffset      = 0
	batchLength          = 8
	batchLeaderEpoch     = 12
	batchMagic           = 16
	batchCRC             = 17
	batchAttributes      = 21
	batchLastOffsetDelta = 23
	batchFirstTimestamp  = 27
	batchMaxTimestamp    = 35
	batchProducerID      = 43
	batchProducerEpoch   = 51
	batchBaseSequence    = 53
	batchNumRecords      = 57
	batchHeaderSize      = 61
)

// Attribute bits of a v2 batch.
const (
	attrCodecMask     = 0x07
	attrLogAppendTime = 0x08
	attrTransactional = 0x10
	attrControl       = 0x20
	attrDeleteHorizon = 0x40
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errOldMessageFormat: the source holds v0/v1 message sets.
var errOldMessageFormat = errors.New("message format v0/v1 (magic < 2) is not supported; upgrade the source topic's message format")

// outBatch is one batch to produce on the target and where its records
// came from.
type outBatch struct {
	// raw is a complete v2 batch; the producer fields and the CRC are set
	// when it is produced (setProducer).
	raw []byte
	// n is the number of records.
	n int32
	// srcBase is the source offset of the first record. When srcOffsets is
	// nil the records came from srcBase, srcBase+1, ... (a batch copied
	// whole); otherwise srcOffsets lists each record's source offset.
	srcBase    int64
	srcOffsets []int64
	// whole says the batch is the source's bytes, not re-encoded.
	whole bool
	// firstTimestamp is the first record's timestamp (latency metrics).
	firstTimestamp int64
}

// splitResult is what a fetched partition yields.
type splitResult struct {
	batches []outBatch
	// next is the source position after everything dealt with: copied,
	// skipped (control, aborted, empty) or before the position.
	next int64
	// records and bytes count what batches hold (bytes: source size).
	records int
	bytes   int
	// skipped counts records of aborted transactions left behind.
	skipped int
}

// abortTracker follows the aborted transactions of one fetch response the
// way a read_committed consumer does: a transactional batch is aborted
// when its producer has an aborted transaction that started at or before
// the batch and whose abort marker has not been passed yet.
type abortTracker struct {
	pending []kmsg.FetchResponseTopicPartitionAbortedTransaction // by first offset
	active  map[int64]bool
}

func newAbortTracker(aborted []kmsg.FetchResponseTopicPartitionAbortedTransaction) *abortTracker {
	p := append([]kmsg.FetchResponseTopicPartitionAbortedTransaction(nil), aborted...)
	sort.Slice(p, func(i, j int) bool { return p[i].FirstOffset < p[j].FirstOffset })
	return &abortTracker{pending: p, active: map[int64]bool{}}
}

// aborted reports whether a batch is part of an aborted transaction, and
// retires a producer's aborted transaction at its abort marker.
func (a *abortTracker) aborted(b *kmsg.RecordBatch) bool {
	last := b.FirstOffset + int64(b.LastOffsetDelta)
	for len(a.pending) > 0 && a.pending[0].FirstOffset <= last {
		a.active[a.pending[0].ProducerID] = true
		a.pending = a.pending[1:]
	}
	if b.Attributes&attrTransactional == 0 {
		return false
	}
	if b.Attributes&attrControl != 0 {
		if isAbortMarker(b) {
			delete(a.active, b.ProducerID)
		}
		return false
	}
	return a.active[b.ProducerID]
}

// isAbortMarker reports whether a control batch holds an abort marker:
// its one record's key is version int16, type int16 (0 abort, 1 commit).
func isAbortMarker(b *kmsg.RecordBatch) bool {
	if b.Attributes&attrCodecMask != 0 || b.NumRecords != 1 {
		return false
	}
	var r kmsg.Record
	if err := r.ReadFrom(b.Records); err != nil || len(r.Key) < 4 {
		return false
	}
	return binary.BigEndian.Uint16(r.Key[2:4]) == 0
}

// splitBatches turns the record bytes of a fetched partition into batches
// to produce, from source position next on. Batches copied whole are
// rewritten in place: data must not be used for anything else afterwards. It stops at a truncated batch
// at the end (a fetch may end mid-batch) and at maxRecords/maxBytes once at
// least one batch is taken. dec decompresses batches that are re-encoded;
// enc compresses them again with their codec.
func splitBatches(data []byte, aborted []kmsg.FetchResponseTopicPartitionAbortedTransaction, next int64,
	maxRecords, maxBytes int, codecs *codecs) (splitResult, error) {
	res := splitResult{next: next}
	tracker := newAbortTracker(aborted)
	for len(data) >= batchLength+4 {
		size := int(int32(binary.BigEndian.Uint32(data[batchLength:]))) + batchLength + 4
		if size < batchHeaderSize || size > len(data) {
			if size < batchHeaderSize && len(data) >= batchMagic+1 && data[batchMagic] < 2 {
				return res, errOldMessageFormat
			}
			if size < batchHeaderSize {
				return res, fmt.Errorf("record batch at offset %d: length %d is below the v2 header size", int64(binary.BigEndian.Uint64(data)), size)
			}
			break // truncated by the fetch size limit: the next fetch has it
		}
		raw := data[:size]
		if raw[batchMagic] != 2 {
			return res, errOldMessageFormat
		}
		var b kmsg.RecordBatch
		if err := b.ReadFrom(raw); err != nil {
			return res, fmt.Errorf("record batch at offset %d: %w", b.FirstOffset, err)
		}
		if got := crc32.Checksum(raw[batchAttributes:], castagnoli); got != uint32(b.CRC) {
			return res, fmt.Errorf("record batch at offset %d: CRC %08x, computed %08x: corrupt on the source or in transit", b.FirstOffset, uint32(b.CRC), got)
		}
		last := b.FirstOffset + int64(b.LastOffsetDelta)
		if last < next {
			data = data[size:]
			continue // wholly before the position
		}
		isAborted := tracker.aborted(&b)
		if len(res.batches) > 0 && (res.records+int(b.NumRecords) > maxRecords || res.bytes+size > maxBytes) &&
			b.Attributes&attrControl == 0 && !isAborted && b.NumRecords > 0 {
			break // this transaction is full; the batch starts the next
		}
		data = data[size:]
		switch {
		case b.Attributes&attrControl != 0, b.NumRecords == 0:
		case isAborted:
			res.skipped += int(b.NumRecords)
		case b.FirstOffset >= next && b.NumRecords == b.LastOffsetDelta+1 &&
			b.Attributes&(attrLogAppendTime|attrDeleteHorizon) == 0:
			// In place: the fetched bytes are ours and copied nowhere else.
			out := outBatch{raw: raw, n: b.NumRecords, srcBase: b.FirstOffset, whole: true, firstTimestamp: b.FirstTimestamp}
			prepareHeader(out.raw)
			res.batches = append(res.batches, out)
			res.records += int(b.NumRecords)
			res.bytes += size
		default:
			out, err := reencode(&b, next, codecs)
			if err != nil {
				return res, fmt.Errorf("re-encode record batch at offset %d: %w", b.FirstOffset, err)
			}
			if out.n > 0 {
				res.batches = append(res.batches, out)
				res.records += int(out.n)
				res.bytes += size
			}
		}
		res.next = last + 1
	}
	return res, nil
}

// prepareHeader makes a fetched batch producible: base offset 0, no leader
// epoch, transactional. Producer fields and CRC follow in setProducer.
func prepareHeader(raw []byte) {
	binary.BigEndian.PutUint64(raw[batchBaseOffset:], 0)
	binary.BigEndian.PutUint32(raw[batchLeaderEpoch:], 0xffffffff)
	attrs := binary.BigEndian.Uint16(raw[batchAttributes:])
	binary.BigEndian.PutUint16(raw[batchAttributes:], attrs|attrTransactional)
}

// setProducer stamps the mirror's producer id, epoch and the batch's first
// sequence into a prepared batch and recomputes its CRC.
func setProducer(raw []byte, pid int64, epoch int16, seq int32) {
	binary.BigEndian.PutUint64(raw[batchProducerID:], uint64(pid))
	binary.BigEndian.PutUint16(raw[batchProducerEpoch:], uint16(epoch))
	binary.BigEndian.PutUint32(raw[batchBaseSequence:], uint32(seq))
	binary.BigEndian.PutUint32(raw[batchCRC:], crc32.Checksum(raw[batchAttributes:], castagnoli))
}

// codecs decompresses and compresses re-encoded batches.
type codecs struct {
	dec  kgo.Decompressor
	comp map[int16]kgo.Compressor
}

func newCodecs() (*codecs, error) {
	c := &codecs{dec: kgo.DefaultDecompressor(), comp: map[int16]kgo.Compressor{}}
	for codec, cc := range map[int16]kgo.CompressionCodec{
		1: kgo.GzipCompression(), 2: kgo.SnappyCompression(), 3: kgo.Lz4Compression(), 4: kgo.ZstdCompression(),
	} {
		comp, err := kgo.DefaultCompressor(cc)
		if err != nil {
			return nil, fmt.Errorf("compressor for codec %d: %w", codec, err)
		}
		c.comp[codec] = comp
	}
	return c, nil
}

// reencode rebuilds a batch from its records at or after next, with
// consecutive offset deltas, CreateTime timestamps as a consumer of the
// source sees them, and the batch's codec.
func reencode(b *kmsg.RecordBatch, next int64, c *codecs) (outBatch, error) {
	codec := b.Attributes & attrCodecMask
	body := b.Records
	if codec != 0 {
		var err error
		if body, err = c.dec.Decompress(body, kgo.CompressionCodecType(codec)); err != nil {
			return outBatch{}, fmt.Errorf("decompress (codec %d): %w", codec, err)
		}
	}
	type kept struct {
		rec kmsg.Record
		ts  int64
	}
	var (
		recs []kept
		srcs []int64
	)
	for i := int32(0); i < b.NumRecords; i++ {
		n, used := binary.Varint(body)
		if used <= 0 || n < 0 || int64(len(body)-used) < n {
			return outBatch{}, fmt.Errorf("record %d of %d: bad length", i, b.NumRecords)
		}
		var r kmsg.Record
		if err := r.ReadFrom(body[:used+int(n)]); err != nil {
			return outBatch{}, fmt.Errorf("record %d of %d: %w", i, b.NumRecords, err)
		}
		body = body[used+int(n):]
		src := b.FirstOffset + int64(r.OffsetDelta)
		if src < next {
			continue
		}
		ts := b.FirstTimestamp + r.TimestampDelta64
		if b.Attributes&attrLogAppendTime != 0 {
			ts = b.MaxTimestamp
		}
		recs = append(recs, kept{r, ts})
		srcs = append(srcs, src)
	}
	if len(recs) == 0 {
		return outBatch{}, nil
	}
	first, maxTS := recs[0].ts, recs[0].ts
	var records []byte
	for i := range recs {
		r := &recs[i].rec
		r.OffsetDelta = int32(i)
		d := recs[i].ts - first
		// AppendTo falls back to the int32 field when the int64 one is 0.
		r.TimestampDelta, r.TimestampDelta64 = int32(d), d
		maxTS = max(maxTS, recs[i].ts)
		records = appendRecord(records, r)
	}
	if codec != 0 {
		comp := c.comp[codec]
		if comp == nil {
			return outBatch{}, fmt.Errorf("unknown compression codec %d", codec)
		}
		out, used := comp.Compress(new(bytes.Buffer), records)
		if used == kgo.CodecError {
			return outBatch{}, fmt.Errorf("compress (codec %d) failed", codec)
		}
		records = bytes.Clone(out)
		codec = int16(used)
	}
	nb := kmsg.RecordBatch{
		PartitionLeaderEpoch: -1,
		Magic:                2,
		Attributes:           codec | attrTransactional,
		LastOffsetDelta:      int32(len(recs) - 1),
		FirstTimestamp:       first,
		MaxTimestamp:         maxTS,
		ProducerID:           -1,
		ProducerEpoch:        -1,
		FirstSequence:        -1,
		NumRecords:           int32(len(recs)),
		Records:              records,
	}
	nb.Length = int32(batchHeaderSize - batchLength - 4 + len(records))
	return outBatch{raw: nb.AppendTo(nil), n: nb.NumRecords, srcBase: srcs[0], srcOffsets: srcs, firstTimestamp: first}, nil
}

// appendRecord appends one record in the v2 wire form: the varint length
// of what follows, then the fields. AppendTo writes Length as given, so the
// body is measured first (a zero Length takes one byte).
func appendRecord(dst []byte, r *kmsg.Record) []byte {
	r.Length = 0
	r.Length = int32(len(r.AppendTo(nil)) - 1)
	return r.AppendTo(dst)
}

// newRecordsBatch builds an uncompressed transactional batch of records
// (checkpoint deltas), all stamped ts.
func newRecordsBatch(recs []kmsg.Record, ts int64) []byte {
	var records []byte
	for i := range recs {
		recs[i].OffsetDelta = int32(i)
		records = appendRecord(records, &recs[i])
	}
	nb := kmsg.RecordBatch{
		PartitionLeaderEpoch: -1,
		Magic:                2,
		Attributes:           attrTransactional,
		LastOffsetDelta:      int32(len(recs) - 1),
		FirstTimestamp:       ts,
		MaxTimestamp:         ts,
		ProducerID:           -1,
		ProducerEpoch:        -1,
		FirstSequence:        -1,
		NumRecords:           int32(len(recs)),
		Records:              records,
	}
	nb.Length = int32(batchHeaderSize - batchLength - 4 + len(records))
	return nb.AppendTo(nil)
}
