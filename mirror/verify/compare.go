package verify

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"sort"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/switchyard/switchyard/mirror/offsetmap"
)

// fingerprint is a truncated SHA-256 of one field's canonical encoding:
// enough to tell fields apart and to name what differs. The side digests
// are full SHA-256 and stay the authority.
type fingerprint [16]byte

// rec is what is kept of one record read: its offset and fingerprints.
type rec struct {
	off        int64
	key        fingerprint
	value      fingerprint
	headers    fingerprint
	ts         int64
	appendTime bool // LogAppendTime: ts is the broker's, not compared
	nullKey    bool
	tombstone  bool
}

// side is one partition's records as read on one cluster.
type side struct {
	recs   []rec
	digest hash.Hash // SHA-256 over the canonical encodings, in order
	// logStart is the partition's log start offset after the read.
	logStart int64
	// compacted: the topic's cleanup.policy includes compact.
	compacted bool
	// later maps key fingerprints to the highest offset holding that key
	// beyond the verified range; nil until read (source only).
	later map[fingerprint]int64
}

func newSide() *side { return &side{digest: sha256.New()} }

// add encodes r canonically into the side's digest and keeps its
// fingerprints. Records must come in offset order.
func (s *side) add(r *kgo.Record) {
	var buf []byte
	k := appendBytes(buf, r.Key)
	n := len(k)
	kv := appendBytes(k, r.Value)
	m := len(kv)
	kvh := appendHeaders(kv, r.Headers)
	h := len(kvh)
	all := appendTimestamp(kvh, r)
	s.digest.Write(all)
	x := rec{
		off:        r.Offset,
		key:        fp(all[:n]),
		value:      fp(all[n:m]),
		headers:    fp(all[m:h]),
		ts:         r.Timestamp.UnixMilli(),
		appendTime: r.Attrs.TimestampType() == 1,
		nullKey:    r.Key == nil,
		tombstone:  r.Value == nil,
	}
	if x.appendTime {
		x.ts = 0
	}
	s.recs = append(s.recs, x)
}

func (s *side) sum() [32]byte {
	var out [32]byte
	s.digest.Sum(out[:0])
	return out
}

func fp(b []byte) fingerprint {
	sum := sha256.Sum256(b)
	var f fingerprint
	copy(f[:], sum[:])
	return f
}

// appendBytes appends the canonical encoding of a nullable byte string.
func appendBytes(dst, b []byte) []byte {
	if b == nil {
		return append(dst, 0)
	}
	dst = append(dst, 1)
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

func appendHeaders(dst []byte, hs []kgo.RecordHeader) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(hs)))
	for _, h := range hs {
		dst = binary.AppendUvarint(dst, uint64(len(h.Key)))
		dst = append(dst, h.Key...)
		dst = appendBytes(dst, h.Value)
	}
	return dst
}

func appendTimestamp(dst []byte, r *kgo.Record) []byte {
	if r.Attrs.TimestampType() == 1 {
		return append(dst, 1)
	}
	dst = append(dst, 0)
	return binary.BigEndian.AppendUint64(dst, uint64(r.Timestamp.UnixMilli()))
}

// Removed counts records present on one side only because the other side
// removed them since the copy, by the cleanup that explains it.
type Removed struct {
	Compacted int64
	Retention int64
}

// Total returns Compacted + Retention.
func (r Removed) Total() int64 { return r.Compacted + r.Retention }

// Mismatch is a difference between the sides that nothing explains.
type Mismatch struct {
	// SourceOffset and TargetOffset locate it; -1 where the record is
	// absent on that side (or has no counterpart through the map).
	SourceOffset int64
	TargetOffset int64
	Reason       string
}

func (m Mismatch) String() string {
	where := func(o int64) string {
		if o < 0 {
			return "-"
		}
		return fmt.Sprint(o)
	}
	return fmt.Sprintf("source %s / target %s: %s", where(m.SourceOffset), where(m.TargetOffset), m.Reason)
}

// comparison is the outcome of joining two sides through a map.
type comparison struct {
	matched       int64
	sourceRemoved Removed // present on the target only
	targetRemoved Removed // present on the source only
	mismatches    int64
	first         *Mismatch
	// needSourceLater: a record present on the target only might be
	// explained by a source record beyond the range (see side.later).
	needSourceLater bool
}

func (c *comparison) mismatch(src, tgt int64, format string, args ...any) {
	c.mismatches++
	if c.first == nil {
		c.first = &Mismatch{SourceOffset: src, TargetOffset: tgt, Reason: fmt.Sprintf(format, args...)}
	}
}

