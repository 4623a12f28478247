package kafkatest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/switchyard/switchyard/kafkasec"
)

// Backend names accepted in SWITCHYARD_TEST_KAFKA.
const (
	BackendKfake = "kfake"
	BackendReal  = "real"
)

// Cluster is one Kafka cluster a test can use.
type Cluster struct {
	// Name is "source" or "target".
	Name string
	// Bootstrap lists host:port seed addresses.
	Bootstrap []string
	// Fake is the in-process cluster on the kfake backend, nil on real Kafka.
	Fake *kfake.Cluster
	// Security is how to connect to Bootstrap (zero: PLAINTEXT).
	Security kafkasec.Config
}

// Backend returns the backend selected by SWITCHYARD_TEST_KAFKA.
func Backend() string {
	if b := strings.TrimSpace(os.Getenv("SWITCHYARD_TEST_KAFKA")); b != "" {
		return b
	}
	return BackendKfake
}

// Pair returns a source cluster (3 brokers) and a target cluster (2 brokers
// on kfake, whatever the test bed started on real Kafka). kfake clusters are
// closed when the test ends.
func Pair(t testing.TB) (source, target *Cluster) {
	t.Helper()
	switch b := Backend(); b {
	case BackendKfake:
		return NewFake(t, "source", 3), NewFake(t, "target", 2)
	case BackendReal:
		return realPair(t)
	default:
		t.Fatalf("SWITCHYARD_TEST_KAFKA=%q: want %q or %q", b, BackendKfake, BackendReal)
		return nil, nil
	}
}

// NewFake starts an in-process kfake cluster with the given number of
// brokers on 127.0.0.1 and closes it when the test ends. Extra options are
// appended to the defaults.
func NewFake(t testing.TB, name string, brokers int, opts ...kfake.Opt) *Cluster {
	t.Helper()
	all := append([]kfake.Opt{
		kfake.NumBrokers(brokers),
		kfake.ClusterID("kfake-" + name),
		kfake.DefaultNumPartitions(3),
		kfake.AllowAutoTopicCreation(),
	}, opts...)
	c, err := kfake.NewCluster(all...)
	if err != nil {
		t.Fatalf("start kfake cluster %s: %v", name, err)
	}
	t.Cleanup(c.Close)
	return &Cluster{Name: name, Bootstrap: c.ListenAddrs(), Fake: c}
}

// Topic returns a topic name unique to this test run.
func Topic(t testing.TB, prefix string) string {
	t.Helper()
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("random topic suffix: %v", err)
	}
	return fmt.Sprintf("%s-%s", prefix, hex.EncodeToString(b[:]))
}

