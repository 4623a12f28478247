package mirror

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// testRecord is a record of a synthetic source batch.
type testRecord struct {
	offsetDelta int32
	tsDelta     int64
	key, value  []byte
	headers     []kmsg.Header
}

// sourceBatch encodes a v2 batch as a broker would serve it: at base, with
// the given attributes (codec bits compress the records), producer fields
// and CRC.
func sourceBatch(t testing.TB, base int64, attrs int16, firstTS int64, pid int64, recs ...testRecord) []byte {
	t.Helper()
	var body []byte
	var lastDelta int32
	maxTS := firstTS
	for _, r := range recs {
		kr := kmsg.Record{OffsetDelta: r.offsetDelta, TimestampDelta: int32(r.tsDelta), TimestampDelta64: r.tsDelta,
			Key: r.key, Value: r.value, Headers: r.headers}
		body = appendRecord(body, &kr)
		lastDelta = max(lastDelta, r.offsetDelta)
		maxTS = max(maxTS, firstTS+r.tsDelta)
	}
	if codec := attrs & attrCodecMask; codec != 0 {
		c, err := newCodecs()
		if err != nil {
			t.Fatal(err)
		}
		out, used := c.comp[codec].Compress(new(bytes.Buffer), body)
		if int16(used) != codec {
			t.Fatalf("compress with codec %d used %d", codec, used)
		}
		body = bytes.Clone(out)
	}
	b := kmsg.RecordBatch{FirstOffset: base, PartitionLeaderEpoch: 7, Magic: 2, Attributes: attrs, LastOffsetDelta: lastDelta,
		FirstTimestamp: firstTS, MaxTimestamp: maxTS, ProducerID: pid, ProducerEpoch: 3, FirstSequence: 11,
		NumRecords: int32(len(recs)), Records: body}
	b.Length = int32(batchHeaderSize - batchLength - 4 + len(body))
	raw := b.AppendTo(nil)
	binary.BigEndian.PutUint32(raw[batchCRC:], crc32.Checksum(raw[batchAttributes:], castagnoli))
	return raw
}

func controlBatch(t testing.TB, offset, pid int64, commit bool) []byte {
	t.Helper()
	key := []byte{0, 0, 0, 0}
	if commit {
		key[3] = 1
	}
	return sourceBatch(t, offset, attrTransactional|attrControl, 1, pid, testRecord{key: key, value: []byte{0, 0, 0, 0, 0, 0}})
}

func recs(n int) []testRecord {
	out := make([]testRecord, n)
	for i := range out {
		out[i] = testRecord{offsetDelta: int32(i), tsDelta: int64(i), key: []byte(fmt.Sprintf("k%d", i)), value: []byte(fmt.Sprintf("v%d", i)),
			headers: []kmsg.Header{{Key: "h", Value: []byte{byte(i)}}}}
	}
	return out
}

// decoded is a produced batch read back the way a consumer reads it.
type decoded struct {
	offset int64 // relative to the produced batch's base
	ts     int64
	key    string
	value  string
	null   bool
	hdrs   string
}

func decodeOut(t *testing.T, raw []byte) (kmsg.RecordBatch, []decoded) {
	t.Helper()
	var b kmsg.RecordBatch
	if err := b.ReadFrom(raw); err != nil {
		t.Fatal(err)
	}
	if got := crc32.Checksum(raw[batchAttributes:], castagnoli); got != uint32(b.CRC) {
		t.Fatalf("produced batch CRC %08x, computed %08x", uint32(b.CRC), got)
	}
	fp, _ := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{}, &kmsg.FetchResponseTopicPartition{RecordBatches: raw}, kgo.DefaultDecompressor(), nil)
	if fp.Err != nil {
		t.Fatal(fp.Err)
	}
	var out []decoded
	for _, r := range fp.Records {
		d := decoded{offset: r.Offset, ts: r.Timestamp.UnixMilli(), key: string(r.Key), value: string(r.Value), null: r.Value == nil}
		for _, h := range r.Headers {
			d.hdrs += fmt.Sprintf("%s=%x;", h.Key, h.Value)
		}
		out = append(out, d)
	}
	return b, out
}

