package topics

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Opt configures a Syncer.
type Opt interface{ apply(*cfg) }

type opt func(*cfg)

func (o opt) apply(c *cfg) { o(c) }

type cfg struct {
	replicationFactor int16
	allowlist         []string
}

func defaultCfg() cfg {
	return cfg{replicationFactor: -1, allowlist: DefaultConfigAllowlist()}
}

func (c *cfg) validate() error {
	if c.replicationFactor == 0 || c.replicationFactor < -1 {
		return fmt.Errorf("replication factor %d: want -1 (the target broker's default) or a positive number", c.replicationFactor)
	}
	for _, k := range c.allowlist {
		if k == "" || k == "." {
			return fmt.Errorf("config allowlist: entry %q: want a config key or a prefix ending in '.'", k)
		}
	}
	return nil
}

// ReplicationFactor sets the replication factor of topics created on the
// target, overriding the default of -1 (the target broker's
// default.replication.factor).
func ReplicationFactor(n int16) Opt { return opt(func(c *cfg) { c.replicationFactor = n }) }

// ConfigAllowlist replaces DefaultConfigAllowlist: the topic config keys
// (and "prefix." entries) copied from source to target.
func ConfigAllowlist(keys ...string) Opt {
	return opt(func(c *cfg) { c.allowlist = slices.Clone(keys) })
}

// Syncer makes the target's topics match the selected source topics:
// existence, partition count and allowlisted configs. Sync may be called
// from several goroutines; calls run one at a time.
type Syncer struct {
	src, dst *kadm.Client
	sel      *Selector
	cfg      cfg
	allow    allowlist
	err      error // invalid options; every Sync returns it

	mu sync.Mutex // serializes Sync
}

// NewSyncer returns a Syncer that reads topics from src and creates and
// alters them on dst. It does not close the clients. Invalid options (or a
// nil selector) make every Sync return the error.
func NewSyncer(src, dst *kadm.Client, sel *Selector, opts ...Opt) *Syncer {
	c := defaultCfg()
	for _, o := range opts {
		o.apply(&c)
	}
	s := &Syncer{src: src, dst: dst, sel: sel, cfg: c, allow: newAllowlist(c.allowlist)}
	switch {
	case src == nil || dst == nil || sel == nil:
		s.err = errors.New("topic syncer: source client, target client and selector are required")
	default:
		if err := c.validate(); err != nil {
			s.err = fmt.Errorf("topic syncer: %w", err)
		}
	}
	return s
}

// Report says what one Sync did.
type Report struct {
	// Topics has one entry per selected source topic, sorted by source
	// name.
	Topics []TopicResult
	// SkippedInternal lists source topics not mirrored because they are
	// internal (see Internal); opt in with Policy.IncludeInternal.
	SkippedInternal []string
}

// TopicResult is what Sync did for one source topic.
type TopicResult struct {
	Source, Target string
	// Partitions is the source's partition count; unless Err is set, the
	// target has as many.
	Partitions int
	// Created is true if Sync created the target topic.
	Created bool
	// PartitionsAdded counts partitions Sync added to the target topic.
	PartitionsAdded int
	// ConfigsChanged lists, sorted, the config keys Sync set or removed
	// on the target topic (on creation, every key it set).
	ConfigsChanged []string
	// Err, if set, says why the target topic does not match the source;
	// the topic must not be copied. It is retried on the next Sync.
	Err error
}

// Err joins the per-topic errors, nil if every topic synced.
func (r Report) Err() error {
	var errs []error
	for _, t := range r.Topics {
		if t.Err != nil {
			errs = append(errs, t.Err)
		}
	}
	return errors.Join(errs...)
}

