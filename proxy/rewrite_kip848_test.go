package proxy

import (
	"context"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/kafkatest"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestRewriteKIP848AssignmentTopicIDs consumes through the proxy with a
// KIP-848 (server-side) consumer group. The coordinator names assigned
// topics by id, in ConsumerGroupHeartbeatResponse.Assignment (a pointer to
// a struct): the client resolves those ids against the (virtual) ids its
// metadata shows, so an untranslated real id leaves it with nothing to
// consume.
func TestRewriteKIP848AssignmentTopicIDs(t *testing.T) {
	source, target := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "kip848")
	source.CreateTopic(t, topic, 3)
	tp := startProxy(t, source, target)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	const n = 100
	produceN(ctx, t, tp.client(t), topic, 0, n)
	cl := tp.client(t,
		kgo.ConsumeTopics(topic),
		kgo.ConsumerGroup("g-kip848"),
		kgo.ServerSideBalancer(),
		kgo.Balancers(kgo.RangeBalancer()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	got := consumeN(ctx, t, cl, n)
	checkRecords(t, got, 0, n)
}
