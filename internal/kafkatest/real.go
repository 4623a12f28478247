package kafkatest

import (
	"os"
	"strings"
	"testing"
)

// realPair reads the bootstrap addresses of the clusters started by the
// real-Kafka test bed from SWITCHYARD_TEST_SOURCE and SWITCHYARD_TEST_TARGET
// (comma-separated host:port lists).
func realPair(t testing.TB) (source, target *Cluster) {
	t.Helper()
	src := strings.TrimSpace(os.Getenv("SWITCHYARD_TEST_SOURCE"))
	dst := strings.TrimSpace(os.Getenv("SWITCHYARD_TEST_TARGET"))
	if src == "" || dst == "" {
		t.Fatalf("SWITCHYARD_TEST_KAFKA=real needs SWITCHYARD_TEST_SOURCE and SWITCHYARD_TEST_TARGET (run `make kafka-up`)")
	}
	return &Cluster{Name: "source", Bootstrap: strings.Split(src, ",")},
		&Cluster{Name: "target", Bootstrap: strings.Split(dst, ",")}
}