// Client returns a franz-go client for the cluster, closed when the test ends.
func (c *Cluster) Client(t testing.TB, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	all := append([]kgo.Opt{kgo.SeedBrokers(c.Bootstrap...)}, c.kgoSecurity(t)...)
	cl, err := kgo.NewClient(append(all, opts...)...)
	if err != nil {
		t.Fatalf("client for %s: %v", c.Name, err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// CreateTopic creates a topic on the cluster with replication factor 1 and
// waits until every partition has a leader.
func (c *Cluster) CreateTopic(t testing.TB, topic string, partitions int32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := c.Client(t)
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, partitions, 1, nil, topic)
	if err != nil && !errorsIsTopicExists(err) {
		t.Fatalf("create topic %s on %s: %v", topic, c.Name, err)
	}
	if resp.Err != nil && !errorsIsTopicExists(resp.Err) {
		t.Fatalf("create topic %s on %s: %v", topic, c.Name, resp.Err)
	}
	c.waitPartitions(ctx, t, cl, topic, int(partitions))
}

// WaitPartitions waits until the cluster's metadata shows topic with
// partitions partitions, each with a leader. A real broker learns of new
// partitions from the controller asynchronously: a client that asks right
// after CreatePartitions returns may still see the old count.
func (c *Cluster) WaitPartitions(t testing.TB, topic string, partitions int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c.waitPartitions(ctx, t, c.Client(t), topic, partitions)
}

func (c *Cluster) waitPartitions(ctx context.Context, t testing.TB, cl *kgo.Client, topic string, partitions int) {
	t.Helper()
	for {
		err := c.partitionsSeen(ctx, cl, topic, partitions)
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("topic %s on %s: %d partitions with leaders not seen after 60s: %v", topic, c.Name, partitions, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// partitionsSeen asks every broker of the cluster, since each learns of
// topic changes from the controller on its own schedule and a client may
// take its metadata from any of them.
func (c *Cluster) partitionsSeen(ctx context.Context, cl *kgo.Client, topic string, partitions int) error {
	brokers, err := kadm.NewClient(cl).ListBrokers(ctx)
	if err != nil {
		return fmt.Errorf("list brokers: %w", err)
	}
	for _, b := range brokers {
		req := kmsg.NewPtrMetadataRequest()
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(topic)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, cl.Broker(int(b.NodeID)))
		if err != nil {
			return fmt.Errorf("metadata from broker %d: %w", b.NodeID, err)
		}
		if len(resp.Topics) != 1 {
			return fmt.Errorf("broker %d answered %d topics", b.NodeID, len(resp.Topics))
		}
		rtp := resp.Topics[0]
		if err := kerr.ErrorForCode(rtp.ErrorCode); err != nil {
			return fmt.Errorf("broker %d: %w", b.NodeID, err)
		}
		if len(rtp.Partitions) != partitions {
			return fmt.Errorf("broker %d shows %d partitions", b.NodeID, len(rtp.Partitions))
		}
		for _, p := range rtp.Partitions {
			if p.Leader < 0 || p.ErrorCode != 0 {
				return fmt.Errorf("broker %d: partition %d has no leader (%v)", b.NodeID, p.Partition, kerr.ErrorForCode(p.ErrorCode))
			}
		}
	}
	return nil
}

func errorsIsTopicExists(err error) bool {
	return err == kerr.TopicAlreadyExists || strings.Contains(err.Error(), kerr.TopicAlreadyExists.Message)
}

// SettledEnds returns topic's end offsets once no transaction is pending on
// it: the last stable offset equals the high watermark on every partition.
// A real broker answers EndTxn before it writes the markers, so right after
// a producer commits, the last stable offset can still be short of the
// committed records; a test that waits for that offset would declare a
// copy complete too early.
func (c *Cluster) SettledEnds(ctx context.Context, t testing.TB, topic string) kadm.ListedOffsets {
	t.Helper()
	adm := kadm.NewClient(c.Client(t))
	for {
		committed, err := adm.ListCommittedOffsets(ctx, topic)
		if err != nil {
			t.Fatalf("%s: committed offsets of %s: %v", c.Name, topic, err)
		}
		ends, err := adm.ListEndOffsets(ctx, topic)
		if err != nil {
			t.Fatalf("%s: end offsets of %s: %v", c.Name, topic, err)
		}
		settled := true
		ends.Each(func(o kadm.ListedOffset) {
			if lso, ok := committed.Lookup(o.Topic, o.Partition); !ok || lso.Offset != o.Offset {
				settled = false
			}
		})
		if settled {
			return committed
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: transactions on %s still pending (last stable %v, end %v): %v", c.Name, topic, committed, ends, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ReadCommitted reads every committed record of topic (read_committed, up
// to the settled end offsets), ordered by partition and offset; control
// records are left out.
func (c *Cluster) ReadCommitted(ctx context.Context, t testing.TB, topic string) []*kgo.Record {
	t.Helper()
	return c.readTo(ctx, t, topic, kgo.ReadCommitted())
}

// ReadUncommitted reads every record of topic's log (read_uncommitted, up
// to the settled end offsets): the records of aborted transactions too,
// ordered by partition and offset; control records are left out.
func (c *Cluster) ReadUncommitted(ctx context.Context, t testing.TB, topic string) []*kgo.Record {
	t.Helper()
	return c.readTo(ctx, t, topic, kgo.ReadUncommitted())
}

// readTo reads topic from its start to the settled end offsets with the
// isolation level given.
func (c *Cluster) readTo(ctx context.Context, t testing.TB, topic string, isolation kgo.IsolationLevel) []*kgo.Record {
	t.Helper()
	ends := c.SettledEnds(ctx, t, topic)
	cl := c.Client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(isolation), kgo.KeepControlRecords())
	defer cl.Close()
	next := map[int32]int64{}
	var out []*kgo.Record
	for {
		done := true
		ends.Each(func(o kadm.ListedOffset) {
			if next[o.Partition] < o.Offset {
				done = false
			}
		})
		if done {
			break
		}
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %s on %s: %v", topic, c.Name, ctx.Err())
		}
		fs.EachRecord(func(r *kgo.Record) {
			next[r.Partition] = r.Offset + 1
			if !r.Attrs.IsControl() {
				out = append(out, r)
			}
		})
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Partition < out[j].Partition || (out[i].Partition == out[j].Partition && out[i].Offset < out[j].Offset)
	})
	return out
}
