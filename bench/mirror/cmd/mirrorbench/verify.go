package main

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"hash"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// PartitionRead is one partition of one topic as read to its end.
type PartitionRead struct {
	Records        int64  `json:"records"`
	ControlRecords int64  `json:"control_records"`
	FirstOffset    int64  `json:"first_offset"`
	EndOffset      int64  `json:"end_offset"`
	KV             string `json:"kv_sha256"`   // keys and values in order
	Full           string `json:"full_sha256"` // plus headers and timestamps
}

// TopicRead is one topic as read to its end.
type TopicRead struct {
	Cluster           string                   `json:"cluster"`
	Topic             string                   `json:"topic"`
	Records           int64                    `json:"records"`
	ValueBytes        int64                    `json:"value_bytes"`
	KeyBytes          int64                    `json:"key_bytes"`
	HeaderRecords     int64                    `json:"records_with_headers"`
	Batches           int64                    `json:"batches"`
	BatchRecords      int64                    `json:"batch_records"` // incl. control records
	CompressedBytes   int64                    `json:"compressed_bytes"`
	UncompressedBytes int64                    `json:"uncompressed_bytes"`
	Codecs            map[string]int64         `json:"codecs"` // batches per codec
	Seconds           float64                  `json:"seconds"`
	Partitions        map[int32]*PartitionRead `json:"partitions"`
}

// CopyCheck compares one copy with the source.
type CopyCheck struct {
	Name      string   `json:"name"`
	Topic     string   `json:"topic"`
	CountsOK  bool     `json:"counts_ok"`
	ContentOK bool     `json:"content_ok"` // keys and values, in order, per partition
	HeadersTS bool     `json:"headers_and_timestamps_ok"`
	Problems  []string `json:"problems,omitempty"`
}

// VerifyResult is what verify writes.
type VerifyResult struct {
	Source TopicRead            `json:"source"`
	Copies map[string]TopicRead `json:"copies"`
	Checks []CopyCheck          `json:"checks"`
	OK     bool                 `json:"ok"`
}

var codecNames = map[uint8]string{0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}

type batchHook struct {
	mu                      sync.Mutex
	batches, recs, cmp, unc int64
	codecs                  map[string]int64
}

func (h *batchHook) OnFetchBatchRead(_ kgo.BrokerMetadata, _ string, _ int32, m kgo.FetchBatchMetrics) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.batches++
	h.recs += int64(m.NumRecords)
	h.cmp += int64(m.CompressedBytes)
	h.unc += int64(m.UncompressedBytes)
	h.codecs[codecNames[m.CompressionType]]++
}

func runVerify(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	source := fs.String("source", "", "source bootstrap `host:port,...`")
	target := fs.String("target", "", "target bootstrap `host:port,...`")
	topic := fs.String("topic", "", "source topic")
	copies := fs.String("copies", "", "the copies on the target, `name=topic,...`")
	timeout := fs.Duration("timeout", 10*time.Minute, "time allowed to read one topic")
	out := fs.String("json", "-", "write the result here")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if *topic == "" {
		return usageError{errors.New("want -topic")}
	}
	res := VerifyResult{Copies: map[string]TopicRead{}, OK: true}
	var err error
	if res.Source, err = readTopic(ctx, "source", *source, *topic, *timeout); err != nil {
		return err
	}
	for _, c := range list(*copies) {
		name, tt, ok := strings.Cut(c, "=")
		if !ok {
			return usageError{fmt.Errorf("-copies: %q: want name=topic", c)}
		}
		tr, err := readTopic(ctx, "target", *target, tt, *timeout)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		res.Copies[name] = tr
		chk := compare(name, &res.Source, &tr)
		res.OK = res.OK && chk.CountsOK && chk.ContentOK
		res.Checks = append(res.Checks, chk)
	}
	if err := writeJSON(*out, res); err != nil {
		return err
	}
	for _, c := range res.Checks {
		status := "OK"
		if !c.CountsOK || !c.ContentOK {
			status = "MISMATCH"
		}
		fmt.Fprintf(os.Stderr, "verify %s (%s): %s; %d records (source %d); headers and timestamps equal: %v\n",
			c.Name, c.Topic, status, res.Copies[c.Name].Records, res.Source.Records, c.HeadersTS)
		for _, p := range c.Problems {
			fmt.Fprintf(os.Stderr, "  %s\n", p)
		}
	}
	if !res.OK {
		return errors.New("a copy differs from the source")
	}
	return nil
}

func compare(name string, src, cp *TopicRead) CopyCheck {
	c := CopyCheck{Name: name, Topic: cp.Topic, CountsOK: true, ContentOK: true, HeadersTS: true}
	if len(cp.Partitions) != len(src.Partitions) {
		c.CountsOK = false
		c.Problems = append(c.Problems, fmt.Sprintf("%d partitions, source %d", len(cp.Partitions), len(src.Partitions)))
	}
	for p, s := range src.Partitions {
		t := cp.Partitions[p]
		if t == nil {
			c.CountsOK, c.ContentOK = false, false
			c.Problems = append(c.Problems, fmt.Sprintf("partition %d missing", p))
			continue
		}
		if t.Records != s.Records {
			c.CountsOK = false
			c.Problems = append(c.Problems, fmt.Sprintf("partition %d: %d records, source %d", p, t.Records, s.Records))
		}
		if t.KV != s.KV {
			c.ContentOK = false
			c.Problems = append(c.Problems, fmt.Sprintf("partition %d: keys/values differ", p))
		}
		if t.Full != s.Full {
			c.HeadersTS = false
		}
	}
	return c
}

