package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// shortLivedProducers drives n short-lived idempotent producers through
// the proxy — each one InitProducerId and one Produce of one record, then
// never heard from again, like an application that makes a producer per
// task — on workers connections at once, and reports the proxy's RSS idle,
// every tenth of the way and at the end, and its producer-id table from
// /metrics. It fails when the RSS at the end is above twice the idle RSS
// (the bound the producer-id table is there to keep).
func shortLivedProducers(ctx context.Context, proxyPID int, listen, metricsURL string, n, workers int, proxyArgs string) (string, error) {
	idle, _, err := procMem(proxyPID)
	if err != nil {
		return "", err
	}
	topic := fmt.Sprintf("soak-producers-%d", time.Now().UnixNano())
	leader, err := createTopicVia(ctx, listen, topic)
	if err != nil {
		return "", err
	}
	var (
		next    atomic.Int64
		done    atomic.Int64
		failed  atomic.Value // error
		samples []string
		smu     sync.Mutex
	)
	step := int64(max(n/10, 1))
	sample := func(at int64) {
		rss, _, err := procMem(proxyPID)
		if err != nil {
			return
		}
		ids, _ := metricValue(metricsURL, "switchyard_proxy_producer_ids")
		smu.Lock()
		samples = append(samples, fmt.Sprintf("| %d | %.1f MiB | %.0f |", at, mib(rss), ids))
		smu.Unlock()
		fmt.Fprintf(os.Stderr, "benchproxy: %d producers, proxy RSS %.1f MiB, producer_ids %.0f\n", at, mib(rss), ids)
	}
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := producerWorker(ctx, leader, topic, w, n, &next, &done, step, sample); err != nil {
				failed.CompareAndSwap(nil, err)
			}
		}()
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		return "", err
	}
	took := time.Since(start)
	end, peak, err := procMem(proxyPID)
	if err != nil {
		return "", err
	}
	ids, _ := metricValue(metricsURL, "switchyard_proxy_producer_ids")
	idleExp, _ := metricValue(metricsURL, `switchyard_proxy_producer_ids_expired_total{reason="idle"}`)
	limitExp, _ := metricValue(metricsURL, `switchyard_proxy_producer_ids_expired_total{reason="limit"}`)
	ok := end <= 2*idle
	var w strings.Builder
	fmt.Fprintf(&w, "## Short-lived idempotent producers\n\n")
	fmt.Fprintf(&w, "%d producers (InitProducerId, then one Produce of one record, acks=all) through `switchyard proxy%s` on %d connections, in %.0f s (%.0f producers/s); cluster: kfake, 3 brokers, own process.\n\n",
		n, proxyArgs, workers, took.Seconds(), float64(n)/took.Seconds())
	fmt.Fprintf(&w, "| proxy RSS idle | RSS after | peak (VmHWM) | after / idle | target | |\n|---|---|---|---|---|---|\n")
	fmt.Fprintf(&w, "| %.1f MiB | %.1f MiB | %.1f MiB | %.2f× | ≤ 2× | %s |\n\n", mib(idle), mib(end), mib(peak), float64(end)/float64(idle), verdict(ok))
	fmt.Fprintf(&w, "Producer-id table at the end: %.0f producers; forgotten: %.0f idle, %.0f for the limit.\n\n", ids, idleExp, limitExp)
	fmt.Fprintf(&w, "| producers so far | proxy RSS | producer_ids |\n|---|---|---|\n%s\n", strings.Join(samples, "\n"))
	report := w.String()
	fmt.Print(report)
	if !ok {
		return report, fmt.Errorf("proxy RSS %.1f MiB after %d producers, above twice its idle %.1f MiB", mib(end), n, mib(idle))
	}
	return report, nil
}

