// Package streamsbed runs Apache Kafka's own Kafka Streams WordCountDemo
// (org.apache.kafka.streams.examples.wordcount.WordCountDemo, unchanged) and
// Kafka's VerifiableProducer as its input, as JVMs from the test bed's jars,
// and judges what crossed (tests only).
//
// The input: VerifiableProducer writes "<prefix>.<n>" to
// streams-plaintext-input (n counting from 0; retries=0, acks=all) and
// prints a JSON line for every acknowledged and every failed send. The
// application splits each line into words (lower case, on \W+), counts each
// word in a state store and writes every new count to
// streams-wordcount-output (key the word, value a big-endian long). So word
// "<prefix>" counts every input record and each "<n>" counts one.
//
// Check holds what the clusters hold afterwards to that: the count of every
// word in the input topic equals the last count written for it; with
// exactly_once_v2 each word's counts in the output log are 1, 2, 3, ... with
// none repeated or skipped, and at_least_once may count a record more than
// once (reported as duplicates) but never less. WordCount scans each Streams
// instance's log for what Streams did with its state (tasks lost, stores
// wiped, changelogs restored from the beginning or from a checkpoint) so a
// run says whether the state was rebuilt where it ran last.
//
// The jars come from the test bed's lib dir (testbed/pom.xml resolves
// kafka-streams and kafka-streams-examples for Kafka 4.x); see FindLib.
package streamsbed
