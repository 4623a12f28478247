package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/switchyard/switchyard/internal/clientbed"
	"github.com/switchyard/switchyard/internal/kafkatest"
	"github.com/switchyard/switchyard/internal/proxytest"
	"github.com/switchyard/switchyard/internal/stubmirror"
)

const recordsPerClient = 1000

func needClient(t *testing.T, c clientbed.Client) {
	t.Helper()
	if err := clientbed.Available(c); err != nil {
		if os.Getenv("SWITCHYARD_REQUIRE_CLIENTS") == "1" {
			t.Fatalf("%v (`make deps` should have installed it)", err)
		}
		t.Skipf("skipped: %v (run `make deps`)", err)
	}
}

// TestClientsThroughProxy: every client produces keyed records with headers
// through the proxy and consumes them back in a group; counts, order,
// contents and committed offsets are verified.
func TestClientsThroughProxy(t *testing.T) {
	source, target := kafkatest.Pair(t)
	p := proxytest.Start(t, []*kafkatest.Cluster{source, target})
	for _, c := range clientbed.Clients() {
		t.Run(string(c), func(t *testing.T) {
			needClient(t, c)
			topic := kafkatest.Topic(t, "e2e-"+string(c))
			source.CreateTopic(t, topic, 3)
			spec := clientbed.Spec{Bootstrap: []string{p.Addr().String()}, Topic: topic, Records: recordsPerClient,
				Timeout: 90 * time.Second}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			res, err := clientbed.Run(ctx, c, spec)
			if err != nil {
				t.Fatalf("run: %v", err)
			}
			if err := res.Verify(spec); err != nil {
				t.Errorf("verify: %v\n%s", err, res.Log)
			}
		})
	}
}

// TestLibrdkafkaConsumerAcrossSwitch keeps one librdkafka consumer
// (confluent-kafka-python) running while the proxy switches to a cluster
// whose topic ids differ and whose leader epochs are lower: the consumer
// must receive every record exactly once, with no error, holding the
// metadata it cached from the first cluster.
func TestLibrdkafkaConsumerAcrossSwitch(t *testing.T) {
	testConsumerAcrossSwitch(t, clientbed.ConfluentKafkaPython)
}

// TestJavaConsumerAcrossSwitch does the same with the Java client.
func TestJavaConsumerAcrossSwitch(t *testing.T) {
	testConsumerAcrossSwitch(t, clientbed.Java)
}

