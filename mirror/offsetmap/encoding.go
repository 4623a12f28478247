package offsetmap

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Encoding versions; the first byte of every encoded value and key. A
// value is written in version 2 only when the map holds lost ranges, so
// readers that know version 1 only read every other map.
const (
	valueVersion1 byte = 1
	valueVersion2 byte = 2
	keyVersion1   byte = 1
)

// maxTopicLen is Kafka's limit on a topic name.
const maxTopicLen = 249

// MarshalBinary encodes the map (Start, Next, TargetNext, every range and
// every lost range) in the compact, versioned format documented in the
// package comment: version 1 when nothing was lost, version 2 otherwise.
// It never fails; the error is there for encoding.BinaryMarshaler.
func (m *Map) MarshalBinary() ([]byte, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	b := make([]byte, 0, 1+3*binary.MaxVarintLen64+4*len(m.ranges)+(3+2*len(m.lost))*binary.MaxVarintLen64)
	version := valueVersion1
	if len(m.lost) > 0 {
		version = valueVersion2
	}
	b = append(b, version)
	b = binary.AppendUvarint(b, uint64(m.start))
	b = binary.AppendUvarint(b, uint64(len(m.ranges)))
	srcEnd, tgtEnd := m.start, int64(0)
	for _, r := range m.ranges {
		b = binary.AppendUvarint(b, uint64(r.Src-srcEnd))
		b = binary.AppendUvarint(b, uint64(r.Tgt-tgtEnd))
		b = binary.AppendUvarint(b, uint64(r.Len))
		srcEnd, tgtEnd = r.SrcEnd(), r.TgtEnd()
	}
	b = binary.AppendUvarint(b, uint64(m.next-srcEnd))
	b = binary.AppendUvarint(b, uint64(m.tgtNext-tgtEnd))
	if len(m.lost) == 0 {
		return b, nil
	}
	b = binary.AppendUvarint(b, uint64(len(m.lost)))
	end := m.start
	for _, r := range m.lost {
		b = binary.AppendUvarint(b, uint64(r.From-end))
		b = binary.AppendUvarint(b, uint64(r.Len()))
		end = r.To
	}
	return b, nil
}

