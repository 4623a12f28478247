package verify

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"

	"github.com/switchyard/switchyard/mirror"
	"github.com/switchyard/switchyard/mirror/offsetmap"

	"github.com/switchyard/switchyard/kafkasec"
)

// Status is the verdict on one partition.
type Status int8

const (
	// StatusMatch: both sides hold the same records, in the same order,
	// paired exactly by the offset map.
	StatusMatch Status = iota
	// StatusCleaned: every record present on both sides matches, and the
	// records present on one side only were removed from the other since
	// the copy by its compaction or retention (see Removed).
	StatusCleaned
	// StatusMismatch: at least one difference nothing explains.
	StatusMismatch
	// StatusError: the partition could not be verified.
	StatusError
)

func (s Status) String() string {
	switch s {
	case StatusMatch:
		return "match"
	case StatusCleaned:
		return "match-cleaned"
	case StatusMismatch:
		return "mismatch"
	case StatusError:
		return "error"
	}
	return fmt.Sprintf("Status(%d)", int8(s))
}

// OffsetRange is the offsets [From, To).
type OffsetRange struct{ From, To int64 }

func (r OffsetRange) String() string { return fmt.Sprintf("[%d, %d)", r.From, r.To) }

// PartitionReport is the verification of one mirrored partition.
type PartitionReport struct {
	Topic       string // source topic
	TargetTopic string
	Partition   int32
	// Source is [Start, Next) of the offset map; Target is
	// [Translate(Start), TargetNext).
	Source, Target OffsetRange
	// SourceCount and TargetCount are the records present in each range.
	SourceCount, TargetCount int64
	// SourceDigest and TargetDigest are SHA-256 over the canonical
	// encodings of those records (see the package documentation).
	SourceDigest, TargetDigest [32]byte
	// Matched counts records present on both sides, identical.
	Matched int64
	// SourceRemoved counts records only on the target, removed from the
	// source since the copy; TargetRemoved, only on the source.
	SourceRemoved, TargetRemoved Removed
	// Mismatches counts unexplained differences; FirstMismatch is the
	// first in offset order.
	Mismatches    int64
	FirstMismatch *Mismatch
	// Lost are the source offsets in the range that the source deleted
	// before the mirror copied them, as its offset map records (gaps it
	// went on after, gap policy continue). They are not compared: neither
	// side holds them.
	Lost []offsetmap.LostRange
	// Err is set when the partition could not be verified.
	Err error
}

// DigestsEqual reports whether both sides hold byte-identical record
// sequences.
func (p *PartitionReport) DigestsEqual() bool { return p.SourceDigest == p.TargetDigest }

// Status returns the verdict.
func (p *PartitionReport) Status() Status {
	switch {
	case p.Err != nil:
		return StatusError
	case p.Mismatches > 0:
		return StatusMismatch
	case p.SourceRemoved.Total() > 0 || p.TargetRemoved.Total() > 0:
		return StatusCleaned
	default:
		return StatusMatch
	}
}

// OK reports whether the partition matches (StatusMatch or StatusCleaned).
func (p *PartitionReport) OK() bool {
	s := p.Status()
	return s == StatusMatch || s == StatusCleaned
}

// Detail describes the verdict in one line.
func (p *PartitionReport) Detail() string {
	var parts []string
	switch p.Status() {
	case StatusError:
		return "error: " + p.Err.Error()
	case StatusMismatch:
		parts = append(parts, fmt.Sprintf("MISMATCH (%d): first at %s", p.Mismatches, p.FirstMismatch))
	default:
		parts = append(parts, "ok")
	}
	add := func(n int64, what string) {
		if n > 0 {
			parts = append(parts, fmt.Sprintf(what, n))
		}
	}
	add(p.SourceRemoved.Compacted, "source compacted since copy: %d records only on the target")
	add(p.SourceRemoved.Retention, "source retention since copy: %d records only on the target")
	add(p.TargetRemoved.Compacted, "target compacted: %d records only on the source")
	add(p.TargetRemoved.Retention, "target retention: %d records only on the source")
	if len(p.Lost) > 0 {
		var n int64
		var ranges []string
		for i, r := range p.Lost {
			n += r.Len()
			if i < 3 {
				ranges = append(ranges, r.String())
			}
		}
		if len(p.Lost) > 3 {
			ranges = append(ranges, fmt.Sprintf("and %d more", len(p.Lost)-3))
		}
		parts = append(parts, fmt.Sprintf("deleted on the source before they were mirrored: %d offsets (%s)", n, strings.Join(ranges, ", ")))
	}
	return strings.Join(parts, "; ")
}

// Report is the verification of a mirror.
type Report struct {
	Mirror string
	// Partitions are sorted by topic and partition.
	Partitions []PartitionReport
}

// OK reports whether every partition matches.
func (r *Report) OK() bool {
	for i := range r.Partitions {
		if !r.Partitions[i].OK() {
			return false
		}
	}
	return true
}

