package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// clusters are the source and target of one run.
type clusters struct {
	source, target []string
	fakes          []*kfake.Cluster
}

// openClusters starts two kfake clusters (source 3 brokers, target 2, as
// internal/kafkatest.Pair does), or names the test bed's with -kafka real.
func openClusters(o *options) (*clusters, error) {
	if o.kafka == "real" {
		env, err := readEnvFile(o.envFile)
		if err != nil {
			return nil, err
		}
		src, dst := splitAddrs(env["SWITCHYARD_TEST_SOURCE"]), splitAddrs(env["SWITCHYARD_TEST_TARGET"])
		if len(src) == 0 || len(dst) == 0 {
			return nil, fmt.Errorf("%s: SWITCHYARD_TEST_SOURCE and SWITCHYARD_TEST_TARGET are needed (make kafka-up)", o.envFile)
		}
		for _, a := range [][]string{src, dst} {
			if err := reachable(a); err != nil {
				return nil, fmt.Errorf("test bed at %s does not answer: %w (make kafka-up?)", strings.Join(a, ","), err)
			}
		}
		return &clusters{source: src, target: dst}, nil
	}
	c := &clusters{}
	for _, b := range []struct {
		name    string
		brokers int
	}{{"source", 3}, {"target", 2}} {
		f, err := kfake.NewCluster(kfake.NumBrokers(b.brokers), kfake.ClusterID("bench-"+b.name), kfake.DefaultNumPartitions(3))
		if err != nil {
			c.close()
			return nil, fmt.Errorf("kfake %s: %w", b.name, err)
		}
		c.fakes = append(c.fakes, f)
	}
	c.source, c.target = c.fakes[0].ListenAddrs(), c.fakes[1].ListenAddrs()
	return c, nil
}

func (c *clusters) close() {
	for _, f := range c.fakes {
		f.Close()
	}
}

// readEnvFile reads KEY=value lines (optionally "export KEY=value"),
// ignoring comments; the environment overrides the file.
func readEnvFile(path string) (map[string]string, error) {
	out := map[string]string{}
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		if k, v, ok := strings.Cut(line, "="); ok {
			out[strings.TrimSpace(k)] = strings.Trim(strings.TrimSpace(v), `"'`)
		}
	}
	for _, k := range []string{"SWITCHYARD_TEST_SOURCE", "SWITCHYARD_TEST_TARGET"} {
		if v := strings.TrimSpace(os.Getenv(k)); v != "" {
			out[k] = v
		}
	}
	return out, nil
}

func splitAddrs(s string) []string {
	var out []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

func reachable(addrs []string) error {
	var last error
	for _, a := range addrs {
		c, err := net.DialTimeout("tcp", a, 3*time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		last = err
	}
	return last
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}

// createTopic creates a topic (replication 1) and waits until every
// partition has a leader.
func createTopic(ctx context.Context, bootstrap []string, topic string, partitions int) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap...))
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	resp, err := adm.CreateTopic(ctx, int32(partitions), 1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	return waitUntil(ctx, "topic "+topic+" has leaders", 50*time.Millisecond, func() (bool, error) {
		md, err := adm.Metadata(ctx, topic)
		if err != nil {
			return false, nil
		}
		td, ok := md.Topics[topic]
		if !ok || td.Err != nil || len(td.Partitions) != partitions {
			return false, nil
		}
		for _, p := range td.Partitions {
			if p.Leader < 0 || p.Err != nil {
				return false, nil
			}
		}
		return true, nil
	})
}

// deleteTopics deletes topics, ignoring those that do not exist.
func deleteTopics(ctx context.Context, bootstrap []string, topics ...string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap...))
	if err != nil {
		return err
	}
	defer cl.Close()
	resps, err := kadm.NewClient(cl).DeleteTopics(ctx, topics...)
	if err != nil {
		return err
	}
	for _, r := range resps {
		if r.Err != nil && !errors.Is(r.Err, kerr.UnknownTopicOrPartition) {
			return fmt.Errorf("delete %s: %w", r.Topic, r.Err)
		}
	}
	return nil
}

// waitUntil polls cond every interval until it holds, fails, or ctx ends.
func waitUntil(ctx context.Context, what string, interval time.Duration, cond func() (bool, error)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		ok, err := cond()
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, ctx.Err())
		case <-t.C:
		}
	}
}