// UnmarshalBinary replaces the map's contents with the decoded bytes,
// version 1 or 2. It accepts only the canonical encoding MarshalBinary
// produces, and returns an error wrapping ErrCorrupt — never panics — for
// anything else (unknown version, truncation, trailing bytes, overflow,
// unmerged ranges, lost offsets that were also copied). On error the map is
// unchanged.
func (m *Map) UnmarshalBinary(b []byte) error {
	d := decoder{b: b}
	v := d.byte()
	if d.err == nil && v != valueVersion1 && v != valueVersion2 {
		return fmt.Errorf("offset map version %d (want %d or %d): %w", v, valueVersion1, valueVersion2, ErrCorrupt)
	}
	start := d.int64("start")
	n := d.uvarint("range count")
	// Each range takes at least 3 bytes: refuse counts the input cannot
	// hold before allocating for them.
	if d.err == nil && n > uint64(len(d.rest()))/3 {
		return fmt.Errorf("offset map: %d ranges in %d bytes: %w", n, len(d.rest()), ErrCorrupt)
	}
	var ranges []Range
	if n > 0 {
		ranges = make([]Range, 0, n)
	}
	srcEnd, tgtEnd := start, int64(0)
	for i := uint64(0); i < n && d.err == nil; i++ {
		srcGap := d.int64("source gap")
		tgtGap := d.int64("target gap")
		l := d.int64("length")
		if d.err != nil {
			break
		}
		switch {
		case l < 1:
			d.fail("range %d: length %d", i, l)
		case i > 0 && srcGap == 0 && tgtGap == 0:
			d.fail("range %d: contiguous with the previous range on both sides (not merged)", i)
		}
		src, tgt := d.add(srcEnd, srcGap), d.add(tgtEnd, tgtGap)
		srcEnd, tgtEnd = d.add(src, l), d.add(tgt, l)
		ranges = append(ranges, Range{Src: src, Tgt: tgt, Len: l})
	}
	next := d.add(srcEnd, d.int64("next"))
	tgtNext := d.add(tgtEnd, d.int64("target next"))
	var lost []LostRange
	if v == valueVersion2 {
		lost = d.lost(start, next, ranges)
	}
	if d.err == nil && len(d.rest()) > 0 {
		d.fail("%d trailing bytes", len(d.rest()))
	}
	if d.err != nil {
		return d.err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.start, m.next, m.tgtNext, m.ranges, m.lost = start, next, tgtNext, ranges, lost
	return nil
}

// lost decodes version 2's lost ranges: at least one (version 1 says
// none), each inside [start, next), after the previous one with a gap, and
// holding no copied offset.
func (d *decoder) lost(start, next int64, ranges []Range) []LostRange {
	n := d.uvarint("lost range count")
	switch {
	case d.err != nil:
		return nil
	case n == 0:
		d.fail("version 2 without lost ranges")
		return nil
	case n > uint64(len(d.rest()))/2: // each takes at least 2 bytes
		d.fail("%d lost ranges in %d bytes", n, len(d.rest()))
		return nil
	}
	lost := make([]LostRange, 0, n)
	end, ri := start, 0
	for i := uint64(0); i < n && d.err == nil; i++ {
		gap := d.int64("lost gap")
		l := d.int64("lost length")
		if d.err != nil {
			break
		}
		from := d.add(end, gap)
		to := d.add(from, l)
		switch {
		case d.err != nil:
		case l < 1:
			d.fail("lost range %d: length %d", i, l)
		case i > 0 && gap == 0:
			d.fail("lost range %d: adjacent to the previous one (not merged)", i)
		case to > next:
			d.fail("lost range %d: offsets %d..%d beyond next %d", i, from, to-1, next)
		}
		for ri < len(ranges) && ranges[ri].SrcEnd() <= from {
			ri++
		}
		if d.err == nil && ri < len(ranges) && ranges[ri].Src < to {
			d.fail("lost range %d: offsets %d..%d overlap copied range %+v", i, from, to-1, ranges[ri])
		}
		end = to
		lost = append(lost, LostRange{From: from, To: to})
	}
	return lost
}

// EncodeValue returns the value of the map's record in the offset-map
// topic: MarshalBinary.
func EncodeValue(m *Map) []byte {
	b, _ := m.MarshalBinary()
	return b
}

// DecodeValue decodes a record value written by EncodeValue into a new map.
func DecodeValue(b []byte) (*Map, error) {
	m := New()
	if err := m.UnmarshalBinary(b); err != nil {
		return nil, err
	}
	return m, nil
}

// EncodeKey returns the record key for a source partition's map in the
// offset-map topic (format in the package comment). Keys sort by version,
// then topic name length, then name, then partition.
func EncodeKey(topic string, partition int32) []byte {
	b := make([]byte, 0, 1+binary.MaxVarintLen64+len(topic)+4)
	b = append(b, keyVersion1)
	b = binary.AppendUvarint(b, uint64(len(topic)))
	b = append(b, topic...)
	return binary.BigEndian.AppendUint32(b, uint32(partition))
}

// DecodeKey decodes a key written by EncodeKey. It returns an error wrapping
// ErrCorrupt for anything else.
func DecodeKey(b []byte) (topic string, partition int32, err error) {
	d := decoder{b: b}
	if v := d.byte(); d.err == nil && v != keyVersion1 {
		return "", 0, fmt.Errorf("offset map key version %d (want %d): %w", v, keyVersion1, ErrCorrupt)
	}
	n := d.uvarint("topic length")
	rest := d.rest()
	if d.err == nil && (n == 0 || n > maxTopicLen || n+4 != uint64(len(rest))) {
		d.fail("key: topic length %d with %d bytes left", n, len(rest))
	}
	if d.err != nil {
		return "", 0, d.err
	}
	topic = string(rest[:n])
	partition = int32(binary.BigEndian.Uint32(rest[n:]))
	if partition < 0 {
		return "", 0, fmt.Errorf("offset map key: partition %d: %w", partition, ErrCorrupt)
	}
	return topic, partition, nil
}

// decoder reads the encoding, remembering the first error so callers can
// check once.
type decoder struct {
	b   []byte
	off int // next byte to read; an index, not a reslice, to keep the loop free of write barriers
	err error
}

// rest returns the bytes not yet read.
func (d *decoder) rest() []byte { return d.b[d.off:] }

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("offset map: "+format+": %w", append(args, ErrCorrupt)...)
	}
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if d.off >= len(d.b) {
		d.fail("empty")
		return 0
	}
	c := d.b[d.off]
	d.off++
	return c
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		d.fail("%s: truncated or overlong varint", what)
		return 0
	}
	// Only the shortest form is canonical: a varint whose last byte is
	// zero (beyond the first) encodes the same number in more bytes.
	if n > 1 && d.b[d.off+n-1] == 0 {
		d.fail("%s: non-minimal varint", what)
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) int64(what string) int64 {
	v := d.uvarint(what)
	if d.err == nil && v > math.MaxInt64 {
		d.fail("%s: %d overflows int64", what, v)
		return 0
	}
	return int64(v)
}

// add returns a+b, failing on overflow; both are non-negative.
func (d *decoder) add(a, b int64) int64 {
	if d.err != nil {
		return 0
	}
	if a > math.MaxInt64-b {
		d.fail("offset %d + %d overflows int64", a, b)
		return 0
	}
	return a + b
}
