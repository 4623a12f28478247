// Package smoke holds the test bed's own smoke test: a produce, a group
// consume and a commit on both clusters of the kafkatest pair. It runs on
// kfake with `go test ./...` and on real Kafka with `make test-real`, so a
// broken test bed fails here first, with a clear message, rather than in the
// middle of another suite.
package smoke
