package clientbed

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// kcat's producer takes headers only from -H, which applies to every
// message of the process: a per-record "seq" header needs one kcat process
// per record. kcatProducers such chains run side by side, each owning a set
// of keys and producing them in order, so per-key order is kept.
const kcatProducers = 4

var (
	kcatDelivered = regexp.MustCompile(`Message delivered to partition (-?\d+) \(offset (-?\d+)\)`)
	kcatFailed    = regexp.MustCompile(`Delivery failed for message: (.*)`)
	kcatVersion   = regexp.MustCompile(`Version (\S+) .*librdkafka (\S+)`)
)

func runKcat(ctx context.Context, spec Spec) (Result, error) {
	res := Result{Library: kcatLibrary(ctx)}
	logs := newTail(64 << 10)
	deadline := time.Now().Add(spec.Timeout)
	if spec.Mode.Produces() {
		res.Produce = kcatProduce(ctx, spec, deadline, logs)
	}
	if spec.Mode.Consumes() {
		cr, err := kcatConsume(ctx, spec, deadline, logs)
		res.Log = logs.String()
		if err != nil {
			return res, err
		}
		res.Consume = cr
	}
	res.Log = logs.String()
	return res, nil
}

// kcatLibrary reads "kcat 1.7.1, librdkafka 2.0.2" from kcat -V.
func kcatLibrary(ctx context.Context) string {
	out, err := exec.CommandContext(ctx, "kcat", "-V").CombinedOutput()
	if m := kcatVersion.FindSubmatch(out); err == nil && m != nil {
		return fmt.Sprintf("kcat %s, librdkafka %s", m[1], strings.TrimSuffix(string(m[2]), ")"))
	}
	return "kcat (version unknown)"
}

