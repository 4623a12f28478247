package topics

import (
	"slices"
	"strings"
)

// DefaultConfigAllowlist returns the topic configs that are safe to copy
// from source to target: they describe the data (what is kept, for how
// long, how big a record may be, how it is stamped and compressed), not
// the cluster that holds it. An entry ending in "." would match every key
// with that prefix; the defaults are exact keys, because vendors reuse
// prefixes (Redpanda's retention.local.target.* is tiered storage).
//
// Deliberately not copied:
//   - min.insync.replicas, unclean.leader.election.enable: durability and
//     availability policy tied to the target's replication factor and
//     operators; min.insync.replicas=2 on a target with fewer replicas
//     would fail every acks=all produce.
//   - leader/follower.replication.throttled.replicas: name source broker ids.
//   - local.retention.*, remote.storage.enable, remote.log.*: tiered
//     storage of the source cluster.
//   - message.format.version, message.downconversion.enable: broker
//     features, removed in Kafka 4.0.
//   - message.timestamp.before.max.ms, message.timestamp.after.max.ms,
//     message.timestamp.difference.max.ms: the mirror writes records after
//     the fact with their original timestamps, which a skew bound checked
//     at the target's clock could reject.
//   - flush.*, preallocate, file.delete.delay.ms, index.interval.bytes,
//     segment.index.bytes: storage tuning of one broker's disks.
//   - confluent.*, redpanda.* and any other vendor key: not on the list.
//
// message.timestamp.type is copied: with LogAppendTime on the source the
// target stamps records with its own append time, as the source did.
func DefaultConfigAllowlist() []string {
	return []string{
		"cleanup.policy",
		"compression.gzip.level",
		"compression.lz4.level",
		"compression.type",
		"compression.zstd.level",
		"delete.retention.ms",
		"max.compaction.lag.ms",
		"max.message.bytes",
		"message.timestamp.type",
		"min.cleanable.dirty.ratio",
		"min.compaction.lag.ms",
		"retention.bytes",
		"retention.ms",
		"segment.bytes",
		"segment.jitter.ms",
		"segment.ms",
	}
}

// allowlist matches config keys against exact keys and "prefix." entries.
type allowlist struct {
	exact    map[string]bool
	prefixes []string
}

func newAllowlist(keys []string) allowlist {
	a := allowlist{exact: make(map[string]bool, len(keys))}
	for _, k := range keys {
		if strings.HasSuffix(k, ".") {
			a.prefixes = append(a.prefixes, k)
		} else {
			a.exact[k] = true
		}
	}
	slices.Sort(a.prefixes)
	return a
}

func (a allowlist) allows(key string) bool {
	if a.exact[key] {
		return true
	}
	for _, p := range a.prefixes {
		if strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}