// partDigest hashes one partition's records in offset order.
type partDigest struct {
	kv, full hash.Hash
	pr       *PartitionRead
}

func field(h hash.Hash, b []byte, null bool) {
	var n [9]byte
	if null {
		n[0] = 1
	}
	binary.BigEndian.PutUint64(n[1:], uint64(len(b)))
	h.Write(n[:])
	h.Write(b)
}

// readTopic reads every partition of a topic from its start to the last
// stable offset listed when it starts (read_committed).
func readTopic(ctx context.Context, cluster, bootstrap, topic string, timeout time.Duration) (TopicRead, error) {
	tr := TopicRead{Cluster: cluster, Topic: topic, Codecs: map[string]int64{}, Partitions: map[int32]*PartitionRead{}}
	cl, adm, err := newAdmin(bootstrap)
	if err != nil {
		return tr, err
	}
	start, _, err := endOffsets(ctx, adm.ListStartOffsets, topic)
	if err != nil {
		cl.Close()
		return tr, err
	}
	end, exists, err := endOffsets(ctx, adm.ListCommittedOffsets, topic)
	cl.Close()
	if err != nil {
		return tr, err
	}
	if !exists {
		return tr, fmt.Errorf("%s topic %s does not exist", cluster, topic)
	}
	hook := &batchHook{codecs: map[string]int64{}}
	consume := map[int32]kgo.Offset{}
	digests := map[int32]*partDigest{}
	left := 0
	for _, p := range sortedParts(end) {
		pr := &PartitionRead{FirstOffset: start[p], EndOffset: end[p]}
		tr.Partitions[p] = pr
		digests[p] = &partDigest{kv: sha256.New(), full: sha256.New(), pr: pr}
		if end[p] > start[p] {
			consume[p] = kgo.NewOffset().At(start[p])
			left++
		}
	}
	t0 := time.Now()
	if left > 0 {
		rc, err := kgo.NewClient(kgo.SeedBrokers(list(bootstrap)...),
			kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: consume}),
			kgo.FetchIsolationLevel(kgo.ReadCommitted()),
			kgo.KeepControlRecords(),
			kgo.FetchMaxBytes(64<<20),
			kgo.FetchMaxPartitionBytes(8<<20),
			kgo.WithHooks(hook),
		)
		if err != nil {
			return tr, err
		}
		defer rc.Close()
		rctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		next := map[int32]int64{}
		for left > 0 {
			fetches := rc.PollFetches(rctx)
			if rctx.Err() != nil {
				return tr, fmt.Errorf("reading %s %s: %d partitions not read to the end within %v", cluster, topic, left, timeout)
			}
			var ferr error
			fetches.EachError(func(t string, p int32, err error) { ferr = fmt.Errorf("fetch %s/%d: %w", t, p, err) })
			if ferr != nil {
				return tr, ferr
			}
			fetches.EachRecord(func(r *kgo.Record) {
				d := digests[r.Partition]
				if r.Offset >= d.pr.EndOffset {
					return
				}
				if n, ok := next[r.Partition]; !ok || r.Offset >= n {
					next[r.Partition] = r.Offset + 1
					if r.Offset+1 >= d.pr.EndOffset {
						left--
					}
				}
				if r.Attrs.IsControl() {
					d.pr.ControlRecords++
					return
				}
				d.pr.Records++
				tr.Records++
				tr.ValueBytes += int64(len(r.Value))
				tr.KeyBytes += int64(len(r.Key))
				field(d.kv, r.Key, r.Key == nil)
				field(d.kv, r.Value, r.Value == nil)
				field(d.full, r.Key, r.Key == nil)
				field(d.full, r.Value, r.Value == nil)
				var ts [8]byte
				binary.BigEndian.PutUint64(ts[:], uint64(r.Timestamp.UnixMilli()))
				d.full.Write(ts[:])
				if len(r.Headers) > 0 {
					tr.HeaderRecords++
				}
				for _, h := range r.Headers {
					field(d.full, []byte(h.Key), false)
					field(d.full, h.Value, h.Value == nil)
				}
			})
		}
	}
	tr.Seconds = time.Since(t0).Seconds()
	for _, d := range digests {
		d.pr.KV = hex.EncodeToString(d.kv.Sum(nil))
		d.pr.Full = hex.EncodeToString(d.full.Sum(nil))
	}
	hook.mu.Lock()
	tr.Batches, tr.BatchRecords, tr.CompressedBytes, tr.UncompressedBytes = hook.batches, hook.recs, hook.cmp, hook.unc
	for k, v := range hook.codecs {
		tr.Codecs[k] = v
	}
	hook.mu.Unlock()
	return tr, nil
}
