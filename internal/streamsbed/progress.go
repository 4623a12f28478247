package streamsbed

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// markerSlack is how far a committed offset may be below a partition's end
// and still be the end of its data: the transaction markers written after
// the last records (one per transaction) take offsets no consumer commits
// past until it fetches again. A shorter distance is read to tell.
const markerSlack = 16

// Unprocessed tells how far group is from having processed and committed
// all of topics on the cluster at bootstrap: the offsets between each
// partition's committed offset (its log start without one) and its end,
// summed, not counting offsets that hold no record a read_committed
// consumer would get (markers, aborted records). Zero means done; detail
// names the partitions behind. A transaction still open on a topic counts
// as not done.
func Unprocessed(ctx context.Context, bootstrap []string, group string, topics ...string) (behind int64, detail string, err error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap...))
	if err != nil {
		return 0, "", fmt.Errorf("client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	committed, err := adm.FetchOffsets(ctx, group)
	if err == nil {
		err = committed.Error()
	}
	if err != nil {
		return 0, "", fmt.Errorf("offsets of group %s: %w", group, err)
	}
	starts, err := adm.ListStartOffsets(ctx, topics...)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return 0, "", fmt.Errorf("start offsets of %v: %w", topics, err)
	}
	ends, err := adm.ListEndOffsets(ctx, topics...)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return 0, "", fmt.Errorf("end offsets of %v: %w", topics, err)
	}
	stable, err := adm.ListCommittedOffsets(ctx, topics...)
	if err == nil {
		err = stable.Error()
	}
	if err != nil {
		return 0, "", fmt.Errorf("last stable offsets of %v: %w", topics, err)
	}
	var behindParts []string
	var firstErr error
	ends.Each(func(e kadm.ListedOffset) {
		if firstErr != nil {
			return
		}
		from := int64(0)
		if s, ok := starts.Lookup(e.Topic, e.Partition); ok {
			from = s.Offset
		}
		if c, ok := committed.Lookup(e.Topic, e.Partition); ok && c.At > from {
			from = c.At
		}
		if lso, ok := stable.Lookup(e.Topic, e.Partition); ok && lso.Offset < e.Offset {
			behind += e.Offset - from
			behindParts = append(behindParts, fmt.Sprintf("%s/%d at %d of %d (a transaction open from %d)", e.Topic, e.Partition, from, e.Offset, lso.Offset))
			return
		}
		n := e.Offset - from
		if n <= 0 {
			return
		}
		if n <= markerSlack {
			data, err := countRecords(ctx, bootstrap, e.Topic, e.Partition, from, e.Offset)
			if err != nil {
				firstErr = err
				return
			}
			if data == 0 {
				return
			}
		}
		behind += n
		behindParts = append(behindParts, fmt.Sprintf("%s/%d at %d of %d", e.Topic, e.Partition, from, e.Offset))
	})
	if firstErr != nil {
		return 0, "", firstErr
	}
	sort.Strings(behindParts)
	return behind, strings.Join(behindParts, ", "), nil
}

// countRecords reads [from, end) of one partition read_committed and counts
// the records a consumer gets (not control records).
func countRecords(ctx context.Context, bootstrap []string, topic string, partition int32, from, end int64) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {partition: kgo.NewOffset().At(from)}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())
	if err != nil {
		return 0, fmt.Errorf("client: %w", err)
	}
	defer cl.Close()
	n, next := 0, from
	for next < end {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return 0, fmt.Errorf("read %s/%d from %d to %d: %w", topic, partition, from, end, err)
		}
		for _, fe := range fs.Errors() {
			return 0, fmt.Errorf("read %s/%d from %d: %w", topic, partition, from, fe.Err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			next = r.Offset + 1
			if !r.Attrs.IsControl() && r.Offset < end {
				n++
			}
		})
	}
	return n, nil
}
