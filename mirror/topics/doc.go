// Package topics decides which source topics the mirror copies, what they
// are called on the target, and keeps the target's topics in line with
// them: created when missing, partitions added when the source grows, and
// the configs that describe the data (never those of the cluster holding
// it) copied and followed.
//
// A Policy (include/exclude patterns, opt-in for internal topics, a name
// prefix) compiles to a Selector. Internal topics — Kafka's own "__*"
// topics, this mirror's "__switchyard*", Schema Registry's "_schemas",
// Kafka Connect's default internal topics, Confluent's, Redpanda's and
// MirrorMaker 2's — are never selected unless opted in by exact name.
//
// A Syncer applies the selection: each Sync reports per topic what it did
// and, as an error in that topic's entry, anything that stops the topic
// from being copied (the target has more partitions, or another
// cleanup.policy). The engine copies only topics whose entry has no error.
// Sync is idempotent.
package topics