// compare joins the source and target records through the map's ranges:
// the source record at s pairs with the target record at the offset its
// range gives. Both record lists are in offset order and the ranges are
// monotonic on both sides, so one merge walk in target-offset order checks
// presence, content and order at once. lost are the map's lost ranges: a
// source record there contradicts the map (the source had deleted it).
func compare(ranges []offsetmap.Range, lost []offsetmap.LostRange, src, tgt *side) comparison {
	var c comparison
	// Last offset of each key, for compaction: on the source (in range,
	// and beyond it once read), on the target, and on the target counted
	// in source offsets (a later copy proves a later source record).
	var lastSrc, lastSrcIn, lastTgt, lastTgtAsSrc map[fingerprint]int64
	if src.compacted || tgt.compacted {
		lastSrc, lastSrcIn, lastTgt, lastTgtAsSrc = map[fingerprint]int64{}, map[fingerprint]int64{}, map[fingerprint]int64{}, map[fingerprint]int64{}
		for _, r := range src.recs {
			if !r.nullKey {
				lastSrcIn[r.key] = r.off
				lastSrc[r.key] = r.off
			}
		}
		for k, o := range src.later {
			lastSrc[k] = max(lastSrc[k], o)
		}
		for _, r := range tgt.recs {
			if r.nullKey {
				continue
			}
			lastTgt[r.key] = r.off
			if s, ok := toSource(ranges, r.off); ok {
				lastTgtAsSrc[r.key] = s
			}
		}
	}
	later := func(m map[fingerprint]int64, k fingerprint, than int64) bool {
		o, ok := m[k]
		return ok && o > than
	}

	// onlyOnTarget: the target record t (a copy of source offset s) has no
	// source record: the source removed it, or something is wrong.
	onlyOnTarget := func(r rec, s int64) {
		// Compaction first: a compacting broker may also move the log
		// start past what it cleaned (kfake does).
		switch {
		case src.compacted && (r.tombstone || !r.nullKey && (later(lastSrc, r.key, s) || later(lastTgtAsSrc, r.key, s))):
			c.sourceRemoved.Compacted++
		case s < src.logStart:
			c.sourceRemoved.Retention++
		default:
			if src.compacted && src.later == nil && !r.nullKey {
				c.needSourceLater = true
			}
			c.mismatch(s, r.off, "the target holds a copy of source offset %d, which the source does not hold (not explained by retention: log start %d%s)",
				s, src.logStart, compactionNote(src.compacted))
		}
	}
	// onlyOnSource: the source record s was copied to t, which the target
	// does not hold.
	onlyOnSource := func(r rec, t int64) {
		switch {
		case tgt.compacted && (r.tombstone || !r.nullKey && (later(lastTgt, r.key, t) || later(lastSrcIn, r.key, r.off))):
			c.targetRemoved.Compacted++
		case t < tgt.logStart:
			c.targetRemoved.Retention++
		default:
			c.mismatch(r.off, t, "the source record was copied to target offset %d, which the target does not hold (not explained by retention: log start %d%s)",
				t, tgt.logStart, compactionNote(tgt.compacted))
		}
	}

	i, j := 0, 0
	for i < len(src.recs) || j < len(tgt.recs) {
		var want int64 // target offset of src.recs[i]
		if i < len(src.recs) {
			t, ok := toTarget(ranges, src.recs[i].off)
			switch {
			case !ok && inLost(lost, src.recs[i].off):
				c.mismatch(src.recs[i].off, -1, "the source holds a record at an offset the mirror recorded as deleted on the source before it was copied (was the partition recreated?)")
			case !ok:
				c.mismatch(src.recs[i].off, -1, "the source holds a record the mirror did not copy (the offset map has this offset as absent)")
			}
			if !ok {
				i++
				continue
			}
			want = t
		}
		switch {
		case j == len(tgt.recs) || i < len(src.recs) && want < tgt.recs[j].off:
			onlyOnSource(src.recs[i], want)
			i++
		case i == len(src.recs) || tgt.recs[j].off < want:
			r := tgt.recs[j]
			if s, ok := toSource(ranges, r.off); ok {
				onlyOnTarget(r, s)
			} else {
				c.mismatch(-1, r.off, "the target holds a record that is not a copy of any source record (written to the target outside the mirror?)")
			}
			j++
		default:
			if d := differences(src.recs[i], tgt.recs[j]); d != "" {
				c.mismatch(src.recs[i].off, tgt.recs[j].off, "%s", d)
			} else {
				c.matched++
			}
			i++
			j++
		}
	}
	return c
}

func compactionNote(compacted bool) string {
	if compacted {
		return "; compacted, but nothing supersedes the key"
	}
	return "; not a compacted topic"
}

// differences names the fields in which two records differ, "" if none.
func differences(s, t rec) string {
	var d []string
	if s.key != t.key {
		d = append(d, "key"+nullNote(s.nullKey, t.nullKey))
	}
	if s.value != t.value {
		d = append(d, "value"+nullNote(s.tombstone, t.tombstone))
	}
	if s.headers != t.headers {
		d = append(d, "headers")
	}
	if s.appendTime != t.appendTime {
		d = append(d, "timestamp type")
	} else if s.ts != t.ts {
		d = append(d, fmt.Sprintf("timestamp (%d vs %d)", s.ts, t.ts))
	}
	switch len(d) {
	case 0:
		return ""
	case 1:
		return d[0] + " differs"
	default:
		return strings.Join(d[:len(d)-1], ", ") + " and " + d[len(d)-1] + " differ"
	}
}

func nullNote(srcNull, tgtNull bool) string {
	switch {
	case srcNull && !tgtNull:
		return " (null on the source only)"
	case !srcNull && tgtNull:
		return " (null on the target only)"
	}
	return ""
}

// toTarget returns the target offset the source record at s was copied to,
// false if the map has s as absent.
func toTarget(ranges []offsetmap.Range, s int64) (int64, bool) {
	i := sort.Search(len(ranges), func(i int) bool { return ranges[i].SrcEnd() > s })
	if i == len(ranges) || s < ranges[i].Src {
		return 0, false
	}
	return ranges[i].Tgt + (s - ranges[i].Src), true
}

// toSource returns the source offset whose copy is at target offset t,
// false if t holds no copy.
func toSource(ranges []offsetmap.Range, t int64) (int64, bool) {
	i := sort.Search(len(ranges), func(i int) bool { return ranges[i].TgtEnd() > t })
	if i == len(ranges) || t < ranges[i].Tgt {
		return 0, false
	}
	return ranges[i].Src + (t - ranges[i].Tgt), true
}

// inLost reports whether source offset s lies in one of the lost ranges.
func inLost(lost []offsetmap.LostRange, s int64) bool {
	i := sort.Search(len(lost), func(i int) bool { return lost[i].To > s })
	return i < len(lost) && lost[i].From <= s
}
