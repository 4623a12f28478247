// Package stubmirror copies a topic's records and a group's committed
// offsets from one cluster to another, naively, for proxy tests that must
// not depend on the mirror engine (they test the proxy, not the copy). It
// assumes the target partitions start empty, so offsets match one to one;
// the real mirror (package mirror) keeps an exact offset map instead.
package stubmirror

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/switchyard/switchyard/mirror"
)

// CopyTopic copies every record of topic from src to dst, partition by
// partition and in order, keeping keys, values, headers and timestamps. It
// returns the number of records copied.
func CopyTopic(ctx context.Context, src, dst []string, topic string) (int, error) {
	sc, err := kgo.NewClient(kgo.SeedBrokers(src...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return 0, fmt.Errorf("source client: %w", err)
	}
	defer sc.Close()
	ends, err := kadm.NewClient(sc).ListEndOffsets(ctx, topic)
	if err != nil {
		return 0, fmt.Errorf("source end offsets of %s: %w", topic, err)
	}
	want := 0
	ends.Each(func(o kadm.ListedOffset) { want += int(o.Offset) })
	if want == 0 {
		return 0, nil
	}
	dc, err := kgo.NewClient(kgo.SeedBrokers(dst...), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.MaxProduceRequestsInflightPerBroker(1))
	if err != nil {
		return 0, fmt.Errorf("target client: %w", err)
	}
	defer dc.Close()
	got := 0
	for got < want {
		fs := sc.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return got, fmt.Errorf("copy %s: %d of %d records: %w", topic, got, want, err)
		}
		var batch []*kgo.Record
		fs.EachRecord(func(r *kgo.Record) {
			batch = append(batch, &kgo.Record{Topic: topic, Partition: r.Partition, Key: r.Key, Value: r.Value,
				Headers: r.Headers, Timestamp: r.Timestamp})
		})
		if err := dc.ProduceSync(ctx, batch...).FirstErr(); err != nil {
			return got, fmt.Errorf("copy %s: produce to target: %w", topic, err)
		}
		got += len(batch)
	}
	return got, nil
}

// CopyGroupOffsets copies a group's committed offsets from src to dst.
func CopyGroupOffsets(ctx context.Context, src, dst []string, group string) error {
	sc, err := kgo.NewClient(kgo.SeedBrokers(src...))
	if err != nil {
		return fmt.Errorf("source client: %w", err)
	}
	defer sc.Close()
	dc, err := kgo.NewClient(kgo.SeedBrokers(dst...))
	if err != nil {
		return fmt.Errorf("target client: %w", err)
	}
	defer dc.Close()
	// Once no transactional offset commit is pending, as the mirror reads
	// them.
	offs, err := mirror.StableOffsets(ctx, kadm.NewClient(sc), group)
	if err != nil {
		return fmt.Errorf("fetch offsets of %s: %w", group, err)
	}
	if _, err := kadm.NewClient(dc).CommitOffsets(ctx, group, offs.Offsets()); err != nil {
		return fmt.Errorf("commit offsets of %s on target: %w", group, err)
	}
	return nil
}