func testConsumerAcrossSwitch(t *testing.T, c clientbed.Client) {
	needClient(t, c)
	source, target := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "e2e-switch")
	source.CreateTopic(t, topic, 3)
	target.CreateTopic(t, topic, 3)
	if source.Fake != nil {
		// Raise the source's epochs above the target's.
		for round := int32(0); round < 3; round++ {
			for part := int32(0); part < 3; part++ {
				if err := source.Fake.MoveTopicPartition(topic, part, (part+round+1)%3); err != nil {
					t.Fatalf("move partition: %v", err)
				}
			}
		}
		// The target's leaders (two brokers) differ from the source's, as
		// between two clusters of a migration: after the switch the
		// consumer fetches each partition from the virtual broker of its
		// leader on the source, and the proxy fetches it from the
		// target's leader (fetchroute.go).
		for part := int32(0); part < 3; part++ {
			if err := target.Fake.MoveTopicPartition(topic, part, (part+1)%2); err != nil {
				t.Fatalf("move partition: %v", err)
			}
		}
	}
	p := proxytest.Start(t, []*kafkatest.Cluster{source, target})
	bootstrap := []string{p.Addr().String()}
	const n = 600
	// The consumer stops after 3n deliveries: the first half on the
	// source, all of it again from the target's start once it rejoined
	// there (see below), and the second half. Were it short of the first
	// half when it rejoined, it stops at its deadline instead, with every
	// record delivered all the same.
	spec := clientbed.Spec{Bootstrap: bootstrap, Topic: topic, Group: topic + "-group", Records: 3 * n,
		Mode: clientbed.ModeConsume, Prefix: "franz-go", Timeout: 60 * time.Second}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	type outcome struct {
		res clientbed.Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := clientbed.Run(ctx, c, spec)
		done <- outcome{res, err}
	}()

	// Uncompressed, so the bytes fetched through the proxy bound the records
	// delivered (see below).
	producer, err := kgo.NewClient(kgo.SeedBrokers(bootstrap...), kgo.DefaultProduceTopic(topic),
		kgo.ProducerBatchCompression(kgo.NoCompression()))
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	produce := func(from, to int) {
		t.Helper()
		var rs []*kgo.Record
		for i := from; i < to; i++ {
			rs = append(rs, &kgo.Record{
				Key:   []byte(fmt.Sprintf("k-%d", i%clientbed.DefaultKeys)),
				Value: []byte(fmt.Sprintf("franz-go-%d", i)),
				Headers: []kgo.RecordHeader{
					{Key: "seq", Value: []byte(fmt.Sprint(i))},
					{Key: "client", Value: []byte("franz-go")},
				},
			})
		}
		if err := producer.ProduceSync(ctx, rs...).FirstErr(); err != nil {
			t.Fatalf("produce: %v", err)
		}
	}
	produce(0, n)
	// Switch only once the consumer has received the first half: its
	// metadata, epochs and topic ids are then those of the source.
	const recordBytes = 40 // value, key and headers of one record, at least
	deadline := time.Now().Add(60 * time.Second)
	for p.Counter(t, "response_bytes_total", map[string]string{"api_key": "Fetch"}) < n*recordBytes {
		if time.Now().After(deadline) {
			t.Fatalf("the consumer did not fetch the first %d records within 60s", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The consumer commits only when it is done, so the group has no
	// offsets to carry over: when it rejoins on the target (its member is
	// unknown there) it starts from the earliest offset again and re-reads
	// what it read on the source. Draining groups so that nothing is
	// re-read is the cutover's job (control plane); this test is about the
	// client's cached metadata. The second half is produced once the
	// consumer rejoined, so that a second delivery of it is a fault, not
	// the group's reset.
	if err := p.SetGate(proxyGate()); err != nil {
		t.Fatal(err)
	}
	if _, err := stubmirror.CopyTopic(ctx, source.Bootstrap, target.Bootstrap, topic); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Switch(ctx, "target"); err != nil {
		t.Fatalf("switch: %v", err)
	}
	p.ClearGate()
	waitMembers(ctx, t, target, spec.Group, 1)
	produce(n, 2*n)

	out := <-done
	if out.err != nil {
		t.Fatalf("consumer: %v", out.err)
	}
	if out.res.Consume == nil {
		t.Fatalf("consumer reported nothing:\n%s", out.res.Log)
	}
	if out.res.Consume.TimedOut {
		t.Logf("the consumer stopped at its deadline: it rejoined on the target before it had the whole first half")
	}
	for _, e := range out.res.Consume.Errors {
		// The group's members and generation exist only on the source: a
		// commit the consumer makes after the switch and before it rejoined
		// on the target fails with ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID or
		// GROUP_ID_NOT_FOUND.
		// Draining the group on the source before the flip (the control
		// plane's cutover) is what removes this; here it is counted.
		// (Kafka 4.x answers a commit for a group it has never seen with
		// GROUP_ID_NOT_FOUND.)
		if strings.Contains(e, "ILLEGAL_GENERATION") || strings.Contains(e, "UNKNOWN_MEMBER_ID") ||
			strings.Contains(e, "CommitFailedException") || strings.Contains(e, "GROUP_ID_NOT_FOUND") ||
			strings.Contains(e, "GroupIdNotFoundException") || strings.Contains(e, "group id does not exist") {
			t.Logf("expected without a group drain: %s", e)
			continue
		}
		t.Errorf("consumer error: %s", e)
	}
	// Every record arrived, intact and in order per key; re-reads of the
	// pre-switch records are counted, not failed (see above).
	seen := map[int]int{}
	last := map[string]int{}
	for _, r := range out.res.Consume.Records {
		var seq int
		if r.Value == nil || r.Key == nil {
			t.Fatalf("record without key or value at %d/%d", r.Partition, r.Offset)
		}
		if _, err := fmt.Sscanf(*r.Value, "franz-go-%d", &seq); err != nil {
			t.Fatalf("unexpected value %q", *r.Value)
		}
		if want := fmt.Sprintf("k-%d", seq%clientbed.DefaultKeys); *r.Key != want {
			t.Errorf("seq %d: key %q, want %q", seq, *r.Key, want)
		}
		seen[seq]++
		k := fmt.Sprintf("%d/%s", r.Partition, *r.Key)
		if prev, ok := last[k]; ok && seq <= prev && seen[seq] == 1 {
			t.Errorf("partition %d key %s: seq %d delivered after %d", r.Partition, *r.Key, seq, prev)
		}
		last[k] = seq
	}
	rereads := 0
	for i := 0; i < 2*n; i++ {
		switch {
		case seen[i] == 0:
			t.Errorf("record %d never delivered", i)
		case seen[i] > 1:
			rereads += seen[i] - 1
			if i >= n {
				t.Errorf("post-switch record %d delivered %d times", i, seen[i])
			}
		}
	}
	routed := p.Counter(t, "fetch_routed_total", nil)
	t.Logf("%s: %d records delivered, %d pre-switch records re-read after the group moved, %v fetches routed to leaders", c, len(out.res.Consume.Records), rereads, routed)
	if target.Fake != nil && routed == 0 {
		t.Errorf("no fetch was routed: the consumer never fetched a partition from a virtual broker whose broker does not lead it")
	}
}

// waitMembers waits until group is stable on cluster c with members
// members.
func waitMembers(ctx context.Context, t *testing.T, c *kafkatest.Cluster, group string, members int) {
	t.Helper()
	adm := kadm.NewClient(c.Client(t))
	for {
		described, err := adm.DescribeGroups(ctx, group)
		g, ok := described[group]
		if err == nil && ok && g.Err == nil && g.State == "Stable" && len(g.Members) == members {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("group %s on %s: not stable with %d members (%+v, %v): %v", group, c.Name, members, g, err, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
