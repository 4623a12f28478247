package offsetmap

import (
	"fmt"
	"math"
	"sort"
	"sync"
)

// Range says that source offsets [Src, Src+Len) were copied, in order and
// without gaps on either side, to target offsets [Tgt, Tgt+Len). Len is at
// least 1.
type Range struct {
	Src, Tgt, Len int64
}

// SrcEnd returns the source offset just after the range.
func (r Range) SrcEnd() int64 { return r.Src + r.Len }

// TgtEnd returns the target offset just after the range.
func (r Range) TgtEnd() int64 { return r.Tgt + r.Len }

// LostRange says that source offsets [From, To) were deleted on the source
// (retention, DeleteRecords) before the mirror copied them. The mirror
// never read them, so they may have been records, transaction markers or
// both. To is above From.
type LostRange struct {
	From, To int64
}

// Len returns the number of offsets lost.
func (r LostRange) Len() int64 { return r.To - r.From }

// String returns "From..To-1", the offsets lost inclusive.
func (r LostRange) String() string { return fmt.Sprintf("%d..%d", r.From, r.To-1) }

// Map is the source→target offset map of one partition: which target
// offset each copied source record landed at, as maximal ranges, plus the
// source position the copy has dealt with.
//
// The map covers source offsets [Start, Next). Inside it, every offset was
// either copied (it lies in a Range), absent from the copy — compacted
// away, a transaction control marker, or part of an aborted transaction —
// or lost: deleted on the source before it was copied (it lies in a
// LostRange; see SkipLost).
//
// A Map is safe for concurrent use: the copy engine appends while the
// control plane translates. The zero value is not usable; call New or
// NewAt.
type Map struct {
	mu      sync.RWMutex
	start   int64   // first source offset covered
	next    int64   // every source offset below it has been dealt with
	tgtNext int64   // target offset after the last copied record
	ranges  []Range // sorted, maximal, all inside [start, next)
	// lost ranges: sorted, disjoint, never adjacent (merged), inside
	// [start, next) and disjoint from ranges.
	lost []LostRange
}

// New returns an empty map covering the partition from source offset 0,
// with target offsets starting at 0: the mirror copies the partition from
// its beginning into an empty target partition.
func New() *Map { return &Map{} }

// NewAt returns an empty map that covers source offsets from start on (the
// copy begins there, for example at the source's log start offset) and
// whose target offsets start at targetNext (the target partition's end
// offset when the copy begins). Translate answers ErrBeforeMirrored below
// start.
func NewAt(start, targetNext int64) (*Map, error) {
	if start < 0 || targetNext < 0 {
		return nil, fmt.Errorf("new map at source %d, target %d: %w", start, targetNext, ErrInvalidOffset)
	}
	return &Map{start: start, next: start, tgtNext: targetNext}, nil
}

