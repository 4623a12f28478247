// Package verify proves, partition by partition, that a mirror's target
// holds exactly the source's records over the range the mirror has copied.
// It reads both sides; it never infers anything from watermarks or counts
// of offsets.
//
// # What is compared
//
// For each mirrored partition, Run reads the mirror's committed offset map
// (mirror.ReadOffsetMaps) and then, read_committed:
//
//   - the source partition over [Start, Next): every source offset the map
//     covers;
//   - the target partition over [Translate(Start), TargetNext): from the
//     first copied record to just after the last.
//
// Offsets the map records as lost — deleted on the source before the mirror
// copied them, where it went on after the gap (gap policy continue) — are
// held by neither side: they are not compared, and the report names them
// (PartitionReport.Lost). A source record at a lost offset contradicts the
// map and is a mismatch.
//
// Control markers and aborted records are not records and are skipped on
// both sides. Each side's present records are counted and digested, and
// the two are joined through the map: the source record at s must be, on
// the target, the record at the target offset the map gives for s (its
// Range), byte for byte. Order is checked by the same join: both sides are
// walked in offset order and the map is monotonic.
//
// # Digest
//
// A side's digest is SHA-256 over the concatenated canonical encodings of
// its records in offset order (offsets are not part of it: they differ by
// design). One record:
//
//	bytes(key) bytes(value) headers timestamp
//	bytes(x)   0x00 if x is null | 0x01 uvarint(len(x)) x
//	headers    uvarint(n), then n times: uvarint(len(key)) key bytes(value)
//	timestamp  0x00 int64 big-endian milliseconds  (CreateTime)
//	           0x01                                 (LogAppendTime)
//
// A null key and an empty key differ, as do a tombstone (null value) and an
// empty value, and header order matters. A LogAppendTime timestamp is the
// broker's clock, not the record's data (the mirror copies
// message.timestamp.type, so such a topic is stamped anew on the target):
// only its type is encoded.
//
// # Records removed since the copy
//
// The mirror copies what is present; afterwards each cluster cleans its own
// log. A record present on one side only is therefore not necessarily
// corruption. It is counted as removed since the copy, not as a mismatch,
// only when the other side's removal is proven possible:
//
//   - retention: its offset on that side is below that side's log start
//     offset, read now; or
//   - compaction: that side's topic has cleanup.policy compact, and the
//     record is a tombstone or a later record with the same key exists —
//     on either side (a later copy on the target proves the source had a
//     later record with that key). For the source side, when nothing in
//     the mirrored range supersedes the key, the source is also read
//     beyond Next, up to its last stable offset, to find one.
//
// Anything else present on one side only is a mismatch: a source record the
// map says is absent (the mirror skipped it), a target record that is no
// copy of any source record (written to the target outside the mirror), a
// record missing with no cleanup to explain it.
//
// # Cost
//
// Each partition is read in full on both sides, by Fetch requests of its
// own (kgo.ProcessFetchPartition decodes them), so the reader knows its
// exact position even where a range ends in skipped offsets. It keeps about
// 80 bytes per record in memory while a partition is compared;
// Config.Parallel partitions are verified at once.
package verify
