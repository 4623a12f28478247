// Command proxybench is a Kafka load program for measuring a proxy: it
// produces a volume of fixed-size records to a topic, consumes them all
// back, and measures the latency of single synchronous produces. It prints
// one JSON object with the results of the phases it ran.
//
//	proxybench -bootstrap 127.0.0.1:9092 -topic t -phases create,produce,consume,latency,delete -mb 512
//
// Phases run in the order given:
//
//	create   create the topic (-partitions, -replication)
//	produce  produce -mb MiB of -record-bytes records (acks=all, idempotent,
//	         no compression, incompressible values, franz-go's default 10 ms
//	         linger and 1 MB batches) and wait for every ack
//	consume  read every partition of the topic from its start offset to the
//	         end offset listed when the phase starts
//	latency  -latency-samples ProduceSync calls of one record each, after
//	         -latency-warmup unmeasured ones; p50/p99 of the round trip
//	delete   delete the topic
//
// The driver (bench/cmd/benchproxy) runs the phases as separate invocations
// so it can read the proxy's CPU time between them. MB means 10^6 bytes;
// bytes are record value bytes (the payload), not wire bytes.
package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

type options struct {
	bootstrap      []string
	topic          string
	phases         []string
	mib            int
	recordBytes    int
	partitions     int
	replication    int
	latencySamples int
	latencyWarmup  int
	timeout        time.Duration
}

// Throughput is the result of the produce or consume phase.
type Throughput struct {
	Records int64   `json:"records"`
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
	MBps    float64 `json:"mb_per_s"`
}

// Latency is the result of the latency phase, in milliseconds.
type Latency struct {
	Samples int     `json:"samples"`
	P50     float64 `json:"p50_ms"`
	P90     float64 `json:"p90_ms"`
	P99     float64 `json:"p99_ms"`
	Max     float64 `json:"max_ms"`
	Mean    float64 `json:"mean_ms"`
}