// Record notes that the source record at src was copied to target offset
// tgt. It extends the last range when both offsets follow it directly and
// starts a new range otherwise; source offsets from Next up to src are
// thereby dealt with (absent). It returns ErrNotIncreasing if src is below
// Next or tgt below TargetNext, and leaves the map unchanged on error.
func (m *Map) Record(src, tgt int64) error {
	if err := checkRange(Range{Src: src, Tgt: tgt, Len: 1}); err != nil {
		return fmt.Errorf("record %d→%d: %w", src, tgt, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.checkOrderLocked(Range{Src: src, Tgt: tgt, Len: 1}); err != nil {
		return fmt.Errorf("record %d→%d: %w", src, tgt, err)
	}
	m.appendLocked(Range{Src: src, Tgt: tgt, Len: 1})
	return nil
}

// AppendRange notes a whole range of copied records at once, as Record
// would one by one; merging another map's Ranges into this one is the
// typical use. Errors are those of Record, plus ErrInvalidOffset for a
// range with Len < 1.
func (m *Map) AppendRange(r Range) error {
	if err := checkRange(r); err != nil {
		return fmt.Errorf("append range %+v: %w", r, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.checkOrderLocked(r); err != nil {
		return fmt.Errorf("append range %+v: %w", r, err)
	}
	m.appendLocked(r)
	return nil
}

// Advance notes that every source offset below srcNext has been dealt
// with: copied (already recorded) or absent. It returns ErrNotIncreasing if
// srcNext is below Next (which is at least the last recorded offset + 1).
func (m *Map) Advance(srcNext int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if srcNext < m.next {
		return fmt.Errorf("advance to %d: below next %d: %w", srcNext, m.next, ErrNotIncreasing)
	}
	m.next = srcNext
	return nil
}

// SkipLost notes that the source offsets from Next up to to were deleted on
// the source before they were copied, and moves Next to to: the copy goes
// on after a gap. A lost range right after another one (nothing in
// between) extends it. Translate refuses a position whose next records
// were lost (ErrLost); Resume moves such a position past them. It returns
// the range added and ErrNotIncreasing, leaving the map unchanged, if to is
// not above Next.
func (m *Map) SkipLost(to int64) (LostRange, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if to <= m.next {
		return LostRange{}, fmt.Errorf("skip lost offsets up to %d: not above next %d: %w", to, m.next, ErrNotIncreasing)
	}
	r := LostRange{From: m.next, To: to}
	m.appendLostLocked(r)
	return r, nil
}

// Merge appends a delta: a map holding what one step of the copy added —
// its ranges, lost ranges and Next, from its Start on — as if each had been
// recorded on m in source order. A delta that starts beyond m's Next leaves
// the offsets in between absent, except on a map that holds nothing yet:
// its Start moves to the delta's (the copy begins there, say at the
// source's log start). It returns ErrNotIncreasing, leaving m unchanged, if
// anything in d lies below m's Next (or, for ranges, below TargetNext). d
// must not be m.
func (m *Map) Merge(d *Map) error {
	d.mu.RLock()
	start, ranges, lost, next := d.start, append([]Range(nil), d.ranges...), append([]LostRange(nil), d.lost...), d.next
	d.mu.RUnlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	if start > m.next && m.next == m.start && len(m.ranges) == 0 && len(m.lost) == 0 {
		m.start, m.next = start, start
	}
	// d is itself ordered: checking its first elements is enough.
	if len(ranges) > 0 {
		if err := m.checkOrderLocked(ranges[0]); err != nil {
			return fmt.Errorf("merge: %w", err)
		}
	}
	if len(lost) > 0 && lost[0].From < m.next {
		return fmt.Errorf("merge: lost offsets %s below next %d: %w", lost[0], m.next, ErrNotIncreasing)
	}
	for i, j := 0, 0; i < len(ranges) || j < len(lost); {
		if j == len(lost) || i < len(ranges) && ranges[i].Src < lost[j].From {
			m.appendLocked(ranges[i])
			i++
			continue
		}
		m.appendLostLocked(lost[j])
		j++
	}
	m.next = max(m.next, next)
	return nil
}

// Start returns the first source offset the map covers.
func (m *Map) Start() int64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.start
}

// Next returns the source offset the copy resumes at: every offset below it
// has been dealt with.
func (m *Map) Next() int64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.next
}

// TargetNext returns the target offset just after the last copied record
// (0 for New with nothing copied, the NewAt value otherwise). It is where a
// consumer positioned at Next continues on the target.
func (m *Map) TargetNext() int64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.tgtNext
}

// Len returns the number of ranges.
func (m *Map) Len() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.ranges)
}

// Ranges returns a copy of the ranges, in order.
func (m *Map) Ranges() []Range {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return append([]Range(nil), m.ranges...)
}

// Lost returns a copy of the lost ranges, in order.
func (m *Map) Lost() []LostRange {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return append([]LostRange(nil), m.lost...)
}

// Translate maps a consumer position on the source to the same position on
// the target. A position (a committed offset) names the next record to
// read, so src translates to the target offset of the first copied record
// at or after src; a src in a gap (compacted away, a control marker, an
// aborted record) therefore maps to the next copied record, and src ==
// Next maps to TargetNext.
//
// A src above Next is ErrBeyondMirrored and a src below Start is
// ErrBeforeMirrored; a src whose next records were lost — a lost offset
// lies between src and the first copied record at or after it — is
// ErrLost. All are wrapped with the numbers: such a position is reported,
// never guessed. After a lost range translation is exact again.
func (m *Map) Translate(src int64) (int64, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if src < m.start {
		return 0, fmt.Errorf("translate source offset %d: the map starts at %d: %w", src, m.start, ErrBeforeMirrored)
	}
	tgt, from, first, err := m.resumeLocked(src)
	switch {
	case err != nil:
		return 0, err
	case from != src:
		return 0, fmt.Errorf("translate source offset %d: offsets %s were deleted on the source before they were mirrored: %w", src, first, ErrLost)
	}
	return tgt, nil
}

// Resume maps a source position like Translate, except for the positions
// Translate refuses because the source no longer holds the records they
// name: a src below Start (the map was trimmed after the source's log start
// passed it) is taken as Start, and a position whose next records were lost
// moves past them to the first copied record after them (TargetNext if
// none). It returns the target offset and from, the source position that
// target offset stands for: src when Translate accepts src, otherwise Start
// or the end of the last lost range skipped. A src above Next is still
// ErrBeyondMirrored.
func (m *Map) Resume(src int64) (tgt, from int64, err error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	tgt, from, _, err = m.resumeLocked(max(src, m.start))
	return tgt, from, err
}