// Sync lists the source topics, selects them, and for each selected topic
// creates the target topic if it is missing (the source's partition count,
// the configured replication factor, the source's allowlisted topic-level
// configs and its cleanup.policy), adds partitions when the source has
// grown, and applies allowlisted config changes (set and removed
// topic-level overrides). A target with more partitions than the source,
// or with another cleanup.policy, is an error in that topic's entry and is
// left untouched. A second Sync with nothing changed on the source does
// nothing.
//
// The returned error is for failures of the whole sync (listing topics,
// describing configs); per-topic failures are in the Report. Sync blocks
// until done or ctx ends.
func (s *Syncer) Sync(ctx context.Context) (Report, error) {
	if s.err != nil {
		return Report{}, s.err
	}
	s.mu.Lock()
	defer s.mu.Unlock()

	// kadm answers Metadata from a cache for up to MetadataMinAge (5 s by
	// default), including "unknown topic" answers; a sync must see what
	// it just did. Asking for authorized operations makes kadm send a
	// fresh request.
	fresh := kadm.WithAuthorizedOps(ctx)

	srcTopics, err := s.src.ListTopicsWithInternal(fresh)
	if err != nil {
		return Report{}, fmt.Errorf("list source topics: %w", err)
	}
	var rep Report
	var ok []int // indexes into rep.Topics of topics without error so far
	for _, name := range srcTopics.Names() {
		td := srcTopics[name]
		if !s.sel.Selects(name) {
			if Internal(name) {
				rep.SkippedInternal = append(rep.SkippedInternal, name)
			}
			continue
		}
		res := TopicResult{Source: name, Target: s.sel.TargetName(name), Partitions: len(td.Partitions)}
		switch {
		case td.IsInternal:
			res.Err = fmt.Errorf("source topic %s: %w", name, ErrBrokerInternal)
		case td.Err != nil:
			res.Err = fmt.Errorf("source topic %s metadata: %w", name, td.Err)
		case len(td.Partitions) == 0:
			res.Err = fmt.Errorf("source topic %s: metadata lists no partitions", name)
		case len(res.Target) > maxTopicLen:
			res.Err = fmt.Errorf("target name %s: %d characters, Kafka allows %d: %w", res.Target, len(res.Target), maxTopicLen, ErrInvalidTargetName)
		case res.Target == "." || res.Target == "..":
			res.Err = fmt.Errorf("target name %q: %w", res.Target, ErrInvalidTargetName)
		default:
			ok = append(ok, len(rep.Topics))
		}
		rep.Topics = append(rep.Topics, res)
	}
	if len(ok) == 0 {
		return rep, nil
	}

	srcNames := make([]string, 0, len(ok))
	dstNames := make([]string, 0, len(ok))
	for _, i := range ok {
		srcNames = append(srcNames, rep.Topics[i].Source)
		dstNames = append(dstNames, rep.Topics[i].Target)
	}
	srcCfgs, err := describe(ctx, s.src, srcNames)
	if err != nil {
		return Report{}, fmt.Errorf("describe source topic configs: %w", err)
	}
	dstTopics, err := s.dst.ListTopicsWithInternal(fresh, dstNames...)
	if err != nil {
		return Report{}, fmt.Errorf("list target topics: %w", err)
	}
	var existing []string
	for _, name := range dstNames {
		if td, found := dstTopics[name]; found && td.Err == nil {
			existing = append(existing, name)
		}
	}
	dstCfgs, err := describe(ctx, s.dst, existing)
	if err != nil {
		return Report{}, fmt.Errorf("describe target topic configs: %w", err)
	}

	for _, i := range ok {
		res := &rep.Topics[i]
		rc, found := srcCfgs.byName[res.Source]
		switch {
		case !found:
			res.Err = fmt.Errorf("describe configs of source topic %s: no answer: %w", res.Source, srcCfgs.partial)
			continue
		case rc.Err != nil:
			res.Err = fmt.Errorf("describe configs of source topic %s: %w%s", res.Source, rc.Err, detail(rc.ErrMessage))
			continue
		}
		want := s.topicConfigs(rc)
		td, found := dstTopics[res.Target]
		switch {
		case !found || errors.Is(td.Err, kerr.UnknownTopicOrPartition):
			s.create(ctx, res, want)
		case td.Err != nil:
			res.Err = fmt.Errorf("target topic %s metadata: %w", res.Target, td.Err)
		default:
			trc, found := dstCfgs.byName[res.Target]
			switch {
			case !found:
				res.Err = fmt.Errorf("describe configs of target topic %s: no answer: %w", res.Target, dstCfgs.partial)
			case trc.Err != nil:
				res.Err = fmt.Errorf("describe configs of target topic %s: %w%s", res.Target, trc.Err, detail(trc.ErrMessage))
			default:
				s.reconcile(ctx, res, want, len(td.Partitions), s.topicConfigs(trc))
			}
		}
	}
	return rep, nil
}

// topicConfigs is what Sync compares of a topic's configs.
type topicConfigs struct {
	policy  string            // effective cleanup.policy, as the broker reports it
	dynamic map[string]string // allowlisted topic-level overrides, cleanup.policy aside
}

func (s *Syncer) topicConfigs(rc kadm.ResourceConfig) topicConfigs {
	tc := topicConfigs{policy: "delete", dynamic: map[string]string{}} // Kafka's default policy
	for _, c := range rc.Configs {
		if c.Value == nil || c.Sensitive {
			continue
		}
		switch {
		case c.Key == "cleanup.policy":
			tc.policy = *c.Value
		case c.Source == kmsg.ConfigSourceDynamicTopicConfig && s.allow.allows(c.Key):
			tc.dynamic[c.Key] = *c.Value
		}
	}
	return tc
}

