package clientbed

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// maxExamples caps the examples listed for one kind of problem.
const maxExamples = 5

// problems collects what Verify finds, by kind, with a few examples each.
type problems struct {
	order []string
	count map[string]int
	ex    map[string][]string
}

func (p *problems) add(kind, format string, args ...any) {
	if p.count == nil {
		p.count, p.ex = map[string]int{}, map[string][]string{}
	}
	if p.count[kind] == 0 {
		p.order = append(p.order, kind)
	}
	p.count[kind]++
	if len(p.ex[kind]) < maxExamples {
		p.ex[kind] = append(p.ex[kind], fmt.Sprintf(format, args...))
	}
}

func (p *problems) err() error {
	var errs []error
	for _, kind := range p.order {
		more := ""
		if n := p.count[kind] - len(p.ex[kind]); n > 0 {
			more = fmt.Sprintf("; and %d more", n)
		}
		errs = append(errs, fmt.Errorf("%s: %d (%s%s)", kind, p.count[kind], strings.Join(p.ex[kind], "; "), more))
	}
	return errors.Join(errs...)
}

// Problem kinds, as they start Verify's error lines.
const (
	kindNoReport     = "missing report"
	kindDelivery     = "producer errors"
	kindAckCount     = "acked count"
	kindAck          = "bad acks"
	kindConsumer     = "consumer errors"
	kindTimedOut     = "consumer timed out"
	kindNotCommitted = "not committed"
	kindForeign      = "foreign or corrupt records"
	kindKey          = "wrong keys"
	kindHeaders      = "wrong headers"
	kindLost         = "lost records"
	kindDuplicate    = "duplicate records"
	kindRedelivered  = "offsets delivered twice"
	kindReordered    = "reordered records"
	kindKeySplit     = "keys in several partitions"
	kindMisplaced    = "records not where acked"
	kindUnread       = "records left unread"
	kindCommitted    = "wrong committed offsets"
	kindBroker       = "cluster state unreadable"
)

// Verify checks the run against spec (the Spec given to Run: defaults are
// applied the same way). It returns nil only if
//   - the producer reported no error and an ack for every record (each
//     sequence number once, no two at the same offset),
//   - the consumer reported no error, did not time out, and committed,
//   - every record produced was consumed exactly once, none other was, and
//     each has its key, value and headers as produced,
//   - within each partition, offsets were delivered in increasing order and
//     each key's sequence numbers increase (the producer's order per key),
//     and each key sits in one partition,
//   - each consumed record sits at the partition and offset its ack named,
//   - the cluster's offsets agree: each partition holds exactly the records
//     consumed from it (none left unread), and the group's committed offset
//     is one past the last record consumed.
//
// The last two checks run when the Result carries acks and broker state; a
// BrokerError fails the run.
// A produce-only or consume-only spec checks only that half.
func (r Result) Verify(spec Spec) error {
	spec = spec.withDefaults(r.Client)
	if spec.Records < 1 {
		return fmt.Errorf("%s: spec: records %d: want at least 1", r.Client, spec.Records)
	}
	var p problems
	var acks map[int]Ack
	if spec.Mode.Produces() {
		acks = r.verifyProduce(spec, &p)
	}
	if spec.Mode.Consumes() {
		r.verifyConsume(spec, acks, &p)
	}
	if err := p.err(); err != nil {
		return fmt.Errorf("%s: %d records, %w", r.Client, spec.Records, err)
	}
	return nil
}

// verifyProduce checks the producer's report and returns its acks by
// sequence number (nil if it gave none).
func (r Result) verifyProduce(spec Spec, p *problems) map[int]Ack {
	pr := r.Produce
	if pr == nil {
		p.add(kindNoReport, "no produce report")
		return nil
	}
	for _, e := range pr.Errors {
		p.add(kindDelivery, "%s", e)
	}
	if pr.Prefix != "" && pr.Prefix != spec.Prefix {
		p.add(kindNoReport, "producer used prefix %q, spec says %q", pr.Prefix, spec.Prefix)
	}
	if pr.Acked != spec.Records {
		p.add(kindAckCount, "%d of %d records acknowledged", pr.Acked, spec.Records)
	}
	if len(pr.Acks) == 0 {
		return nil
	}
	acks := make(map[int]Ack, len(pr.Acks))
	type at struct {
		p int32
		o int64
	}
	where := make(map[at]int, len(pr.Acks))
	for _, a := range pr.Acks {
		if a.Seq < 0 || a.Seq >= spec.Records {
			p.add(kindAck, "ack for seq %d, out of range", a.Seq)
			continue
		}
		if _, dup := acks[a.Seq]; dup {
			p.add(kindAck, "seq %d acked twice", a.Seq)
			continue
		}
		if other, dup := where[at{a.Partition, a.Offset}]; dup {
			p.add(kindAck, "seq %d and seq %d both acked at %d/%d", other, a.Seq, a.Partition, a.Offset)
		}
		acks[a.Seq] = a
		where[at{a.Partition, a.Offset}] = a.Seq
	}
	if len(acks) != pr.Acked {
		p.add(kindAck, "%d distinct acks listed, %d counted", len(acks), pr.Acked)
	}
	return acks
}

