// Package e2e holds end-to-end suites: real Kafka clients (franz-go,
// sarama, kcat, confluent-kafka-python, kafkajs, the Java client) talking to
// real or in-process Kafka clusters through a running Switchyard proxy,
// across switches. It has tests only.
package e2e