// Result is what proxybench prints.
type Result struct {
	Bootstrap   string      `json:"bootstrap"`
	Topic       string      `json:"topic"`
	RecordBytes int         `json:"record_bytes"`
	Produce     *Throughput `json:"produce,omitempty"`
	Consume     *Throughput `json:"consume,omitempty"`
	Latency     *Latency    `json:"latency,omitempty"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "proxybench:", err)
		os.Exit(1)
	}
}

func run() error {
	var o options
	var bootstrap, phases string
	flag.StringVar(&bootstrap, "bootstrap", "127.0.0.1:9092", "comma-separated seed brokers")
	flag.StringVar(&o.topic, "topic", "proxybench", "topic")
	flag.StringVar(&phases, "phases", "create,produce,consume,latency,delete", "comma-separated phases: create, produce, consume, latency, delete")
	flag.IntVar(&o.mib, "mb", 256, "MiB of record values to produce")
	flag.IntVar(&o.recordBytes, "record-bytes", 1024, "bytes per record value")
	flag.IntVar(&o.partitions, "partitions", 6, "partitions of the topic (create)")
	flag.IntVar(&o.replication, "replication", 1, "replication factor of the topic (create)")
	flag.IntVar(&o.latencySamples, "latency-samples", 2000, "measured ProduceSync calls (latency)")
	flag.IntVar(&o.latencyWarmup, "latency-warmup", 200, "unmeasured ProduceSync calls before the samples (latency)")
	flag.DurationVar(&o.timeout, "timeout", 5*time.Minute, "bound on the whole run")
	flag.Parse()
	o.bootstrap = strings.Split(bootstrap, ",")
	o.phases = strings.Split(phases, ",")
	if o.recordBytes <= 0 || o.mib <= 0 || o.partitions <= 0 || o.latencySamples <= 0 {
		return errors.New("-mb, -record-bytes, -partitions and -latency-samples must be positive")
	}

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, o.timeout)
	defer cancelT()

	res := Result{Bootstrap: bootstrap, Topic: o.topic, RecordBytes: o.recordBytes}
	for _, ph := range o.phases {
		var err error
		switch ph {
		case "create":
			err = createTopic(ctx, o)
		case "produce":
			res.Produce, err = produce(ctx, o)
		case "consume":
			res.Consume, err = consume(ctx, o)
		case "latency":
			res.Latency, err = latency(ctx, o)
		case "delete":
			err = deleteTopic(ctx, o)
		default:
			err = fmt.Errorf("unknown phase %q", ph)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", ph, err)
		}
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(res)
}

func newClient(o options, opts ...kgo.Opt) (*kgo.Client, error) {
	return kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(o.bootstrap...),
		kgo.ClientID("proxybench"),
	}, opts...)...)
}

func createTopic(ctx context.Context, o options) error {
	cl, err := newClient(o)
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	resp, err := adm.CreateTopic(ctx, int32(o.partitions), int16(o.replication), nil, o.topic)
	if err != nil {
		return err
	}
	if resp.Err != nil {
		return resp.Err
	}
	// Wait until every partition has a leader, so the produce phase does not
	// time the cluster's topic creation.
	for {
		md, err := adm.Metadata(ctx, o.topic)
		if err == nil {
			if t, ok := md.Topics[o.topic]; ok && t.Err == nil && len(t.Partitions) == o.partitions {
				ready := true
				for _, p := range t.Partitions {
					if p.Leader < 0 || p.Err != nil {
						ready = false
					}
				}
				if ready {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("topic %s has no leaders: %w", o.topic, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func deleteTopic(ctx context.Context, o options) error {
	cl, err := newClient(o)
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := kadm.NewClient(cl).DeleteTopic(ctx, o.topic)
	if err != nil {
		return err
	}
	return resp.Err
}

// values returns a pool of incompressible record values; records cycle
// through it, so the producer does not spend its time generating bytes.
func values(n, size int) ([][]byte, error) {
	buf := make([]byte, n*size)
	if _, err := rand.Read(buf); err != nil {
		return nil, err
	}
	vs := make([][]byte, n)
	for i := range vs {
		vs[i] = buf[i*size : (i+1)*size : (i+1)*size]
	}
	return vs, nil
}

func produce(ctx context.Context, o options) (*Throughput, error) {
	cl, err := newClient(o,
		kgo.DefaultProduceTopic(o.topic),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
	)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	if err := cl.Ping(ctx); err != nil {
		return nil, err
	}
	pool, err := values(4096, o.recordBytes)
	if err != nil {
		return nil, err
	}
	total := int64(o.mib) << 20 / int64(o.recordBytes)
	var (
		wg      sync.WaitGroup
		failed  atomic.Int64
		firstMu sync.Mutex
		first   error
	)
	start := time.Now()
	for i := int64(0); i < total; i++ {
		wg.Add(1)
		cl.Produce(ctx, &kgo.Record{Value: pool[i%int64(len(pool))]}, func(_ *kgo.Record, err error) {
			if err != nil {
				failed.Add(1)
				firstMu.Lock()
				if first == nil {
					first = err
				}
				firstMu.Unlock()
			}
			wg.Done()
		})
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	if n := failed.Load(); n > 0 {
		return nil, fmt.Errorf("%d of %d records failed, first: %w", n, total, first)
	}
	b := total * int64(o.recordBytes)
	return &Throughput{Records: total, Bytes: b, Seconds: secs, MBps: float64(b) / secs / 1e6}, nil
}

func consume(ctx context.Context, o options) (*Throughput, error) {
	acl, err := newClient(o)
	if err != nil {
		return nil, err
	}
	adm := kadm.NewClient(acl)
	starts, err := adm.ListStartOffsets(ctx, o.topic)
	if err == nil {
		err = starts.Error()
	}
	var ends kadm.ListedOffsets
	if err == nil {
		ends, err = adm.ListEndOffsets(ctx, o.topic)
		if err == nil {
			err = ends.Error()
		}
	}
	acl.Close()
	if err != nil {
		return nil, fmt.Errorf("list offsets: %w", err)
	}
	remaining := map[int32]int64{} // partition → end offset still to reach
	ends.Each(func(l kadm.ListedOffset) {
		if s, ok := starts.Lookup(l.Topic, l.Partition); ok && l.Offset > s.Offset {
			remaining[l.Partition] = l.Offset
		}
	})
	cl, err := newClient(o, kgo.ConsumePartitions(starts.KOffsets()))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	var recs, bytes int64
	start := time.Now()
	for len(remaining) > 0 {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%d partitions not read to the end: %w", len(remaining), ctx.Err())
		}
		var ferr error
		fs.EachError(func(t string, p int32, err error) {
			if ferr == nil {
				ferr = fmt.Errorf("%s[%d]: %w", t, p, err)
			}
		})
		if ferr != nil {
			return nil, ferr
		}
		fs.EachPartition(func(p kgo.FetchTopicPartition) {
			for _, r := range p.Records {
				recs++
				bytes += int64(len(r.Value))
			}
			if n := len(p.Records); n > 0 {
				if end, ok := remaining[p.Partition]; ok && p.Records[n-1].Offset+1 >= end {
					delete(remaining, p.Partition)
				}
			}
		})
	}
	secs := time.Since(start).Seconds()
	return &Throughput{Records: recs, Bytes: bytes, Seconds: secs, MBps: float64(bytes) / secs / 1e6}, nil
}

func latency(ctx context.Context, o options) (*Latency, error) {
	cl, err := newClient(o,
		kgo.DefaultProduceTopic(o.topic),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.ProducerLinger(0),
	)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	pool, err := values(64, o.recordBytes)
	if err != nil {
		return nil, err
	}
	ds := make([]time.Duration, 0, o.latencySamples)
	for i := 0; i < o.latencyWarmup+o.latencySamples; i++ {
		t0 := time.Now()
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: pool[i%len(pool)]}).FirstErr(); err != nil {
			return nil, err
		}
		if i >= o.latencyWarmup {
			ds = append(ds, time.Since(t0))
		}
	}
	slices.Sort(ds)
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	q := func(f float64) float64 { return ms(ds[min(len(ds)-1, int(f*float64(len(ds))))]) }
	return &Latency{
		Samples: len(ds),
		P50:     q(0.50),
		P90:     q(0.90),
		P99:     q(0.99),
		Max:     ms(ds[len(ds)-1]),
		Mean:    ms(sum / time.Duration(len(ds))),
	}, nil
}