// resumeLocked does Resume for src >= start, also returning the first lost
// range skipped.
func (m *Map) resumeLocked(src int64) (tgt, from int64, first LostRange, err error) {
	if src > m.next {
		return 0, 0, LostRange{}, fmt.Errorf("translate source offset %d: mirrored up to %d: %w", src, m.next, ErrBeyondMirrored)
	}
	// The first copied record at or after src: its source offset (Next
	// when none) and its target offset.
	at, tgt := m.next, m.tgtNext
	if i := sort.Search(len(m.ranges), func(i int) bool { return m.ranges[i].SrcEnd() > src }); i < len(m.ranges) {
		r := m.ranges[i]
		at = max(src, r.Src)
		tgt = r.Tgt + (at - r.Src)
	}
	// Lost offsets in [src, at) are in the way.
	from = src
	j := sort.Search(len(m.lost), func(j int) bool { return m.lost[j].To > src })
	if j < len(m.lost) && m.lost[j].From < at {
		first = m.lost[j]
		for ; j < len(m.lost) && m.lost[j].From < at; j++ {
			from = m.lost[j].To
		}
	}
	return tgt, from, first, nil
}

// TrimBefore drops what the map knows below source offset src, typically
// because the source's retention removed it: ranges and lost ranges
// entirely below src go, one that straddles src is cut at src, and Start
// becomes src. Below Start, Translate answers ErrBeforeMirrored (Resume
// takes such a position as Start). A src above Next is treated as Next (the
// map never claims offsets it has not dealt with); a src at or below Start
// does nothing.
func (m *Map) TrimBefore(src int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if src <= m.start {
		return
	}
	src = min(src, m.next)
	if i := sort.Search(len(m.ranges), func(i int) bool { return m.ranges[i].SrcEnd() > src }); i > 0 {
		n := copy(m.ranges, m.ranges[i:])
		clear(m.ranges[n:])
		m.ranges = m.ranges[:n]
	}
	if len(m.ranges) > 0 && m.ranges[0].Src < src {
		d := src - m.ranges[0].Src
		m.ranges[0].Src += d
		m.ranges[0].Tgt += d
		m.ranges[0].Len -= d
	}
	if j := sort.Search(len(m.lost), func(j int) bool { return m.lost[j].To > src }); j > 0 {
		n := copy(m.lost, m.lost[j:])
		clear(m.lost[n:])
		m.lost = m.lost[:n]
	}
	if len(m.lost) > 0 && m.lost[0].From < src {
		m.lost[0].From = src
	}
	m.start = src
}

// checkRange rejects negative offsets, empty ranges and ranges whose end
// would overflow.
func checkRange(r Range) error {
	if r.Src < 0 || r.Tgt < 0 || r.Len < 1 || r.Src > math.MaxInt64-r.Len || r.Tgt > math.MaxInt64-r.Len {
		return ErrInvalidOffset
	}
	return nil
}

func (m *Map) checkOrderLocked(r Range) error {
	if r.Src < m.next {
		return fmt.Errorf("source offset %d below next %d: %w", r.Src, m.next, ErrNotIncreasing)
	}
	if r.Tgt < m.tgtNext {
		return fmt.Errorf("target offset %d below target next %d: %w", r.Tgt, m.tgtNext, ErrNotIncreasing)
	}
	return nil
}

// appendLocked appends r, merging it into the last range when both sides
// are contiguous, and moves Next and TargetNext past it.
func (m *Map) appendLocked(r Range) {
	if n := len(m.ranges); n > 0 {
		last := &m.ranges[n-1]
		if last.SrcEnd() == r.Src && last.TgtEnd() == r.Tgt {
			last.Len += r.Len
			m.next, m.tgtNext = r.SrcEnd(), r.TgtEnd()
			return
		}
	}
	m.ranges = append(m.ranges, r)
	m.next, m.tgtNext = r.SrcEnd(), r.TgtEnd()
}

// appendLostLocked appends r (at or after Next), extending the last lost
// range when r follows it directly, and moves Next to its end.
func (m *Map) appendLostLocked(r LostRange) {
	if n := len(m.lost); n > 0 && m.lost[n-1].To == r.From {
		m.lost[n-1].To = r.To
	} else {
		m.lost = append(m.lost, r)
	}
	m.next = r.To
}
