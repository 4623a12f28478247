// Package kafkatest gives integration tests a pair of Kafka clusters — a
// source and a target — from the backend chosen by SWITCHYARD_TEST_KAFKA:
//
//	kfake (default)  two in-process kfake clusters per test (3 and 2 brokers)
//	real             the real Apache Kafka clusters started by `make kafka-up`
//
// The same test code runs on both, so every integration suite is also a
// suite against real Kafka. Tests must create their own topics with unique
// names (Topic, CreateTopic): real clusters are shared between tests.
package kafkatest