// create creates the missing target topic. cleanup.policy is set
// explicitly even when the source only inherits it, so the target's
// broker default cannot make the two differ.
func (s *Syncer) create(ctx context.Context, res *TopicResult, want topicConfigs) {
	configs := make(map[string]*string, len(want.dynamic)+1)
	for k, v := range want.dynamic {
		configs[k] = kadm.StringPtr(v)
	}
	if s.allow.allows("cleanup.policy") {
		configs["cleanup.policy"] = kadm.StringPtr(want.policy)
	}
	resp, err := s.dst.CreateTopic(ctx, int32(res.Partitions), s.cfg.replicationFactor, configs, res.Target)
	switch {
	case errors.Is(err, kerr.TopicAlreadyExists):
		res.Err = fmt.Errorf("create target topic %s: %w", res.Target, ErrTargetNotVisible)
	case err != nil:
		res.Err = fmt.Errorf("create target topic %s with %d partitions: %w%s", res.Target, res.Partitions, err, detail(resp.ErrMessage))
	default:
		res.Created = true
		res.ConfigsChanged = slices.Sorted(maps.Keys(configs))
	}
}

// reconcile brings an existing target topic in line with the source.
func (s *Syncer) reconcile(ctx context.Context, res *TopicResult, want topicConfigs, partitions int, have topicConfigs) {
	if partitions > res.Partitions {
		res.Err = fmt.Errorf("target topic %s has %d partitions, source topic %s has %d: %w",
			res.Target, partitions, res.Source, res.Partitions, ErrTargetHasMorePartitions)
		return
	}
	if normPolicy(want.policy) != normPolicy(have.policy) {
		res.Err = fmt.Errorf("target topic %s has cleanup.policy=%q, source topic %s has %q: %w",
			res.Target, have.policy, res.Source, want.policy, ErrCleanupPolicyConflict)
		return
	}
	if partitions < res.Partitions {
		resps, err := s.dst.UpdatePartitions(ctx, res.Partitions, res.Target)
		if err == nil {
			r := resps[res.Target]
			if err = r.Err; err != nil {
				err = fmt.Errorf("%w%s", err, detail(r.ErrMessage))
			}
		}
		if err != nil {
			res.Err = fmt.Errorf("add partitions to target topic %s (%d → %d): %w", res.Target, partitions, res.Partitions, err)
			return
		}
		res.PartitionsAdded = res.Partitions - partitions
	}

	var alter []kadm.AlterConfig
	for _, k := range slices.Sorted(maps.Keys(want.dynamic)) {
		if v, set := have.dynamic[k]; !set || v != want.dynamic[k] {
			alter = append(alter, kadm.AlterConfig{Op: kadm.SetConfig, Name: k, Value: kadm.StringPtr(want.dynamic[k])})
		}
	}
	for _, k := range slices.Sorted(maps.Keys(have.dynamic)) {
		if _, set := want.dynamic[k]; !set {
			alter = append(alter, kadm.AlterConfig{Op: kadm.DeleteConfig, Name: k})
		}
	}
	if len(alter) == 0 {
		return
	}
	resps, err := s.dst.AlterTopicConfigs(ctx, alter, res.Target)
	if err == nil {
		for _, r := range resps {
			if r.Err != nil {
				err = fmt.Errorf("%w%s", r.Err, detail(r.ErrMessage))
				break
			}
		}
	}
	keys := make([]string, 0, len(alter))
	for _, a := range alter {
		keys = append(keys, a.Name)
	}
	slices.Sort(keys)
	if err != nil {
		res.Err = fmt.Errorf("alter configs %s of target topic %s: %w", strings.Join(keys, ","), res.Target, err)
		return
	}
	res.ConfigsChanged = keys
}

// described holds the answer to a DescribeConfigs of several topics.
type described struct {
	byName map[string]kadm.ResourceConfig
	// partial says why a topic may be missing from byName: kadm can answer
	// some topics and fail others (a *kadm.ShardErrors).
	partial error
}

// describe returns the topic configs of names. Only a request that
// answered nothing is an error.
func describe(ctx context.Context, cl *kadm.Client, names []string) (described, error) {
	d := described{byName: make(map[string]kadm.ResourceConfig, len(names))}
	if len(names) == 0 {
		return d, nil
	}
	rcs, err := cl.DescribeTopicConfigs(ctx, names...)
	if err != nil && len(rcs) == 0 {
		return described{}, err
	}
	for _, rc := range rcs {
		d.byName[rc.Name] = rc
	}
	d.partial = err
	if d.partial == nil {
		d.partial = errors.New("topic missing from the response")
	}
	return d, nil
}

// normPolicy makes cleanup.policy values comparable: "delete,compact" and
// "compact, delete" are the same policy.
func normPolicy(p string) string {
	var parts []string
	for f := range strings.SplitSeq(p, ",") {
		if f = strings.ToLower(strings.TrimSpace(f)); f != "" {
			parts = append(parts, f)
		}
	}
	slices.Sort(parts)
	return strings.Join(slices.Compact(parts), ",")
}

func detail(msg string) string {
	if msg == "" {
		return ""
	}
	return " (" + msg + ")"
}