// Run verifies every partition the mirror named in cfg has copied (those
// of the topics cfg.Topics selects). It returns an error only when
// verification cannot start: a bad config, the offset maps unreadable, no
// partition to verify, the clusters unreachable. What goes wrong with one
// partition is in its PartitionReport. Run blocks until every partition is
// verified or ctx is done. Extra client options are appended to the
// defaults of every client (tests, TLS, SASL).
func Run(ctx context.Context, cfg Config, opts ...kgo.Opt) (Report, error) {
	rep := Report{Mirror: cfg.Mirror}
	if err := cfg.Validate(); err != nil {
		return rep, fmt.Errorf("verify config: %w", err)
	}
	filter, _ := cfg.topicFilter()
	srcSec, err := kafkasec.New(ctx, "source", cfg.Source)
	if err != nil {
		return rep, err
	}
	tgtSec, err := kafkasec.New(ctx, "target", cfg.Target)
	if err != nil {
		return rep, err
	}
	srcOpts := append(srcSec.KgoOpts(0), opts...)
	tgtOpts := append(tgtSec.KgoOpts(0), opts...)
	maps, err := mirror.ReadOffsetMaps(ctx, cfg.TargetBootstrap, cfg.Mirror, tgtOpts...)
	if err != nil {
		return rep, fmt.Errorf("offset maps of mirror %s: %w", cfg.Mirror, err)
	}
	var tps []mirror.TopicPartition
	topicSet := map[string]bool{}
	for tp := range maps {
		if filter == nil || filter.MatchString(tp.Topic) {
			tps = append(tps, tp)
			topicSet[tp.Topic] = true
		}
	}
	if len(tps) == 0 {
		return rep, fmt.Errorf("mirror %s: no mirrored partition to verify (%d mirrored, topics %q)", cfg.Mirror, len(maps), cfg.Topics)
	}
	sort.Slice(tps, func(i, j int) bool {
		a, b := tps[i], tps[j]
		return a.Topic < b.Topic || a.Topic == b.Topic && a.Partition < b.Partition
	})
	srcTopics := make([]string, 0, len(topicSet))
	tgtTopics := make([]string, 0, len(topicSet))
	for t := range topicSet {
		srcTopics = append(srcTopics, t)
		tgtTopics = append(tgtTopics, cfg.TargetPrefix+t)
	}

	srcCl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(cfg.SourceBootstrap...)}, srcOpts...)...)
	if err != nil {
		return rep, fmt.Errorf("source client: %w", err)
	}
	defer srcCl.Close()
	tgtCl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(cfg.TargetBootstrap...)}, tgtOpts...)...)
	if err != nil {
		return rep, fmt.Errorf("target client: %w", err)
	}
	defer tgtCl.Close()
	srcInfo, err := describe(ctx, kadm.NewClient(srcCl), srcTopics)
	if err != nil {
		return rep, fmt.Errorf("source: %w", err)
	}
	tgtInfo, err := describe(ctx, kadm.NewClient(tgtCl), tgtTopics)
	if err != nil {
		return rep, fmt.Errorf("target: %w", err)
	}

	rep.Partitions = make([]PartitionReport, len(tps))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(cfg.Parallel)
	for i, tp := range tps {
		g.Go(func() error {
			pctx, cancel := context.WithTimeout(gctx, cfg.PartitionTimeout)
			defer cancel()
			rep.Partitions[i] = verifyPartition(pctx, partitionJob{
				topic: tp.Topic, target: cfg.TargetPrefix + tp.Topic, partition: tp.Partition, om: maps[tp],
				srcCl: srcCl, tgtCl: tgtCl, src: srcInfo, tgt: tgtInfo,
			})
			return nil
		})
	}
	_ = g.Wait() // the goroutines report in rep, never fail
	if err := ctx.Err(); err != nil {
		return rep, fmt.Errorf("verify mirror %s: %w", cfg.Mirror, err)
	}
	return rep, nil
}

// clusterInfo is what verify needs to know of one cluster's topics, read
// once before the partitions.
type clusterInfo struct {
	starts, ends kadm.ListedOffsets // log start, last stable
	compacted    map[string]bool
}

func describe(ctx context.Context, adm *kadm.Client, topics []string) (clusterInfo, error) {
	info := clusterInfo{compacted: map[string]bool{}}
	var err error
	if info.starts, err = adm.ListStartOffsets(ctx, topics...); err != nil {
		return info, fmt.Errorf("log start offsets: %w", err)
	}
	if info.ends, err = adm.ListCommittedOffsets(ctx, topics...); err != nil {
		return info, fmt.Errorf("last stable offsets: %w", err)
	}
	cfgs, err := adm.DescribeTopicConfigs(ctx, topics...)
	if err != nil {
		return info, fmt.Errorf("topic configs: %w", err)
	}
	for _, rc := range cfgs {
		// A topic whose configs are unreadable is not assumed compacted:
		// compaction then explains nothing.
		for _, c := range rc.Configs {
			if c.Key == "cleanup.policy" && c.Value != nil && strings.Contains(*c.Value, "compact") {
				info.compacted[rc.Name] = true
			}
		}
	}
	return info, nil
}

