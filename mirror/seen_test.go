package mirror

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/switchyard/switchyard/internal/kafkatest"
	"github.com/switchyard/switchyard/mirror/offsetmap"
)

// TestMirrorSeenRecordsDeletedAreAGap: the mirror fetched a new
// partition's records, but the target refused them (a partition just
// created, without a leader yet), so nothing was committed; the source
// then deleted them (retention, a Streams repartition purge) before the
// retry. The mirror had seen them: that is a gap (policy continue on a
// *-repartition topic: a lost range, counted), not a partition that
// "begins at the source's log start" with nothing lost.
func TestMirrorSeenRecordsDeletedAreAGap(t *testing.T) {
	source, target := kafkatest.Pair(t)
	if target.Fake == nil {
		t.Skip("the target's refusal is injected with kfake")
	}
	prefix := kafkatest.Topic(t, "seen")
	topic := prefix + "-repartition"
	rm := startMirror(t, kafkatest.Topic(t, "m"), source, target, []string{prefix + ".*"}, func(c *Config) {
		c.TopicSyncInterval, c.TopicPollInterval = time.Hour, time.Hour
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	waitFor(ctx, t, "the mirror is ready", func() bool { return rm.Status().Ready })

	// Every produce to the new target topic is refused until removed.
	refuse := target.Fake.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: kerr.NotLeaderForPartition, Count: -1})
	defer refuse.Remove()
	source.CreateTopic(t, topic, 1)
	produceTo(t, source, topic, 0, 0, 20)
	if err := rm.RefreshTopics(ctx); err != nil {
		t.Fatal(err)
	}
	// The mirror fetched offsets 0..19 and tried to copy them.
	if err := refuse.Wait(ctx, 1); err != nil {
		t.Fatalf("the mirror never produced to %s: %v", topic, err)
	}
	deleteRecords(t, source, topic, 0, 20)
	waitFor(ctx, t, "the mirror passes the deleted offsets", func() bool {
		om := rm.OffsetMap(topic, 0)
		return om != nil && om.Next() == 20
	})
	refuse.Remove()
	st := partStatus(rm, topic, 0)
	if want := (offsetmap.LostRange{From: 0, To: 20}); st.LostOffsets != 20 || st.LastLost != want {
		t.Errorf("the mirror fetched offsets 0..19, the target refused them, the source deleted them: "+
			"status %+v; want them lost (%v), not skipped silently", st, want)
	}
}

// TestMirrorDiscoversTopicsAtOnceRetention replays what real Kafka's
// retention check (every 5 min, on CreateTime) does to the records of
// TestMirrorDiscoversTopicsAtOnce, stamped 2023-11-14, more than
// retention.ms (7 days) ago, when it fires between the produce and the
// mirror's first fetch. kfake applies retention only when asked.
func TestMirrorDiscoversTopicsAtOnceRetention(t *testing.T) {
	source, target := kafkatest.Pair(t)
	if source.Fake == nil {
		t.Skip("replays real Kafka's retention check on kfake")
	}
	prefix := kafkatest.Topic(t, "late")
	rm := startMirror(t, kafkatest.Topic(t, "m"), source, target, []string{prefix + ".*"}, func(c *Config) {
		c.TopicSyncInterval, c.TopicPollInterval = time.Hour, time.Hour
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	waitFor(ctx, t, "the mirror is ready", func() bool { return rm.Status().Ready })
	topic := prefix + "-repartition"
	source.CreateTopic(t, topic, 2)
	produceRecords(t, source, topic, 0, 20)
	source.Fake.ApplyRetention() // what a Kafka broker does every log.retention.check.interval.ms
	if err := rm.RefreshTopics(ctx); err != nil {
		t.Fatal(err)
	}
	rm.waitCaughtUp(t, source, topic)
	got := readAll(t, target, topic)
	if n := len(got[0]) + len(got[1]); n != 20 {
		t.Errorf("target holds %d records, want 20 (mirror %+v)", n, rm.Status().Partitions)
	}
}
