package proxy

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/switchyard/switchyard/internal/kafkatest"
	"github.com/switchyard/switchyard/internal/stubmirror"
)

// partitionView is what a client caches about a topic from Metadata.
type partitionView struct {
	topicID [16]byte
	epochs  map[int32]int32
	leaders map[int32]int32
}

func metadataView(ctx context.Context, t *testing.T, cl *kgo.Client, topic string) partitionView {
	t.Helper()
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		t.Fatalf("metadata: %v", err)
	}
	v := partitionView{epochs: map[int32]int32{}, leaders: map[int32]int32{}}
	for _, tm := range resp.Topics {
		if tm.Topic == nil || *tm.Topic != topic {
			continue
		}
		v.topicID = tm.TopicID
		for _, p := range tm.Partitions {
			v.epochs[p.Partition] = p.LeaderEpoch
			v.leaders[p.Partition] = p.Leader
		}
	}
	return v
}

// TestSwitchKeepsCachedStateConsistent switches to a cluster whose leader
// epochs are lower and whose topic ids differ, and checks what a client
// caches: the topic id stays the same, epochs only rise, leaders are
// virtual brokers the client can reach, and a franz-go producer using
// topic ids (Produce v13) and a consumer carry on without errors.
func TestSwitchKeepsCachedStateConsistent(t *testing.T) {
	source, target := kafkatest.Pair(t)
	if source.Fake == nil {
		t.Skip("raising leader epochs needs kfake's MoveTopicPartition")
	}
	topic := kafkatest.Topic(t, "epochs")
	source.CreateTopic(t, topic, 3)
	target.CreateTopic(t, topic, 3)
	// Raise the source's epochs well above the target's (0).
	for round := 0; round < 4; round++ {
		for p := int32(0); p < 3; p++ {
			if err := source.Fake.MoveTopicPartition(topic, p, (p+int32(round)+1)%3); err != nil {
				t.Fatalf("move partition: %v", err)
			}
		}
	}
	if source.Fake.TopicInfo(topic).TopicID == target.Fake.TopicInfo(topic).TopicID {
		t.Fatal("test setup: both clusters have the same topic id")
	}
	tp := startProxy(t, source, target)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	probe := tp.client(t)
	before := metadataView(ctx, t, probe, topic)
	if before.topicID == source.Fake.TopicInfo(topic).TopicID {
		t.Errorf("the proxy presented the source's real topic id instead of a virtual one")
	}

	producer := tp.client(t, kgo.DisableIdempotentWrite(), kgo.MaxProduceRequestsInflightPerBroker(1),
		kgo.ProducerLinger(0))
	group := "g-" + topic
	consumer := tp.client(t, kgo.ConsumeTopics(topic), kgo.ConsumerGroup(group), kgo.DisableAutoCommit())
	produceN(ctx, t, producer, topic, 0, 300)
	consumeN(ctx, t, consumer, 300)
	if err := consumer.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatalf("commit: %v", err)
	}

	if _, err := stubmirror.CopyTopic(ctx, source.Bootstrap, target.Bootstrap, topic); err != nil {
		t.Fatal(err)
	}
	if err := stubmirror.CopyGroupOffsets(ctx, source.Bootstrap, target.Bootstrap, group); err != nil {
		t.Fatal(err)
	}
	if _, err := tp.Switch(ctx, "target"); err != nil {
		t.Fatalf("switch: %v", err)
	}

	after := metadataView(ctx, t, probe, topic)
	if after.topicID != before.topicID {
		t.Errorf("topic id changed across the switch: %x -> %x", before.topicID, after.topicID)
	}
	for p, e := range before.epochs {
		if after.epochs[p] <= e {
			t.Errorf("partition %d: leader epoch went from %d to %d; it must rise", p, e, after.epochs[p])
		}
	}
	for p, l := range after.leaders {
		if _, _, ok := tp.brokerAddress(l); !ok {
			t.Errorf("partition %d: leader %d is not a virtual broker with a listener", p, l)
		}
	}

	// The same clients keep working: produce by topic id, consume on.
	produceN(ctx, t, producer, topic, 300, 300)
	got := consumeN(ctx, t, consumer, 300)
	checkRecords(t, got, 300, 600)
	for _, s := range got {
		if s.seq < 300 {
			t.Errorf("record %d consumed again after the switch", s.seq)
		}
	}
}

