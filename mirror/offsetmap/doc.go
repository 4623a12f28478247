// Package offsetmap keeps the exact source→target offset map of one
// mirrored partition: which target offset each copied source record landed
// at. Consumer-group offsets are translated through it exactly, never
// approximated.
//
// # Model
//
// The copy engine copies one source partition, in order, into the same
// partition on the target inside Kafka transactions. Both sides have gaps:
// source offsets vanish to compaction, transaction control markers and
// aborted transactions; on the target every transaction's commit marker
// takes one offset. The map therefore stores maximal Ranges — source
// offsets [Src, Src+Len) copied to target offsets [Tgt, Tgt+Len) — plus
// three positions: Start (the first source offset covered), Next (every
// source offset below it has been dealt with: copied or absent) and
// TargetNext (the target offset after the last copied record).
//
// Translate has consumer-position semantics: a committed offset names the
// next record to read, so it maps to the target offset of the first copied
// record at or after it; Next maps to TargetNext. Positions above Next
// (ErrBeyondMirrored) and below Start (ErrBeforeMirrored) are errors,
// reported with the numbers, never guessed.
//
// # Persisted format
//
// The map is persisted on the target in a compacted internal topic (its
// name is the engine's; `__` names are never mirrored by topic sync), one
// record per source partition. The topic holds maps of one source cluster;
// the key names only topic and partition. All integers are unsigned
// varints (encoding/binary Uvarint, shortest form) unless marked.
//
//	key, version 1
//	  byte     1                  key version
//	  uvarint  len(topic)         1..249
//	  bytes    topic              source topic name
//	  uint32   partition          big-endian
//
//	value, version 1 (Map.MarshalBinary, nothing lost)
//	  byte     1                  value version
//	  uvarint  Start
//	  uvarint  n                  number of ranges
//	  n times:
//	    uvarint  Src - prevSrcEnd   prevSrcEnd: Start, then the previous range's Src+Len
//	    uvarint  Tgt - prevTgtEnd   prevTgtEnd: 0, then the previous range's Tgt+Len
//	    uvarint  Len                ≥ 1
//	  uvarint  Next - prevSrcEnd
//	  uvarint  TargetNext - prevTgtEnd
//
//	value, version 2 (some offsets lost)
//	  byte     2                  value version
//	  ...                         the rest of version 1, as above
//	  uvarint  k                  number of lost ranges, ≥ 1
//	  k times:
//	    uvarint  From - prevEnd     prevEnd: Start, then the previous lost range's To
//	    uvarint  To - From          ≥ 1
//
// MarshalBinary writes version 1 whenever nothing was lost, so a reader
// that knows only version 1 reads every such map. A null value (tombstone)
// deletes a partition's map. Decoding accepts only this canonical form —
// known version, no trailing bytes, no overflow, no two ranges (or lost
// ranges) that should have been merged, lost ranges inside [Start, Next)
// holding no copied offset, minimal varints — and returns an error wrapping
// ErrCorrupt otherwise; it never panics. An unknown version is an error, so
// a newer writer's records are refused rather than misread.
//
// # Growth
//
// Each target transaction adds one range per partition it touched, because
// its commit marker breaks target contiguity; source transaction markers
// and compaction add more. With the usual gaps (a source gap under 128, a
// one-offset target gap) and under 16,384 records per transaction, a range
// costs 4 bytes (3 below 128 records): about 0.4 MB per 100,000 ranges.
// At one transaction per second a partition grows by ~86,400 ranges
// (~350 KB) a day, and a map value must stay under the offset-map topic's
// max.message.bytes (1 MiB by default: ~250,000 ranges). So the engine
// should commit transactions that carry many records, TrimBefore the
// source's log start offset as retention moves it, and raise
// max.message.bytes on the offset-map topic (or write per-transaction
// deltas with this same value encoding) for long-lived, busy partitions.
// In memory a range is 24 bytes. A lost range costs 2 to 4 bytes encoded
// and 16 in memory; there is one per gap the mirror went on after.
package offsetmap
