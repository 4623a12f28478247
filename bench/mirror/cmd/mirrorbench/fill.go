package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

const keyBytes = 16

// FillResult is what fill writes.
type FillResult struct {
	Topic       string          `json:"topic"`
	Partitions  int             `json:"partitions"`
	Replication int             `json:"replication"`
	Records     int64           `json:"records"`
	ValueBytes  int64           `json:"value_bytes"`
	KeyBytes    int64           `json:"key_bytes"`
	RecordBytes int             `json:"record_bytes"`
	Compression string          `json:"compression"`
	BatchBytes  int             `json:"batch_bytes"`
	LingerMs    float64         `json:"linger_ms"`
	Seed        uint64          `json:"seed"`
	Seconds     float64         `json:"seconds"`
	MBps        float64         `json:"mb_per_s"`
	EndOffsets  map[int32]int64 `json:"end_offsets"`
	Group       string          `json:"group,omitempty"`
}

func codec(name string) (kgo.CompressionCodec, error) {
	switch name {
	case "none", "":
		return kgo.NoCompression(), nil
	case "gzip":
		return kgo.GzipCompression(), nil
	case "snappy":
		return kgo.SnappyCompression(), nil
	case "lz4":
		return kgo.Lz4Compression(), nil
	case "zstd":
		return kgo.ZstdCompression(), nil
	}
	return kgo.NoCompression(), usageError{fmt.Errorf("compression %q: want none, gzip, snappy, lz4 or zstd", name)}
}