// offsets returns a partition's log start and last stable offsets.
func (ci clusterInfo) offsets(topic string, partition int32) (start, end int64, err error) {
	s, ok := ci.starts.Lookup(topic, partition)
	if !ok {
		return 0, 0, fmt.Errorf("%s/%d: no log start offset (does the partition exist?)", topic, partition)
	}
	e, ok := ci.ends.Lookup(topic, partition)
	if !ok {
		return 0, 0, fmt.Errorf("%s/%d: no last stable offset (does the partition exist?)", topic, partition)
	}
	if err := errors.Join(s.Err, e.Err); err != nil {
		return 0, 0, fmt.Errorf("%s/%d: %w", topic, partition, err)
	}
	return s.Offset, e.Offset, nil
}

type partitionJob struct {
	topic, target string
	partition     int32
	om            *offsetmap.Map
	srcCl, tgtCl  *kgo.Client
	src, tgt      clusterInfo
}

// verifyPartition reads both sides of one partition and compares them.
func verifyPartition(ctx context.Context, j partitionJob) PartitionReport {
	pr := PartitionReport{Topic: j.topic, TargetTopic: j.target, Partition: j.partition, Lost: j.om.Lost()}
	pr.Source = OffsetRange{j.om.Start(), j.om.Next()}
	// Resume, not Translate: the map may begin with lost offsets.
	tgtFrom, _, err := j.om.Resume(pr.Source.From)
	if err != nil { // Start always resolves; a map that says otherwise is broken
		pr.Err = fmt.Errorf("offset map: %w", err)
		return pr
	}
	pr.Target = OffsetRange{tgtFrom, j.om.TargetNext()}

	srcStart, srcEnd, err := j.src.offsets(j.topic, j.partition)
	if err != nil {
		pr.Err = fmt.Errorf("source %w", err)
		return pr
	}
	tgtStart, tgtEnd, err := j.tgt.offsets(j.target, j.partition)
	if err != nil {
		pr.Err = fmt.Errorf("target %w", err)
		return pr
	}
	src, tgt := newSide(), newSide()
	src.compacted, tgt.compacted = j.src.compacted[j.topic], j.tgt.compacted[j.target]

	// Reading up to the end listed before the read keeps a busy partition
	// from moving the goal; a range beyond that end shows as records
	// missing on that side.
	srcReader := newPartitionReader(j.srcCl, j.topic, j.partition, srcStart)
	if _, err := srcReader.read(ctx, pr.Source.From, min(pr.Source.To, srcEnd), src.add); err != nil {
		pr.Err = fmt.Errorf("read source: %w", err)
		return pr
	}
	tgtReader := newPartitionReader(j.tgtCl, j.target, j.partition, tgtStart)
	if _, err := tgtReader.read(ctx, pr.Target.From, min(pr.Target.To, tgtEnd), tgt.add); err != nil {
		pr.Err = fmt.Errorf("read target: %w", err)
		return pr
	}
	src.logStart, tgt.logStart = srcReader.logStart, tgtReader.logStart

	ranges := j.om.Ranges()
	c := compare(ranges, pr.Lost, src, tgt)
	if c.needSourceLater && srcEnd > pr.Source.To {
		// A target-only record of a compacted source may have been
		// superseded after the mirrored range: read the keys there.
		src.later = map[fingerprint]int64{}
		_, err := srcReader.read(ctx, pr.Source.To, srcEnd, func(r *kgo.Record) {
			if r.Key != nil {
				src.later[fp(appendBytes(nil, r.Key))] = r.Offset
			}
		})
		if err != nil {
			pr.Err = fmt.Errorf("read source beyond the mirrored range: %w", err)
			return pr
		}
		c = compare(ranges, pr.Lost, src, tgt)
	}

	pr.SourceCount, pr.TargetCount = int64(len(src.recs)), int64(len(tgt.recs))
	pr.SourceDigest, pr.TargetDigest = src.sum(), tgt.sum()
	pr.Matched, pr.SourceRemoved, pr.TargetRemoved = c.matched, c.sourceRemoved, c.targetRemoved
	pr.Mismatches, pr.FirstMismatch = c.mismatches, c.first
	if pr.Mismatches == 0 && pr.SourceRemoved.Total() == 0 && pr.TargetRemoved.Total() == 0 && !pr.DigestsEqual() {
		// Every record paired and compared equal by fingerprint, yet the
		// full digests differ: trust the digests.
		pr.Mismatches = 1
		pr.FirstMismatch = &Mismatch{SourceOffset: -1, TargetOffset: -1, Reason: "digests differ although every record compared equal"}
	}
	return pr
}
