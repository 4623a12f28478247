package mirror

// The checkpoint topic, __switchyard_mirror_<name> on the target: one
// partition, compacted. Every target transaction that copies records also
// writes, for each partition it touched, one delta record:
//
//	key   "d" | uint16 len | source topic | int32 partition | int64 first source offset
//	value offsetmap.Map (MarshalBinary) starting at the first source offset,
//	      holding this transaction's ranges, the offsets it recorded as lost
//	      (a gap the mirror went on after: value version 2) and the
//	      partition's Next/TargetNext after it
//
// Keys are unique per transaction and partition, so compaction keeps every
// delta; merged in key order they give each partition's whole map. (The one
// exception, a delta that only records where a partition begins, with its
// Next equal to its first offset, shares its key with the partition's next
// delta, which says as much and more.) A partition with no delta has not
// begun: the mirror begins it wherever the source's log begins. A mirror
// starting up first initializes its transactional producer — which fences a
// previous instance and settles the transaction it left open — and then
// restores by reading the topic up to its end: everything committed is
// visible, in order.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/switchyard/switchyard/mirror/offsetmap"
)

// tp names a source topic partition.
type tp struct {
	topic     string
	partition int32
}

func (t tp) String() string { return fmt.Sprintf("%s/%d", t.topic, t.partition) }

func deltaKey(t tp, firstSrc int64) []byte {
	k := make([]byte, 0, 1+2+len(t.topic)+4+8)
	k = append(k, 'd')
	k = binary.BigEndian.AppendUint16(k, uint16(len(t.topic)))
	k = append(k, t.topic...)
	k = binary.BigEndian.AppendUint32(k, uint32(t.partition))
	return binary.BigEndian.AppendUint64(k, uint64(firstSrc))
}

func parseDeltaKey(k []byte) (tp, int64, error) {
	if len(k) < 3 || k[0] != 'd' {
		return tp{}, 0, errors.New("not a delta key")
	}
	n := int(binary.BigEndian.Uint16(k[1:3]))
	if len(k) != 3+n+12 {
		return tp{}, 0, fmt.Errorf("delta key of %d bytes for a %d-byte topic", len(k), n)
	}
	t := tp{topic: string(k[3 : 3+n]), partition: int32(binary.BigEndian.Uint32(k[3+n:]))}
	return t, int64(binary.BigEndian.Uint64(k[3+n+4:])), nil
}

// ensureCheckpointTopic creates the checkpoint topic if it is missing.
func ensureCheckpointTopic(ctx context.Context, adm *kadm.Client, topic string) error {
	cfg := map[string]*string{"cleanup.policy": kadm.StringPtr("compact")}
	resp, err := adm.CreateTopic(ctx, 1, -1, cfg, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("create checkpoint topic %s on the target: %w", topic, err)
	}
	return nil
}

// TopicPartition names a source topic partition.
type TopicPartition struct {
	Topic     string
	Partition int32
}

// ReadOffsetMaps reads the offset maps a mirror named name has committed
// on the target, for tools (verify) and a control plane that does not run
// the mirror itself. It reads up to the checkpoint topic's last stable
// offset as of the call.
func ReadOffsetMaps(ctx context.Context, targetBootstrap []string, name string, opts ...kgo.Opt) (map[TopicPartition]*offsetmap.Map, error) {
	topic := (&Config{Name: name}).checkpointTopic()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(targetBootstrap...), kgo.MaxVersions(clientVersions())}, opts...)...)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListCommittedOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("end of checkpoint topic %s: %w", topic, err)
	}
	end, ok := ends.Lookup(topic, 0)
	if !ok || end.Err != nil {
		return nil, fmt.Errorf("checkpoint topic %s not found on the target (is the mirror name right?)", topic)
	}
	maps, err := readCheckpoints(ctx, cl, topic, end.Offset)
	if err != nil {
		return nil, err
	}
	out := make(map[TopicPartition]*offsetmap.Map, len(maps))
	for k, m := range maps {
		out[TopicPartition{k.topic, k.partition}] = m
	}
	return out, nil
}

// restoreCheckpoints reads the whole checkpoint topic — up to its high
// watermark, which is stable once the mirror's producer is initialized —
// and returns each partition's offset map. cl must cap Fetch at v12.
func restoreCheckpoints(ctx context.Context, cl *kgo.Client, topic string) (map[tp]*offsetmap.Map, error) {
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("end of checkpoint topic %s: %w", topic, err)
	}
	end, ok := ends.Lookup(topic, 0)
	if !ok || end.Err != nil {
		return nil, fmt.Errorf("end of checkpoint topic %s: %v", topic, end.Err)
	}
	return readCheckpoints(ctx, cl, topic, end.Offset)
}

