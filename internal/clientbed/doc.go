// Package clientbed runs real Kafka client libraries — franz-go, sarama,
// kcat (librdkafka), confluent-kafka for Python (librdkafka), kafkajs and the
// Java client — against any bootstrap address, and proves with record-level
// checks that what they produced arrived intact: every acknowledged record
// consumed exactly once, keys, values and headers unchanged, per-key order
// kept within each partition, no delivery error, offsets committed.
//
// It exists so that the proxy (and cutover suites) can be pointed at by the
// clients that will really sit behind it. franz-go and sarama run in process;
// the others are programs under testclients/ (installed by `make deps`) that
// print one JSON document on stdout. Every client follows the same recipe:
// record i has key "k-<i mod K>", value "<prefix>-<i>" and the headers
// seq=<i> and client=<prefix>, in that order.
//
// StartLive runs a client as a live application instead (live.go): it
// produces continuously and consumes in a group with auto-commit until
// stopped, reporting every acknowledgement, delivered record and error as
// it happens. The compatibility matrix (internal/compat) is built on it.
package clientbed
