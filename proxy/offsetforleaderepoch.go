package proxy

// OffsetForLeaderEpoch: v0-4.
//   * v2+: CurrentLeaderEpoch (fencing), translated back like every epoch.
//   * LeaderEpoch (the epoch asked about) is special: a client asks for the
//     end offset of the epoch of the last record it consumed, to detect log
//     truncation. When that epoch belongs to a cluster the proxy has since
//     switched away from, the cluster cannot know it. The records up to the
//     client's position are on the new cluster too (the mirror copied them
//     before the switch), so the question is asked about the partition's
//     current epoch instead: its end offset is at or past the client's
//     position, and the client correctly sees no truncation. Sending -1
//     instead would make the broker answer "unknown", which clients treat
//     as truncation and reset their position (measured: every record
//     re-consumed).

import "github.com/twmb/franz-go/pkg/kmsg"

// liftStaleEpochs rewrites asked-about epochs from before the last switch
// to the cluster's current epoch for the partition, in presented terms (the
// generic translation then maps them back to the real epoch).
func liftStaleEpochs(r *kmsg.OffsetForLeaderEpochRequest, u *upstream) {
	offset := u.epochOffset.Load()
	if offset == 0 {
		return
	}
	for ti := range r.Topics {
		t := &r.Topics[ti]
		for pi := range t.Partitions {
			p := &t.Partitions[pi]
			if p.LeaderEpoch < 0 || p.LeaderEpoch >= offset {
				continue
			}
			if cur, ok := u.leaderEpoch(t.Topic, p.Partition); ok {
				p.LeaderEpoch = cur + offset
			}
		}
	}
}