// readCheckpoints reads the committed records of the checkpoint topic
// below offset until, merging the deltas. It fetches raw, so it knows its
// position exactly: past transaction markers, aborted records and records
// compaction removed.
func readCheckpoints(ctx context.Context, cl *kgo.Client, topic string, until int64) (map[tp]*offsetmap.Map, error) {
	type delta struct {
		first int64
		m     *offsetmap.Map
	}
	deltas := map[tp][]delta{}
	leaders := &leaderCache{cl: cl}
	dec := kgo.DefaultDecompressor()
	for pos := int64(0); pos < until; {
		ls, err := leaders.leaders(ctx, []string{topic})
		if err != nil {
			return nil, fmt.Errorf("read checkpoint topic %s: %w", topic, err)
		}
		leader, ok := ls[topicPart{topic, 0}]
		if !ok {
			leaders.invalidate()
			if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
				return nil, fmt.Errorf("read checkpoint topic %s: no leader: %w", topic, err)
			}
			continue
		}
		req := kmsg.NewPtrFetchRequest()
		req.ReplicaID, req.MaxWaitMillis, req.MinBytes, req.MaxBytes = -1, 100, 1, 16<<20
		req.IsolationLevel, req.SessionEpoch = 1, -1
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic = topic
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.CurrentLeaderEpoch, rp.FetchOffset, rp.LogStartOffset, rp.PartitionMaxBytes = -1, pos, -1, 16<<20
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, cl.Broker(int(leader)))
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("read checkpoint topic %s: %w", topic, ctx.Err())
			}
			leaders.invalidate()
			continue
		}
		if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
			return nil, fmt.Errorf("read checkpoint topic %s: unexpected fetch response shape", topic)
		}
		part := &resp.Topics[0].Partitions[0]
		if e := kerr.ErrorForCode(part.ErrorCode); e != nil {
			if errors.Is(e, kerr.OffsetOutOfRange) && part.LogStartOffset > pos {
				pos = part.LogStartOffset // deltas deleted (the topic is compacted: only by TrimBefore)
				continue
			}
			if isLeaderError(e) {
				leaders.invalidate()
				continue
			}
			return nil, fmt.Errorf("read checkpoint topic %s at offset %d: %w", topic, pos, e)
		}
		fp, next := kgo.ProcessFetchPartition(kgo.ProcessFetchPartitionOpts{
			KeepControlRecords: true, Offset: pos, IsolationLevel: kgo.ReadCommitted(), Topic: topic,
		}, part, dec, nil)
		if fp.Err != nil {
			return nil, fmt.Errorf("read checkpoint topic %s at offset %d: %w", topic, pos, fp.Err)
		}
		for _, r := range fp.Records {
			if r.Offset >= until || r.Attrs.IsControl() || r.Value == nil {
				// Beyond the end asked for; a transaction marker; a delta
				// removed by TrimBefore.
				continue
			}
			t, first, err := parseDeltaKey(r.Key)
			if err != nil {
				continue // not a delta (e.g. a start marker of an older version)
			}
			m := offsetmap.New()
			if err := m.UnmarshalBinary(r.Value); err != nil {
				return nil, fmt.Errorf("checkpoint record at offset %d (%s): %w", r.Offset, t, err)
			}
			deltas[t] = append(deltas[t], delta{first, m})
		}
		switch {
		case next > pos:
			pos = next
		case part.LastStableOffset >= until || part.HighWatermark <= pos:
			// Nothing at or after pos below until: compacted away, or the
			// end was reached.
			pos = until
		default:
			// An open transaction holds the last stable offset below
			// until: wait for it to end.
			if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
				return nil, fmt.Errorf("read checkpoint topic %s: waiting at offset %d for a transaction to end: %w", topic, pos, err)
			}
		}
	}
	out := make(map[tp]*offsetmap.Map, len(deltas))
	for t, ds := range deltas {
		// A delta can appear twice if compaction has not yet removed an
		// older copy of the same key; keep the last of each key.
		sort.SliceStable(ds, func(i, j int) bool { return ds[i].first < ds[j].first })
		m := offsetmap.New()
		for i, d := range ds {
			if i+1 < len(ds) && ds[i+1].first == d.first {
				continue
			}
			if err := mergeDelta(m, d.m); err != nil {
				return nil, fmt.Errorf("restore %s: %w", t, err)
			}
		}
		out[t] = m
	}
	return out, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// mergeDelta appends a transaction's delta to a partition's map: its
// copied ranges and lost ranges in source order, then its Next.
func mergeDelta(m, d *offsetmap.Map) error {
	return m.Merge(d)
}