func runFill(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("fill", flag.ContinueOnError)
	source := fs.String("source", "", "source bootstrap `host:port,...`")
	topic := fs.String("topic", "", "topic to create and fill (must not exist)")
	partitions := fs.Int("partitions", 8, "partitions")
	replication := fs.Int("replication", 1, "replication factor")
	mib := fs.Int("mib", 512, "MiB (2^20 bytes) of record values to write")
	recordBytes := fs.Int("record", 1024, "bytes per record value")
	compression := fs.String("compression", "lz4", "producer codec: none, gzip, snappy, lz4, zstd")
	batchBytes := fs.Int("batch-bytes", 16384, "producer batch size cap, before compression (franz-go ProducerBatchMaxBytes)")
	linger := fs.Duration("linger", 5*time.Millisecond, "producer linger")
	seed := fs.Uint64("seed", 1, "payload generator seed")
	group := fs.String("group", "", "consumer group to commit offsets for at half of every partition (none if empty)")
	out := fs.String("json", "-", "write the result here")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if *topic == "" || *mib <= 0 || *recordBytes < 64 || *partitions <= 0 || *batchBytes < 512 {
		return usageError{errors.New("want -topic, -mib > 0, -record >= 64, -partitions > 0, -batch-bytes >= 512")}
	}
	cc, err := codec(*compression)
	if err != nil {
		return err
	}
	n := int64(*mib) << 20 / int64(*recordBytes)

	cl, adm, err := newAdmin(*source,
		kgo.ProducerBatchCompression(cc),
		kgo.ProducerBatchMaxBytes(int32(*batchBytes)),
		kgo.ProducerLinger(*linger),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.MaxBufferedRecords(20000),
		kgo.DefaultProduceTopic(*topic),
	)
	if err != nil {
		return err
	}
	defer cl.Close()
	if _, exists, err := endOffsets(ctx, adm.ListEndOffsets, *topic); err != nil {
		return err
	} else if exists {
		return fmt.Errorf("topic %s exists already: fill wants a fresh topic", *topic)
	}
	cr, err := adm.CreateTopic(ctx, int32(*partitions), int16(*replication), nil, *topic)
	if err == nil {
		err = cr.Err
	}
	if err != nil {
		return fmt.Errorf("create %s: %w", *topic, err)
	}
	// Metadata of a new topic takes a moment to reach every broker.
	for i := 0; ; i++ {
		offs, exists, err := endOffsets(ctx, adm.ListEndOffsets, *topic)
		if err == nil && exists && len(offs) == *partitions {
			break
		}
		if i == 100 || ctx.Err() != nil {
			return fmt.Errorf("topic %s not ready after creation: %v", *topic, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	gen := newPayloads(*seed, *recordBytes)
	var (
		wg      sync.WaitGroup
		errOnce sync.Once
		perr    error
		failed  atomic.Bool
	)
	start := time.Now()
	for i := int64(0); i < n && !failed.Load(); i++ {
		key, val := gen.next()
		wg.Add(1)
		cl.Produce(ctx, &kgo.Record{Key: key, Value: val}, func(_ *kgo.Record, err error) {
			defer wg.Done()
			if err != nil {
				errOnce.Do(func() { perr = err })
				failed.Store(true)
			}
		})
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	if perr != nil {
		return fmt.Errorf("produce to %s: %w", *topic, perr)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	end, _, err := endOffsets(ctx, adm.ListEndOffsets, *topic)
	if err != nil {
		return err
	}
	var total int64
	for _, o := range end {
		total += o
	}
	if total != n {
		return fmt.Errorf("%s holds %d records after producing %d", *topic, total, n)
	}
	if *group != "" {
		offs := kadm.Offsets{}
		for p, o := range end {
			offs.AddOffset(*topic, p, o/2, -1)
		}
		resp, err := adm.CommitOffsets(ctx, *group, offs)
		if err == nil {
			err = resp.Error()
		}
		if err != nil {
			return fmt.Errorf("commit offsets for group %s: %w", *group, err)
		}
	}
	valueBytes := n * int64(*recordBytes)
	return writeJSON(*out, FillResult{
		Topic: *topic, Partitions: *partitions, Replication: *replication,
		Records: n, ValueBytes: valueBytes, KeyBytes: n * keyBytes, RecordBytes: *recordBytes,
		Compression: *compression, BatchBytes: *batchBytes, LingerMs: float64(*linger) / float64(time.Millisecond),
		Seed: *seed, Seconds: secs, MBps: float64(valueBytes) / 1e6 / secs, EndOffsets: end, Group: *group,
	})
}

// payloads makes record keys and values: JSON-like events with random ids
// and numbers (which do not compress) and fields, enumerations and words of
// a small vocabulary (which repeat across the records of a batch, so lz4
// finds matches). Deterministic for a seed.
type payloads struct {
	r     *rand.Rand
	size  int
	vocab []string
	buf   []byte
}

var (
	eventTypes = []string{"page_view", "add_to_cart", "checkout", "search", "login", "logout", "purchase", "refund"}
	agents     = []string{
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
		"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
		"Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
		"Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile Safari/537.36",
		"okhttp/4.12.0",
		"python-requests/2.32.3",
		"Go-http-client/2.0",
	}
	countries = []string{"DE", "FR", "US", "GB", "NL", "SE", "PL", "ES", "IT", "JP", "BR", "IN"}
)

func newPayloads(seed uint64, size int) *payloads {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	// 512 words: lz4 compresses a 16 KiB batch of these values about 1.8×,
	// a 64 KiB one 2.2× (4096 words: 1.3× and 1.6×).
	vocab := make([]string, 512)
	const letters = "abcdefghijklmnopqrstuvwxyz"
	for i := range vocab {
		w := make([]byte, 3+r.IntN(8))
		for j := range w {
			w[j] = letters[r.IntN(len(letters))]
		}
		vocab[i] = string(w)
	}
	return &payloads{r: r, size: size, vocab: vocab, buf: make([]byte, 0, size+64)}
}

const hexDigits = "0123456789abcdef"

func appendHex(b []byte, v uint64, n int) []byte {
	for i := n - 1; i >= 0; i-- {
		b = append(b, hexDigits[(v>>(4*uint(i)))&0xf])
	}
	return b
}

func (g *payloads) next() (key, value []byte) {
	r := g.r
	key = appendHex(make([]byte, 0, keyBytes), r.Uint64(), keyBytes)
	b := g.buf[:0]
	b = append(b, `{"event_id":"`...)
	b = appendHex(b, r.Uint64(), 16)
	b = appendHex(b, r.Uint64(), 16)
	b = append(b, `","ts":`...)
	b = strconv.AppendInt(b, 1_700_000_000_000+r.Int64N(100_000_000_000), 10)
	b = append(b, `,"type":"`...)
	b = append(b, eventTypes[r.IntN(len(eventTypes))]...)
	b = append(b, `","user_id":"user-`...)
	b = strconv.AppendInt(b, r.Int64N(10_000_000), 10)
	b = append(b, `","session":"`...)
	b = appendHex(b, r.Uint64(), 16)
	b = append(b, `","country":"`...)
	b = append(b, countries[r.IntN(len(countries))]...)
	b = append(b, `","user_agent":"`...)
	b = append(b, agents[r.IntN(len(agents))]...)
	b = append(b, `","path":"/`...)
	for i := 0; i < 3; i++ {
		if i > 0 {
			b = append(b, '/')
		}
		b = append(b, g.vocab[r.IntN(len(g.vocab))]...)
	}
	b = append(b, `","amount_cents":`...)
	b = strconv.AppendInt(b, r.Int64N(1_000_000), 10)
	b = append(b, `,"items":[`...)
	for i, k := 0, 1+r.IntN(4); i < k; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"sku":"SKU-`...)
		b = strconv.AppendInt(b, r.Int64N(100_000), 10)
		b = append(b, `","qty":`...)
		b = strconv.AppendInt(b, 1+r.Int64N(5), 10)
		b = append(b, '}')
	}
	b = append(b, `],"text":"`...)
	for len(b) < g.size-2 {
		b = append(b, g.vocab[r.IntN(len(g.vocab))]...)
		b = append(b, ' ')
	}
	b = append(b[:g.size-2], `"}`...)
	g.buf = b
	return key, append([]byte(nil), b...)
}
