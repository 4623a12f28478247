// Package mirror replicates topics, records and consumer-group offsets from
// a source Kafka cluster to a target cluster, keeping an exact source-to-
// target offset map — what MirrorMaker 2 does in a migration, with its
// failure modes designed out:
//
//   - Records are copied per partition, in order, read_committed (aborted
//     transactions and control records are not copied), keeping partition,
//     key, value (tombstones too), headers and timestamp.
//   - Every batch of copied records, the progress and the offset map entries
//     describing it are written in one Kafka transaction on the target, so a
//     mirror killed at any moment resumes with no gap and no duplicate.
//   - Consumer-group offsets are translated exactly through the offset map
//     (offsetmap.Map.Translate), never approximated, and never move a
//     target group backwards; a committed offset beyond what is mirrored is
//     reported, not guessed.
//   - A partition that fails is retried with backoff and shows in Status
//     and metrics. A source leader that moved (an election, a
//     reassignment, a restart) is not a failure: the partition is asked of
//     the new leader next round (up to 5 rounds in a row "not the leader"
//     before it counts as failing).
//   - A partition begins at the source's log start. A log start that
//     passes the mirror's position later is a gap — records deleted on the
//     source before they were copied — handled per topic (Config.Gaps):
//     the partition stops, naming the offsets, or the offset map records
//     them as lost and the copy goes on, exact around them.
//
// Sub-packages: offsetmap (the per-partition map and its persisted form)
// and topics (selection, naming and topic/config sync).
package mirror
