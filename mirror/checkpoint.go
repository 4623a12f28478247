package mirror

// The checkpoint topic, __switchyard_mirror_<name> on the target: one
// partition, compacted. Every target transaction that copies records also
// writes, for each partition it touched, one delta record:
//
//	key   "d" | uint16 len | source topic | int32 partition | int64 first source offset
//	value offsetmap.Map (MarshalBinary) holding this transaction's ranges
//	      and the partition's Next/TargetNext after it
//
// Keys are unique per transaction and partition, so compaction keeps every
// delta; merged in key order they give each partition's whole map. A mirror
// starting up writes a start marker (key "s", value: a random token) in a
// transaction of its own — which also fences a previous instance — and
// restores by reading until it sees its own marker: everything committed
// before it is visible, in order.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

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

var startKey = []byte("s")

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

// writeStartMarker commits a start marker with a fresh token through the
// transactional producer and returns the token.
func writeStartMarker(ctx context.Context, prod *kgo.Client, topic string) ([]byte, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	token := []byte(hex.EncodeToString(b[:]))
	if err := prod.BeginTransaction(); err != nil {
		return nil, fmt.Errorf("begin start-marker transaction: %w", err)
	}
	rec := &kgo.Record{Topic: topic, Partition: 0, Key: startKey, Value: token}
	if err := prod.ProduceSync(ctx, rec).FirstErr(); err != nil {
		_ = prod.EndTransaction(ctx, kgo.TryAbort)
		return nil, fmt.Errorf("write start marker: %w", err)
	}
	if err := prod.EndTransaction(ctx, kgo.TryCommit); err != nil {
		return nil, fmt.Errorf("commit start marker: %w", err)
	}
	return token, nil
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
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(targetBootstrap...)}, opts...)...)
	if err != nil {
		return nil, err
	}
	ends, err := kadm.NewClient(cl).ListCommittedOffsets(ctx, topic)
	cl.Close()
	if err != nil {
		return nil, fmt.Errorf("end of checkpoint topic %s: %w", topic, err)
	}
	end, ok := ends.Lookup(topic, 0)
	if !ok || end.Err != nil {
		return nil, fmt.Errorf("checkpoint topic %s not found on the target (is the mirror name right?)", topic)
	}
	maps, err := readCheckpoints(ctx, targetBootstrap, topic, func(r *kgo.Record) bool { return r.Offset+2 >= end.Offset }, end.Offset == 0, opts...)
	if err != nil {
		return nil, err
	}
	out := make(map[TopicPartition]*offsetmap.Map, len(maps))
	for k, m := range maps {
		out[TopicPartition{k.topic, k.partition}] = m
	}
	return out, nil
}

// restoreCheckpoints reads the checkpoint topic up to the start marker
// with the given token and returns each partition's offset map.
func restoreCheckpoints(ctx context.Context, bootstrap []string, topic string, token []byte, opts ...kgo.Opt) (map[tp]*offsetmap.Map, error) {
	return readCheckpoints(ctx, bootstrap, topic, func(r *kgo.Record) bool {
		return bytes.Equal(r.Key, startKey) && bytes.Equal(r.Value, token)
	}, false, opts...)
}

// readCheckpoints reads the checkpoint topic from the start until last
// reports the final record (or at once when empty), merging the deltas.
func readCheckpoints(ctx context.Context, bootstrap []string, topic string, last func(*kgo.Record) bool, empty bool, opts ...kgo.Opt) (map[tp]*offsetmap.Map, error) {
	if empty {
		return map[tp]*offsetmap.Map{}, nil
	}
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(bootstrap...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("checkpoint reader: %w", err)
	}
	defer cl.Close()
	type delta struct {
		first int64
		m     *offsetmap.Map
	}
	deltas := map[tp][]delta{}
	found := false
	for !found {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("read checkpoint topic %s: end not reached: %w", topic, err)
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = err })
		if ferr != nil {
			return nil, fmt.Errorf("read checkpoint topic %s: %w", topic, ferr)
		}
		var derr error
		fs.EachRecord(func(r *kgo.Record) {
			switch {
			case derr != nil || found:
			case bytes.Equal(r.Key, startKey):
				found = last(r)
			case r.Value == nil: // a delta removed by TrimBefore
				found = last(r)
			default:
				found = last(r)
				t, first, err := parseDeltaKey(r.Key)
				if err != nil {
					derr = fmt.Errorf("checkpoint record at offset %d: %w", r.Offset, err)
					return
				}
				m := offsetmap.New()
				if err := m.UnmarshalBinary(r.Value); err != nil {
					derr = fmt.Errorf("checkpoint record at offset %d (%s): %w", r.Offset, t, err)
					return
				}
				deltas[t] = append(deltas[t], delta{first, m})
			}
		})
		if derr != nil {
			return nil, derr
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

// mergeDelta appends a transaction's delta to a partition's map.
func mergeDelta(m, d *offsetmap.Map) error {
	for _, r := range d.Ranges() {
		if err := m.AppendRange(r); err != nil {
			return err
		}
	}
	if d.Next() > m.Next() {
		return m.Advance(d.Next())
	}
	return nil
}