// producerWorker runs producers on one connection to the topic's leader
// until n have run over all workers.
func producerWorker(ctx context.Context, addr, topic string, w, n int, next, done *atomic.Int64, step int64, sample func(int64)) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	f := kmsg.NewRequestFormatter(kmsg.FormatterClientID(fmt.Sprintf("soak-%d", w)))
	br := bufio.NewReader(c)
	var corr int32
	var buf []byte
	roundTrip := func(req kmsg.Request, resp kmsg.Response) error {
		corr++
		if _, err := c.Write(f.AppendRequest(buf[:0], req, corr)); err != nil {
			return err
		}
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		var sz [4]byte
		if _, err := io.ReadFull(br, sz[:]); err != nil {
			return err
		}
		frame := make([]byte, binary.BigEndian.Uint32(sz[:]))
		if _, err := io.ReadFull(br, frame); err != nil {
			return err
		}
		body := frame[4:]
		if req.IsFlexible() {
			body = body[1:] // empty header tags
		}
		resp.SetVersion(req.GetVersion())
		return resp.ReadFrom(body)
	}
	init := kmsg.NewPtrInitProducerIDRequest()
	init.Version = 4
	init.ProducerID, init.ProducerEpoch = -1, -1
	for ctx.Err() == nil {
		i := next.Add(1)
		if i > int64(n) {
			return nil
		}
		ir := kmsg.NewPtrInitProducerIDResponse()
		if err := roundTrip(init, ir); err != nil {
			return fmt.Errorf("producer %d: InitProducerId: %w", i, err)
		}
		if err := kerr.ErrorForCode(ir.ErrorCode); err != nil {
			return fmt.Errorf("producer %d: InitProducerId: %w", i, err)
		}
		pr := kmsg.NewPtrProduceResponse()
		if err := roundTrip(oneRecordProduce(topic, ir.ProducerID, ir.ProducerEpoch, i), pr); err != nil {
			return fmt.Errorf("producer %d: Produce: %w", i, err)
		}
		for _, t := range pr.Topics {
			for _, p := range t.Partitions {
				if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
					return fmt.Errorf("producer %d: Produce: %w", i, err)
				}
			}
		}
		if d := done.Add(1); d%step == 0 {
			sample(d)
		}
	}
	return ctx.Err()
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// oneRecordProduce is a Produce v9 of one record, the producer's first
// batch (sequence 0) on partition 0.
func oneRecordProduce(topic string, pid int64, epoch int16, i int64) *kmsg.ProduceRequest {
	r := kmsg.Record{Value: []byte(strconv.FormatInt(i, 10))}
	r.Length = int32(len(r.AppendTo(nil)) - 1)
	now := time.Now().UnixMilli()
	b := kmsg.RecordBatch{PartitionLeaderEpoch: -1, Magic: 2, FirstTimestamp: now, MaxTimestamp: now,
		ProducerID: pid, ProducerEpoch: epoch, NumRecords: 1, Records: r.AppendTo(nil)}
	batch := b.AppendTo(nil)
	binary.BigEndian.PutUint32(batch[8:], uint32(len(batch)-12))
	binary.BigEndian.PutUint32(batch[17:], crc32.Checksum(batch[21:], castagnoli))
	req := kmsg.NewPtrProduceRequest()
	req.Version, req.Acks, req.TimeoutMillis = 9, -1, 30000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Records = batch
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	return req
}

// createTopicVia creates a one-partition topic through the proxy and
// returns the proxy's address for its leader.
func createTopicVia(ctx context.Context, listen, topic string) (string, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(listen))
	if err != nil {
		return "", err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if _, err := adm.CreateTopic(ctx, 1, 1, nil, topic); err != nil {
		return "", fmt.Errorf("create %s: %w", topic, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		md, err := adm.Metadata(ctx, topic)
		if err == nil {
			if p, ok := md.Topics[topic].Partitions[0]; ok && p.Err == nil && p.Leader >= 0 {
				for _, b := range md.Brokers {
					if b.NodeID == p.Leader {
						return net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port))), nil
					}
				}
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no leader for %s within 30s (%v)", topic, err)
		}
		time.Sleep(100 * time.Millisecond) // metadata offers nothing to wait on
	}
}

// metricValue reads one sample (name with its labels, as exposed) from the
// proxy's /metrics.
func metricValue(url, sample string) (float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, sample+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(rest), 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New(sample + ": not exposed")
}