// TestNewBrokerGetsListener adds a broker to the active cluster while the
// proxy runs: it appears in metadata as a new virtual broker with its own
// listener, without a restart.
func TestNewBrokerGetsListener(t *testing.T) {
	source := kafkatest.NewFake(t, "source", 2)
	tp := startProxy(t, source, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := tp.client(t)
	count := func() (int, []kmsg.MetadataResponseBroker) {
		resp, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl)
		if err != nil {
			t.Fatalf("metadata: %v", err)
		}
		return len(resp.Brokers), resp.Brokers
	}
	if n, _ := count(); n != 2 {
		t.Fatalf("brokers before: %d, want 2", n)
	}
	if _, _, err := source.Fake.AddNode(-1, 0); err != nil {
		t.Fatalf("add node: %v", err)
	}
	var brokers []kmsg.MetadataResponseBroker
	eventually(t, 10*time.Second, "third broker in metadata", func() error {
		var n int
		n, brokers = count()
		if n != 3 {
			return fmt.Errorf("%d brokers", n)
		}
		return nil
	})
	for _, b := range brokers {
		if !tp.isLocal(b.Host, b.Port) {
			t.Errorf("broker %d at %s:%d is not a proxy listener", b.NodeID, b.Host, b.Port)
		}
	}
	// The new virtual broker answers.
	topic := kafkatest.Topic(t, "newbroker")
	source.CreateTopic(t, topic, 6)
	produceN(ctx, t, tp.client(t), topic, 0, 600)
	got := consumeN(ctx, t, tp.client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())), 600)
	checkRecords(t, got, 0, 600)
}

// TestBrokerAddressBase gives each virtual broker its own loopback address
// on the bootstrap port.
func TestBrokerAddressBase(t *testing.T) {
	source := kafkatest.NewFake(t, "source", 3)
	port := freePort(t)
	tp := startProxy(t, source, nil, func(c *Config) {
		c.Listen = fmt.Sprintf("127.0.0.1:%d", port)
		c.BrokerAddressBase = "127.0.1.10"
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, tp.client(t))
	if err != nil {
		t.Fatalf("metadata: %v", err)
	}
	seen := map[string]bool{}
	for _, b := range resp.Brokers {
		if b.Port != int32(port) {
			t.Errorf("broker %d port %d, want the bootstrap port %d", b.NodeID, b.Port, port)
		}
		want := fmt.Sprintf("127.0.1.%d", 10+b.NodeID)
		if b.Host != want {
			t.Errorf("broker %d host %s, want %s", b.NodeID, b.Host, want)
		}
		seen[b.Host] = true
	}
	if len(seen) != 3 {
		t.Errorf("want 3 distinct broker addresses, got %v", seen)
	}
	topic := kafkatest.Topic(t, "addrbase")
	source.CreateTopic(t, topic, 3)
	produceN(ctx, t, tp.client(t), topic, 0, 300)
}

// TestApiVersionsIntersection: the proxy advertises, per key, no more than
// the oldest cluster supports, and leaves out keys one cluster lacks.
func TestApiVersionsIntersection(t *testing.T) {
	source := kafkatest.NewFake(t, "source", 1)
	// The target pretends to be an older broker.
	old := kafkatest.NewFake(t, "target", 1, kfake.MaxVersions(kversion.V3_5_0()))
	tp := startProxy(t, source, old)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	eventually(t, 10*time.Second, "target versions known", func() error {
		if tp.upstreams["target"].apiVersions() == nil {
			return errNotYet
		}
		return nil
	})
	resp, err := kmsg.NewPtrApiVersionsRequest().RequestWith(ctx, tp.client(t))
	if err != nil {
		t.Fatalf("api versions: %v", err)
	}
	limit := kversion.V3_5_0()
	got := map[int16]int16{}
	for _, k := range resp.ApiKeys {
		got[k.ApiKey] = k.MaxVersion
		if max, ok := limit.LookupMaxKeyVersion(k.ApiKey); !ok {
			t.Errorf("key %d (%s) advertised but the 3.5 target lacks it", k.ApiKey, apiName(k.ApiKey))
		} else if k.MaxVersion > max {
			t.Errorf("key %d (%s): max v%d above the 3.5 target's v%d", k.ApiKey, apiName(k.ApiKey), k.MaxVersion, max)
		}
	}
	if got[keyProduce] != 9 || got[keyFetch] != 15 {
		t.Errorf("Produce/Fetch: got v%d/v%d, want v9/v15 (Kafka 3.5)", got[keyProduce], got[keyFetch])
	}
	// Clients still work at the intersected versions.
	topic := kafkatest.Topic(t, "versions")
	source.CreateTopic(t, topic, 1)
	produceN(ctx, t, tp.client(t), topic, 0, 100)
}