// seqOf parses the sequence number out of "<prefix>-<seq>".
func seqOf(spec Spec, value *string) (int, bool) {
	if value == nil {
		return 0, false
	}
	rest, ok := strings.CutPrefix(*value, spec.Prefix+"-")
	if !ok {
		return 0, false
	}
	seq, err := strconv.Atoi(rest)
	if err != nil || seq < 0 || seq >= spec.Records || strconv.Itoa(seq) != rest {
		return 0, false
	}
	return seq, true
}

func show(s *string) string {
	if s == nil {
		return "null"
	}
	return strconv.Quote(*s)
}

func (r Result) verifyConsume(spec Spec, acks map[int]Ack, p *problems) {
	cr := r.Consume
	if cr == nil {
		p.add(kindNoReport, "no consume report")
		return
	}
	for _, e := range cr.Errors {
		p.add(kindConsumer, "%s", e)
	}
	if cr.TimedOut {
		p.add(kindTimedOut, "%d of %d records before the deadline", len(cr.Records), spec.Records)
	}
	if !cr.Committed {
		p.add(kindNotCommitted, "the consumer made no successful commit")
	}

	type pk struct {
		p   int32
		key string
	}
	type po struct {
		p int32
		o int64
	}
	seen := make([]int, spec.Records)
	delivered := map[po]bool{}
	lastOffset := map[int32]int64{}
	lastSeq := map[pk]int{}
	keyParts := map[string][]int32{}
	consumed := map[int32]int{}     // distinct offsets consumed per partition
	nextOffset := map[int32]int64{} // one past the highest offset consumed
	for _, rec := range cr.Records {
		at := fmt.Sprintf("%d/%d", rec.Partition, rec.Offset)
		if delivered[po{rec.Partition, rec.Offset}] {
			p.add(kindRedelivered, "%s delivered again", at)
		} else {
			delivered[po{rec.Partition, rec.Offset}] = true
			consumed[rec.Partition]++
		}
		if last, ok := lastOffset[rec.Partition]; ok && rec.Offset <= last {
			p.add(kindReordered, "partition %d: offset %d delivered after offset %d", rec.Partition, rec.Offset, last)
		}
		lastOffset[rec.Partition] = max(lastOffset[rec.Partition], rec.Offset)
		nextOffset[rec.Partition] = max(nextOffset[rec.Partition], rec.Offset+1)

		seq, ok := seqOf(spec, rec.Value)
		if !ok {
			p.add(kindForeign, "%s value %s", at, show(rec.Value))
			continue
		}
		seen[seq]++
		key := spec.key(seq)
		if rec.Key == nil || *rec.Key != key {
			p.add(kindKey, "%s seq %d: key %s, want %q", at, seq, show(rec.Key), key)
		} else {
			if !slices.Contains(keyParts[key], rec.Partition) {
				keyParts[key] = append(keyParts[key], rec.Partition)
			}
			k := pk{rec.Partition, key}
			if last, ok := lastSeq[k]; ok && seq <= last {
				p.add(kindReordered, "partition %d key %s: seq %d delivered after seq %d", rec.Partition, key, seq, last)
			}
			lastSeq[k] = max(lastSeq[k], seq)
		}
		if want := spec.headers(seq); !slices.Equal(rec.Headers, want) {
			p.add(kindHeaders, "%s seq %d: headers %v, want %v", at, seq, rec.Headers, want)
		}
		if a, ok := acks[seq]; ok && (a.Partition != rec.Partition || a.Offset != rec.Offset) {
			p.add(kindMisplaced, "seq %d acked at %d/%d, consumed at %s", seq, a.Partition, a.Offset, at)
		}
	}
	for seq, n := range seen {
		switch {
		case n == 0:
			p.add(kindLost, "seq %d", seq)
		case n > 1:
			p.add(kindDuplicate, "seq %d consumed %d times", seq, n)
		}
	}
	keys := make([]string, 0, len(keyParts))
	for k := range keyParts {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if parts := keyParts[k]; len(parts) > 1 {
			p.add(kindKeySplit, "key %s in partitions %v", k, parts)
		}
	}

	if r.BrokerError != "" {
		p.add(kindBroker, "%s", r.BrokerError)
	}
	bs := r.Broker
	if bs == nil {
		return
	}
	parts := make([]int32, 0, len(bs.End))
	for part := range bs.End {
		parts = append(parts, part)
	}
	slices.Sort(parts)
	for _, part := range parts {
		// A fresh topic written by idempotent (non-transactional) producers
		// has no gaps: the partition holds End-Start records.
		if held := bs.End[part] - bs.Start[part]; held != int64(consumed[part]) {
			p.add(kindUnread, "partition %d holds %d records (offsets %d..%d), %d consumed",
				part, held, bs.Start[part], bs.End[part], consumed[part])
		}
	}
	if bs.Committed == nil {
		return
	}
	for _, part := range parts {
		want, ok := nextOffset[part]
		got, has := bs.Committed[part]
		switch {
		case ok && !has:
			p.add(kindCommitted, "partition %d: no commit, want %d", part, want)
		case ok && got != want:
			p.add(kindCommitted, "partition %d: committed %d, want %d", part, got, want)
		case !ok && has && got != bs.End[part]:
			p.add(kindCommitted, "partition %d: committed %d, nothing consumed", part, got)
		}
	}
}
