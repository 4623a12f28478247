package smoke

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/kafkatest"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestPairProduceConsumeCommit(t *testing.T) {
	source, target := kafkatest.Pair(t)
	if kafkatest.Backend() == kafkatest.BackendReal {
		t.Logf("real Kafka %s: source %v, target %v", kafkatest.Env("SWITCHYARD_TEST_KAFKA_VERSION"), source.Bootstrap, target.Bootstrap)
	}
	for _, c := range []*kafkatest.Cluster{source, target} {
		t.Run(c.Name, func(t *testing.T) {
			t.Parallel()
			roundTrip(t, c)
		})
	}
}

func roundTrip(t *testing.T, c *kafkatest.Cluster) {
	const n = 300
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	topic := kafkatest.Topic(t, "smoke")
	group := kafkatest.Topic(t, "smoke-group")
	c.CreateTopic(t, topic, 3)

	prod := c.Client(t, kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	recs := make([]*kgo.Record, n)
	for i := range recs {
		recs[i] = &kgo.Record{Key: []byte(fmt.Sprint(i % 7)), Value: []byte(fmt.Sprint(i))}
	}
	if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce %d records to %s on %s: %v", n, topic, c.Name, err)
	}

	cons := c.Client(t,
		kgo.ConsumeTopics(topic),
		kgo.ConsumerGroup(group),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
	)
	seen := make(map[string]bool, n)
	for len(seen) < n {
		fs := cons.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consume %s on %s: %d of %d records after 90s", topic, c.Name, len(seen), n)
		}
		fs.EachError(func(tp string, p int32, err error) {
			t.Fatalf("fetch %s/%d on %s: %v", tp, p, c.Name, err)
		})
		fs.EachRecord(func(r *kgo.Record) { seen[string(r.Value)] = true })
	}
	if err := cons.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatalf("commit group %s on %s: %v", group, c.Name, err)
	}

	adm := kadm.NewClient(c.Client(t))
	offs, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		t.Fatalf("fetch offsets of %s on %s: %v", group, c.Name, err)
	}
	var total int64
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Topic == topic {
			total += o.At
		}
	})
	if total != n {
		t.Fatalf("group %s on %s committed %d records in all, want %d", group, c.Name, total, n)
	}
}