func mustCodecs(t testing.TB) *codecs {
	t.Helper()
	c, err := newCodecs()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSplitBatchesCopiesWholeBatchesUnchanged(t *testing.T) {
	for codec, name := range map[int16]string{0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"} {
		t.Run(name, func(t *testing.T) {
			a := sourceBatch(t, 100, codec, 1_700_000_000_000, -1, recs(5)...)
			b := sourceBatch(t, 105, codec, 1_700_000_000_100, -1, recs(3)...)
			res, err := splitBatches(append(bytes.Clone(a), b...), nil, 100, 1000, 1<<20, mustCodecs(t))
			if err != nil {
				t.Fatal(err)
			}
			if res.next != 108 || res.records != 8 || len(res.batches) != 2 {
				t.Fatalf("next %d, %d records in %d batches; want 108, 8 in 2", res.next, res.records, len(res.batches))
			}
			for i, src := range [][]byte{a, b} {
				out := res.batches[i]
				if !out.whole || out.srcOffsets != nil {
					t.Fatalf("batch %d re-encoded; want it whole", i)
				}
				setProducer(out.raw, 42, 1, 9)
				// Everything after the producer fields — the compressed
				// records — is the source's bytes.
				if !bytes.Equal(out.raw[batchNumRecords:], src[batchNumRecords:]) {
					t.Errorf("batch %d: records differ from the source's bytes", i)
				}
				hb, got := decodeOut(t, out.raw)
				if hb.ProducerID != 42 || hb.ProducerEpoch != 1 || hb.FirstSequence != 9 || hb.FirstOffset != 0 ||
					hb.PartitionLeaderEpoch != -1 || hb.Attributes != codec|attrTransactional {
					t.Errorf("batch %d header %+v", i, hb)
				}
				_, want := decodeOut(t, src)
				for j := range want {
					want[j].offset -= out.srcBase // produced batches start at 0
				}
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("batch %d records %v, want %v", i, got, want)
				}
			}
		})
	}
}

func TestSplitBatchesReencodesGapsAndAppendTime(t *testing.T) {
	c := mustCodecs(t)
	// Compaction left offsets 0, 3 and 4 of a 5-record lz4 batch; one is a
	// tombstone, one has an empty value.
	gapped := []testRecord{
		{offsetDelta: 0, tsDelta: 0, key: []byte("a"), value: []byte("1")},
		{offsetDelta: 3, tsDelta: -5, key: []byte("b"), value: nil},
		{offsetDelta: 4, tsDelta: 9, key: []byte("c"), value: []byte{}, headers: []kmsg.Header{{Key: "x", Value: nil}}},
	}
	raw := sourceBatch(t, 50, 3, 1_700_000_000_000, -1, gapped...)
	res, err := splitBatches(raw, nil, 50, 1000, 1<<20, c)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.batches) != 1 || res.next != 55 || res.records != 3 {
		t.Fatalf("%d batches, next %d, %d records; want 1, 55, 3", len(res.batches), res.next, res.records)
	}
	out := res.batches[0]
	if out.whole || fmt.Sprint(out.srcOffsets) != "[50 53 54]" {
		t.Fatalf("whole %v, source offsets %v; want re-encoded from [50 53 54]", out.whole, out.srcOffsets)
	}
	setProducer(out.raw, 1, 0, 0)
	hb, got := decodeOut(t, out.raw)
	if hb.Attributes&attrCodecMask != 3 || hb.LastOffsetDelta != 2 || hb.NumRecords != 3 {
		t.Errorf("re-encoded header %+v: want lz4, consecutive deltas", hb)
	}
	_, want := decodeOut(t, raw)
	for i := range want {
		want[i].offset = int64(i) // consecutive, from 0
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("re-encoded records %v, want %v", got, want)
	}

	// LogAppendTime: every record carries the batch's max timestamp, the
	// one consumers of the source see.
	lat := sourceBatch(t, 0, attrLogAppendTime, 1_700_000_000_000, -1, recs(3)...)
	binary.BigEndian.PutUint64(lat[batchMaxTimestamp:], 1_800_000_000_000)
	binary.BigEndian.PutUint32(lat[batchCRC:], crc32.Checksum(lat[batchAttributes:], castagnoli))
	res, err = splitBatches(lat, nil, 0, 1000, 1<<20, c)
	if err != nil {
		t.Fatal(err)
	}
	setProducer(res.batches[0].raw, 1, 0, 0)
	hb, got = decodeOut(t, res.batches[0].raw)
	if hb.Attributes&attrLogAppendTime != 0 {
		t.Errorf("re-encoded batch keeps LogAppendTime")
	}
	for _, r := range got {
		if r.ts != 1_800_000_000_000 {
			t.Errorf("record at %d has timestamp %d, want the append time", r.offset, r.ts)
		}
	}

	// A batch the previous round copied part of: only what follows the
	// position is taken.
	res, err = splitBatches(sourceBatch(t, 10, 0, 1, -1, recs(4)...), nil, 12, 1000, 1<<20, c)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.batches) != 1 || fmt.Sprint(res.batches[0].srcOffsets) != "[12 13]" || res.next != 14 {
		t.Errorf("partial batch: %+v", res)
	}
}