func kcatProduce(ctx context.Context, spec Spec, deadline time.Time, logs *tail) *ProduceResult {
	start := time.Now()
	pr := &ProduceResult{Prefix: spec.Prefix, Errors: []string{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	workers := min(kcatProducers, spec.Keys)
	for w := range workers {
		wg.Go(func() {
			for seq := 0; seq < spec.Records; seq++ {
				if (seq%spec.Keys)%workers != w {
					continue
				}
				ack, err := kcatProduceOne(ctx, spec, seq, deadline, logs)
				mu.Lock()
				if err != nil {
					pr.Errors = append(pr.Errors, fmt.Sprintf("seq %d: %v", seq, err))
				} else {
					pr.Acked++
					pr.Acks = append(pr.Acks, ack)
				}
				mu.Unlock()
				if ctx.Err() != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	if n := spec.Records - pr.Acked - len(pr.Errors); n > 0 {
		pr.Errors = append(pr.Errors, fmt.Sprintf("%d records not produced: %v", n, ctx.Err()))
	}
	pr.ElapsedMS = since(start)
	return pr
}

// kcatProduceOne produces record seq with its own kcat process (idempotent,
// like every producer of the bed) and reads the delivery report kcat prints
// at verbosity 3.
func kcatProduceOne(ctx context.Context, spec Spec, seq int, deadline time.Time, logs *tail) (Ack, error) {
	timeout := max(time.Until(deadline), time.Second)
	cmd := exec.CommandContext(ctx, "kcat", "-P",
		"-b", strings.Join(spec.Bootstrap, ","),
		"-t", spec.Topic,
		"-K", ":",
		"-H", "seq="+strconv.Itoa(seq),
		"-H", "client="+spec.Prefix,
		"-X", "client.id=clientbed-kcat",
		"-X", "enable.idempotence=true",
		// One record per process: waiting for a batch to fill only adds
		// latency (5 ms by default, half of each process's life).
		"-X", "linger.ms=0",
		"-X", "message.timeout.ms="+strconv.FormatInt(timeout.Milliseconds(), 10),
		"-vvv",
	)
	cmd.Stdin = strings.NewReader(spec.key(seq) + ":" + spec.value(seq) + "\n")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	out := stderr.String()
	if m := kcatFailed.FindStringSubmatch(out); m != nil {
		logs.Write(stderr.Bytes())
		return Ack{}, fmt.Errorf("delivery failed: %s", m[1])
	}
	if err != nil {
		logs.Write(stderr.Bytes())
		return Ack{}, fmt.Errorf("kcat -P: %w%s", err, stderrTail(out))
	}
	m := kcatDelivered.FindStringSubmatch(out)
	if m == nil {
		logs.Write(stderr.Bytes())
		return Ack{}, fmt.Errorf("kcat -P exited without a delivery report%s", stderrTail(out))
	}
	p, _ := strconv.ParseInt(m[1], 10, 32)
	o, _ := strconv.ParseInt(m[2], 10, 64)
	return Ack{Seq: seq, Partition: int32(p), Offset: o}, nil
}

// kcatRecord is one line of `kcat -J` output.
type kcatRecord struct {
	Partition int32    `json:"partition"`
	Offset    int64    `json:"offset"`
	Key       *string  `json:"key"`
	Payload   *string  `json:"payload"`
	Headers   []string `json:"headers"`
}

// kcatConsume consumes with kcat's balanced consumer (-G), which joins the
// group and, on exit, commits the offsets of what it delivered
// (enable.auto.commit's final commit in rd_kafka_consumer_close). It exits by
// itself after spec.Records records (-c); at the deadline it gets SIGTERM,
// which kcat also answers with a clean close and commit.
func kcatConsume(ctx context.Context, spec Spec, deadline time.Time, logs *tail) (*ConsumeResult, error) {
	start := time.Now()
	cr := &ConsumeResult{Records: []Record{}, Errors: []string{}}
	cmd := exec.CommandContext(ctx, "kcat",
		"-b", strings.Join(spec.Bootstrap, ","),
		"-G", spec.Group,
		"-X", "client.id=clientbed-kcat",
		"-X", "auto.offset.reset=earliest",
		"-X", "enable.auto.commit=true",
		"-c", strconv.Itoa(spec.Records),
		"-J", "-u",
		spec.Topic,
	)
	var stdout bytes.Buffer
	var stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start kcat -G: %w", err)
	}
	var timedOut bool
	var toMu sync.Mutex
	timer := time.AfterFunc(time.Until(deadline), func() {
		toMu.Lock()
		timedOut = true
		toMu.Unlock()
		_ = cmd.Process.Signal(syscall.SIGTERM)
	})
	err := cmd.Wait()
	timer.Stop()
	logs.Write(stderr.Bytes())
	toMu.Lock()
	cr.TimedOut = timedOut
	toMu.Unlock()

	sc := bufio.NewScanner(&stdout)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var kr kcatRecord
		if err := json.Unmarshal(line, &kr); err != nil {
			return nil, fmt.Errorf("kcat -J output %q: %w", line, err)
		}
		rec := Record{Partition: kr.Partition, Offset: kr.Offset, Key: kr.Key, Value: kr.Payload, Headers: []Header{}}
		for i := 0; i+1 < len(kr.Headers); i += 2 {
			rec.Headers = append(rec.Headers, Header{Key: kr.Headers[i], Value: kr.Headers[i+1]})
		}
		if len(kr.Headers)%2 != 0 {
			cr.Errors = append(cr.Errors, fmt.Sprintf("partition %d offset %d: odd header list %q", kr.Partition, kr.Offset, kr.Headers))
		}
		cr.Records = append(cr.Records, rec)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read kcat -J output: %w", err)
	}
	for _, line := range strings.Split(stderr.String(), "\n") {
		if strings.HasPrefix(line, "% ERROR") {
			cr.Errors = append(cr.Errors, strings.TrimPrefix(line, "% "))
		}
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
		cr.Committed = len(cr.Records) > 0
	case errors.As(err, &exit) && ctx.Err() == nil:
		cr.Errors = append(cr.Errors, fmt.Sprintf("kcat -G: %v%s", err, stderrTail(stderr.String())))
	default:
		return nil, fmt.Errorf("kcat -G: %w%s", err, stderrTail(stderr.String()))
	}
	cr.ElapsedMS = since(start)
	return cr, nil
}
