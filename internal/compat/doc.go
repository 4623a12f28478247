// Package compat holds the compatibility matrix (tests only): real Kafka
// clients — the Java client, librdkafka (confluent-kafka-python, kcat),
// franz-go, sarama and kafkajs — running as live applications through
// Switchyard sidecars while a cutover moves them to another cluster. See
// docs/COMPATIBILITY.md for what it proves and the results.
package compat
