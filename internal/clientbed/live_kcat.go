package clientbed

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// kcat in live mode is two processes: `kcat -P` reading "key:value" lines
// that this driver writes at the spec's pace, and a balanced consumer
// `kcat -G` (auto-commit, librdkafka's defaults). kcat's delivery report
// names only the partition and offset, not the message; librdkafka reports
// deliveries in order per partition and places a keyed record with its
// default partitioner (consistent_random: CRC-32 of the key modulo the
// partition count), so the n-th report for partition p is the n-th record
// sent to p. A report for a partition with no record outstanding is
// reported as an error: the inference would be wrong.

// kcatError matches kcat's error lines ("% ERROR: ..." and librdkafka's
// error callback as kcat prints it).
func kcatError(line string) bool {
	return strings.HasPrefix(line, "% ERROR") || strings.HasPrefix(line, "%ERROR") || strings.HasPrefix(line, "% FATAL")
}

func startKcatLive(ctx context.Context, spec LiveSpec) (*Live, error) {
	if spec.Partitions < 1 {
		return nil, errors.New("kcat: live spec needs the topic's partition count")
	}
	l := newLive(Kcat, spec)
	l.setLibrary(kcatLibrary(ctx))
	id := "clientbed-live-" + spec.Prefix

	prod := exec.CommandContext(ctx, "kcat", "-P", "-b", strings.Join(spec.Bootstrap, ","), "-t", spec.Topic,
		"-K", ":", "-X", "client.id="+id, "-X", "enable.idempotence=true", "-vvv")
	prod.WaitDelay = 5 * time.Second
	stdin, err := prod.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("kcat -P: stdin pipe: %w", err)
	}
	perr, err := prod.StderrPipe()
	if err != nil {
		return nil, fmt.Errorf("kcat -P: stderr pipe: %w", err)
	}
	cons := exec.CommandContext(ctx, "kcat", "-b", strings.Join(spec.Bootstrap, ","), "-G", spec.Group,
		"-X", "client.id="+id, "-X", "auto.offset.reset=earliest", "-J", "-u", spec.Topic)
	cons.Cancel = func() error { return cons.Process.Kill() }
	cons.WaitDelay = 10 * time.Second
	cout, err := cons.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("kcat -G: stdout pipe: %w", err)
	}
	cerr, err := cons.StderrPipe()
	if err != nil {
		return nil, fmt.Errorf("kcat -G: stderr pipe: %w", err)
	}
	if err := prod.Start(); err != nil {
		return nil, fmt.Errorf("start kcat -P: %w", err)
	}
	if err := cons.Start(); err != nil {
		_ = prod.Process.Kill()
		_ = prod.Wait()
		return nil, fmt.Errorf("start kcat -G: %w", err)
	}

	// outstanding[p] lists the records sent to partition p without a report.
	var (
		mu          sync.Mutex
		outstanding = map[int32][]int{}
	)
	prodCtx, stopProd := context.WithCancel(ctx)
	var stopOnce sync.Once
	l.stopProduce = stopProd
	l.stop = func() {
		stopProd()
		stopOnce.Do(func() { _ = cons.Process.Signal(syscall.SIGTERM) })
	}
	var wg sync.WaitGroup
	var prodErr, consErr error
	// The producer: paced writes, then end of input (kcat flushes and exits).
	sentCh := make(chan int, 1)
	wg.Go(func() {
		w := bufio.NewWriter(stdin)
		sent := pace(prodCtx, spec.Interval, func(seq int) bool {
			key := spec.key(seq)
			p := int32(crc32.ChecksumIEEE([]byte(key)) % uint32(spec.Partitions))
			mu.Lock()
			outstanding[p] = append(outstanding[p], seq)
			mu.Unlock()
			if _, err := fmt.Fprintf(w, "%s:%s\n", key, spec.value(seq)); err != nil {
				return false
			}
			return w.Flush() == nil
		})
		_ = stdin.Close()
		sentCh <- sent
	})
	wg.Go(func() {
		sc := bufio.NewScanner(perr)
		for sc.Scan() {
			line := sc.Text()
			_, _ = l.log.Write([]byte("P " + line + "\n"))
			if m := kcatDelivered.FindStringSubmatch(line); m != nil {
				p64, _ := strconv.ParseInt(m[1], 10, 32)
				o, _ := strconv.ParseInt(m[2], 10, 64)
				p := int32(p64)
				mu.Lock()
				q := outstanding[p]
				if len(q) == 0 {
					mu.Unlock()
					l.addError(LiveError{Side: SideProduce, Seq: -1, Msg: fmt.Sprintf("delivery report for partition %d offset %d with no record outstanding there", p, o)})
					continue
				}
				seq := q[0]
				outstanding[p] = q[1:]
				mu.Unlock()
				l.addAck(Ack{Seq: seq, Partition: p, Offset: o})
				continue
			}
			if m := kcatFailed.FindStringSubmatch(line); m != nil {
				l.addError(LiveError{Side: SideProduce, Seq: -1, Msg: "delivery failed: " + m[1]})
				continue
			}
			if kcatError(line) {
				l.addError(LiveError{Side: SideClient, Seq: -1, Fatal: strings.Contains(line, "FATAL"), Msg: "kcat -P: " + line})
			}
		}
		_, _ = io.Copy(io.Discard, perr)
		err := prod.Wait()
		sent := <-sentCh
		mu.Lock()
		left := 0
		for _, q := range outstanding {
			left += len(q)
		}
		mu.Unlock()
		if left > 0 {
			l.addError(LiveError{Side: SideProduce, Seq: -1, Msg: fmt.Sprintf("%d records without a delivery report when kcat -P exited", left)})
		}
		if err != nil {
			prodErr = fmt.Errorf("kcat -P: %w", err)
			return
		}
		l.markProduced(sent)
	})
	// The consumer.
	wg.Go(func() {
		wg2 := sync.WaitGroup{}
		wg2.Go(func() {
			sc := bufio.NewScanner(cerr)
			for sc.Scan() {
				line := sc.Text()
				_, _ = l.log.Write([]byte("C " + line + "\n"))
				if kcatError(line) {
					l.addError(LiveError{Side: SideConsume, Seq: -1, Fatal: strings.Contains(line, "FATAL"), Msg: "kcat -G: " + line})
				}
			}
			_, _ = io.Copy(io.Discard, cerr)
		})
		sc := bufio.NewScanner(cout)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		var parseErr error
		for sc.Scan() {
			var kr kcatRecord
			if err := json.Unmarshal(sc.Bytes(), &kr); err != nil {
				if parseErr == nil {
					parseErr = fmt.Errorf("kcat -J output %q: %w", sc.Text(), err)
				}
				continue
			}
			r := LiveRecord{Partition: kr.Partition, Offset: kr.Offset}
			if kr.Key != nil {
				r.Key = *kr.Key
			}
			if kr.Payload != nil {
				r.Value = *kr.Payload
			}
			l.addRecord(r)
		}
		_, _ = io.Copy(io.Discard, cout)
		wg2.Wait()
		if err := cons.Wait(); err != nil {
			consErr = fmt.Errorf("kcat -G: %w", err)
		} else {
			consErr = parseErr
		}
	})
	go func() {
		wg.Wait()
		stopProd()
		err := errors.Join(prodErr, consErr)
		if err != nil {
			err = fmt.Errorf("kcat %s: %w%s", spec.Prefix, err, stderrTail(l.log.String()))
		}
		l.finish(err)
	}()
	return l, nil
}
