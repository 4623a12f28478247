package topics

import "errors"

// Sentinel errors. Per-topic errors in a Report wrap one of these (or a
// Kafka error from kerr) with the topic and the numbers involved.
var (
	// ErrTargetHasMorePartitions: the target topic has more partitions
	// than the source. Records would land in partitions the source does
	// not have, so the topic is not copied until an operator resolves it.
	ErrTargetHasMorePartitions = errors.New("target topic has more partitions than the source")

	// ErrCleanupPolicyConflict: the target topic's cleanup.policy differs
	// from the source's. The mirror never changes a policy on an existing
	// target topic: compaction or deletion on one side only would make
	// the two logs hold different records.
	ErrCleanupPolicyConflict = errors.New("cleanup.policy of the target topic conflicts with the source")

	// ErrBrokerInternal: the topic is internal to the source broker
	// (__consumer_offsets, __transaction_state, ...) and cannot be
	// mirrored, even when opted in.
	ErrBrokerInternal = errors.New("broker-internal topic cannot be mirrored")

	// ErrTargetNotVisible: creating the target topic answered that it
	// already exists, but metadata did not show it (it is being created
	// or metadata has not propagated). A later Sync reconciles it.
	ErrTargetNotVisible = errors.New("target topic exists but is not visible in metadata yet")

	// ErrInvalidTargetName: the target name (source name with the prefix)
	// is not a valid Kafka topic name.
	ErrInvalidTargetName = errors.New("invalid target topic name")
)