func TestSplitBatchesSkipsControlAndAborted(t *testing.T) {
	const committed, aborted = 7, 8
	var data []byte
	data = append(data, sourceBatch(t, 0, attrTransactional, 1, committed, recs(2)...)...) // 0-1 committed txn
	data = append(data, sourceBatch(t, 2, attrTransactional, 1, aborted, recs(3)...)...)   // 2-4 aborted txn
	data = append(data, controlBatch(t, 5, committed, true)...)                            // 5 commit
	data = append(data, controlBatch(t, 6, aborted, false)...)                             // 6 abort
	data = append(data, sourceBatch(t, 7, attrTransactional, 1, aborted, recs(2)...)...)   // 7-8 same producer, committed later
	data = append(data, controlBatch(t, 9, aborted, true)...)                              // 9 commit
	data = append(data, sourceBatch(t, 10, 0, 1, -1)...)                                   // 10: an empty batch left by compaction
	abortedTxns := []kmsg.FetchResponseTopicPartitionAbortedTransaction{{ProducerID: aborted, FirstOffset: 2}}
	res, err := splitBatches(data, abortedTxns, 0, 1000, 1<<20, mustCodecs(t))
	if err != nil {
		t.Fatal(err)
	}
	if res.next != 11 || res.records != 4 || res.skipped != 3 || len(res.batches) != 2 {
		t.Fatalf("next %d, %d records, %d skipped, %d batches; want 11, 4, 3, 2", res.next, res.records, res.skipped, len(res.batches))
	}
	if res.batches[0].srcBase != 0 || res.batches[1].srcBase != 7 {
		t.Errorf("batches from %d and %d, want 0 and 7", res.batches[0].srcBase, res.batches[1].srcBase)
	}
}

func TestSplitBatchesLimitsAndTruncation(t *testing.T) {
	c := mustCodecs(t)
	a := sourceBatch(t, 0, 0, 1, -1, recs(5)...)
	b := sourceBatch(t, 5, 0, 1, -1, recs(5)...)
	data := append(bytes.Clone(a), b...)
	// The record limit stops before the second batch; the first always goes.
	// (splitBatches rewrites whole batches in place: a copy per call.)
	res, err := splitBatches(bytes.Clone(data), nil, 0, 3, 1<<20, c)
	if err != nil || len(res.batches) != 1 || res.next != 5 {
		t.Fatalf("limit 3: %d batches, next %d, %v; want 1 batch, next 5", len(res.batches), res.next, err)
	}
	// A fetch that ends inside the second batch: the first is taken, the
	// rest waits for the next fetch.
	res, err = splitBatches(bytes.Clone(data[:len(data)-7]), nil, 0, 1000, 1<<20, c)
	if err != nil || len(res.batches) != 1 || res.next != 5 {
		t.Fatalf("truncated: %d batches, next %d, %v; want 1 batch, next 5", len(res.batches), res.next, err)
	}
	// A flipped bit is caught by the CRC, not copied.
	bad := bytes.Clone(a)
	bad[len(bad)-1] ^= 1
	if _, err := splitBatches(bad, nil, 0, 1000, 1<<20, c); err == nil {
		t.Fatal("corrupt batch: no error")
	}
	// Message format v1 is refused with a clear error.
	v1 := bytes.Clone(a)
	v1[batchMagic] = 1
	if _, err := splitBatches(v1, nil, 0, 1000, 1<<20, c); err == nil || err != errOldMessageFormat {
		t.Fatalf("magic 1: %v, want errOldMessageFormat", err)
	}
}

func TestNextSeqWraps(t *testing.T) {
	for _, c := range []struct{ seq, n, want int32 }{{0, 5, 5}, {2147483645, 2, 2147483647}, {2147483645, 3, 0}, {2147483647, 1, 0}, {2147483640, 10, 2}} {
		if got := nextSeq(c.seq, c.n); got != c.want {
			t.Errorf("nextSeq(%d, %d) = %d, want %d", c.seq, c.n, got, c.want)
		}
	}
}

// FuzzSplitBatches feeds arbitrary fetch data to the batch splitter: it
// must return an error or batches that decode, never panic.
func FuzzSplitBatches(f *testing.F) {
	f.Add(sourceBatch(f, 0, 0, 1, -1, recs(3)...), int64(0))
	f.Add(sourceBatch(f, 4, 3, 1, -1, testRecord{offsetDelta: 0}, testRecord{offsetDelta: 2}), int64(4))
	f.Add(append(controlBatch(f, 0, 5, false), sourceBatch(f, 1, 2, 1, -1, recs(2)...)...), int64(0))
	c := mustCodecs(f)
	f.Fuzz(func(t *testing.T, data []byte, next int64) {
		res, err := splitBatches(data, nil, next, 1000, 1<<20, c)
		if err != nil {
			return
		}
		for _, b := range res.batches {
			setProducer(b.raw, 1, 0, 0)
			var rb kmsg.RecordBatch
			if err := rb.ReadFrom(b.raw); err != nil {
				t.Fatalf("produced batch does not decode: %v", err)
			}
			if rb.NumRecords != b.n || rb.LastOffsetDelta != b.n-1 {
				t.Fatalf("produced batch has %d records, last delta %d; want %d consecutive", rb.NumRecords, rb.LastOffsetDelta, b.n)
			}
		}
	})
}
