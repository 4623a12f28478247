package topics

import (
	"context"
	"errors"
	"maps"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/switchyard/switchyard/internal/kafkatest"
)

// The integration tests run on two kfake clusters by default and on the
// real-Kafka test bed with SWITCHYARD_TEST_KAFKA=real. Real clusters are
// shared: every test creates uniquely named topics and selects only those.

const testTimeout = 60 * time.Second

type bed struct {
	src, dst   *kafkatest.Cluster
	sadm, dadm *kadm.Client
}

func newBed(t *testing.T) *bed {
	t.Helper()
	src, dst := kafkatest.Pair(t)
	return &bed{src: src, dst: dst, sadm: kadm.NewClient(src.Client(t)), dadm: kadm.NewClient(dst.Client(t))}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// createTopic creates topic with configs and waits until it has leaders.
func createTopic(t *testing.T, c *kafkatest.Cluster, adm *kadm.Client, topic string, partitions int32, configs map[string]string) {
	t.Helper()
	ptrs := map[string]*string{}
	for k, v := range configs {
		ptrs[k] = kadm.StringPtr(v)
	}
	if _, err := adm.CreateTopic(testCtx(t), partitions, 1, ptrs, topic); err != nil {
		t.Fatalf("create %s on %s: %v", topic, c.Name, err)
	}
	if configs == nil {
		configs = map[string]string{}
	}
	settled(t, c, topic, int(partitions), configs)
}

// only returns the compiled selector of exactly these topics.
func only(t *testing.T, p Policy, topics ...string) *Selector {
	t.Helper()
	for _, topic := range topics {
		p.Include = append(p.Include, regexp.QuoteMeta(topic))
	}
	s, err := p.Compile()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (b *bed) sync(t *testing.T, sel *Selector, opts ...Opt) Report {
	t.Helper()
	rep, err := NewSyncer(b.sadm, b.dadm, sel, opts...).Sync(testCtx(t))
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}
	return rep
}

func result(t *testing.T, rep Report, source string) TopicResult {
	t.Helper()
	for _, r := range rep.Topics {
		if r.Source == source {
			return r
		}
	}
	t.Fatalf("no report entry for %s in %+v", source, rep.Topics)
	return TopicResult{}
}

func checkResult(t *testing.T, got, want TopicResult) {
	t.Helper()
	if got.Source != want.Source || got.Target != want.Target || got.Partitions != want.Partitions ||
		got.Created != want.Created || got.PartitionsAdded != want.PartitionsAdded ||
		!slices.Equal(got.ConfigsChanged, want.ConfigsChanged) || !errors.Is(got.Err, want.Err) || (want.Err == nil) != (got.Err == nil) {
		t.Fatalf("report entry\n got %+v\nwant %+v", got, want)
	}
}

// dynamicConfigs returns the topic-level overrides of topic.
func dynamicConfigs(t *testing.T, adm *kadm.Client, topic string) map[string]string {
	t.Helper()
	rcs, err := adm.DescribeTopicConfigs(testCtx(t), topic)
	if err != nil {
		t.Fatalf("describe configs of %s: %v", topic, err)
	}
	rc, err := rcs.On(topic, nil)
	if err == nil {
		err = rc.Err
	}
	if err != nil {
		t.Fatalf("describe configs of %s: %v", topic, err)
	}
	out := map[string]string{}
	for _, c := range rc.Configs {
		if c.Source == kmsg.ConfigSourceDynamicTopicConfig && c.Value != nil {
			out[c.Key] = *c.Value
		}
	}
	return out
}

// waitFor polls cond until it returns "" or the deadline passes.
func waitFor(t *testing.T, what string, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s", what, msg)
		}
		select {
		case <-t.Context().Done():
			t.Fatalf("%s: %s", what, msg)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// settled waits until every broker of c answers Metadata with topic at n
// partitions, all led, and DescribeConfigs with exactly the overrides in
// configs. Real brokers apply metadata changes asynchronously (Kafka 3.9
// lists a just-created topic on one broker well before another), and a
// Sync may ask any of them.
func settled(t *testing.T, c *kafkatest.Cluster, topic string, n int, configs map[string]string) {
	t.Helper()
	cl := c.Client(t)
	ctx := testCtx(t)
	md, err := kadm.NewClient(cl).BrokerMetadata(ctx)
	if err != nil {
		t.Fatalf("brokers of %s: %v", c.Name, err)
	}
	for _, b := range md.Brokers {
		br := cl.Broker(int(b.NodeID))
		waitFor(t, c.Name+" broker "+itoa(int(b.NodeID))+": "+topic, func() string {
			req := kmsg.NewPtrMetadataRequest()
			rt := kmsg.NewMetadataRequestTopic()
			rt.Topic = kmsg.StringPtr(topic)
			req.Topics = append(req.Topics, rt)
			resp, err := req.RequestWith(ctx, br)
			if err != nil {
				return err.Error()
			}
			if len(resp.Topics) != 1 || resp.Topics[0].ErrorCode != 0 || len(resp.Topics[0].Partitions) != n {
				return "metadata does not show " + itoa(n) + " partitions yet"
			}
			for _, p := range resp.Topics[0].Partitions {
				if p.Leader < 0 {
					return "partition without leader"
				}
			}
			dreq := kmsg.NewPtrDescribeConfigsRequest()
			rr := kmsg.NewDescribeConfigsRequestResource()
			rr.ResourceType = kmsg.ConfigResourceTypeTopic
			rr.ResourceName = topic
			dreq.Resources = append(dreq.Resources, rr)
			dresp, err := dreq.RequestWith(ctx, br)
			if err != nil {
				return err.Error()
			}
			got := map[string]string{}
			for _, r := range dresp.Resources {
				for _, c := range r.Configs {
					if c.Source == kmsg.ConfigSourceDynamicTopicConfig && c.Value != nil {
						got[c.Name] = *c.Value
					}
				}
			}
			if !maps.Equal(got, configs) {
				return "configs " + fmtMap(got) + ", want " + fmtMap(configs)
			}
			return ""
		})
	}
}

// partitions returns the topic's partition count from fresh metadata and
// its replica count, -1 if it does not exist.
func partitions(t *testing.T, adm *kadm.Client, topic string) (n, replicas int) {
	t.Helper()
	tds, err := adm.ListTopics(kadm.WithAuthorizedOps(testCtx(t)), topic)
	if err != nil {
		t.Fatalf("metadata of %s: %v", topic, err)
	}
	td, ok := tds[topic]
	if !ok || td.Err != nil {
		return -1, 0
	}
	for _, p := range td.Partitions {
		replicas = len(p.Replicas)
	}
	return len(td.Partitions), replicas
}

func TestSyncCreatesTopicWithAllowlistedConfigs(t *testing.T) {
	t.Parallel()
	b := newBed(t)
	topic := kafkatest.Topic(t, "topics-create")
	createTopic(t, b.src, b.sadm, topic, 3, map[string]string{
		"cleanup.policy":        "compact",
		"retention.ms":          "3600000",
		"max.message.bytes":     "2000000",
		"min.compaction.lag.ms": "1000",
		"segment.bytes":         "10485760",
		// Not on the allowlist: never copied.
		"min.insync.replicas":             "1",
		"unclean.leader.election.enable":  "true",
		"message.timestamp.before.max.ms": "86400000",
	})
	sel := only(t, Policy{}, topic)

	rep := b.sync(t, sel)
	checkResult(t, result(t, rep, topic), TopicResult{Source: topic, Target: topic, Partitions: 3, Created: true,
		ConfigsChanged: []string{"cleanup.policy", "max.message.bytes", "min.compaction.lag.ms", "retention.ms", "segment.bytes"}})
	if len(rep.Topics) != 1 {
		t.Fatalf("report has %d topics, want 1: %+v", len(rep.Topics), rep.Topics)
	}
	settled(t, b.dst, topic, 3, map[string]string{
		"cleanup.policy":        "compact",
		"retention.ms":          "3600000",
		"max.message.bytes":     "2000000",
		"min.compaction.lag.ms": "1000",
		"segment.bytes":         "10485760",
	})

	// Idempotent: nothing changed on the source, nothing to do.
	rep = b.sync(t, sel)
	checkResult(t, result(t, rep, topic), TopicResult{Source: topic, Target: topic, Partitions: 3})
	if err := rep.Err(); err != nil {
		t.Fatal(err)
	}
}

func TestSyncFollowsPartitionsAndConfigs(t *testing.T) {
	t.Parallel()
	b := newBed(t)
	topic := kafkatest.Topic(t, "topics-follow")
	createTopic(t, b.src, b.sadm, topic, 2, map[string]string{"retention.ms": "3600000", "min.compaction.lag.ms": "1000"})
	sel := only(t, Policy{}, topic)
	checkResult(t, result(t, b.sync(t, sel), topic), TopicResult{Source: topic, Target: topic, Partitions: 2, Created: true,
		ConfigsChanged: []string{"cleanup.policy", "min.compaction.lag.ms", "retention.ms"}})
	settled(t, b.dst, topic, 2, map[string]string{"cleanup.policy": "delete", "retention.ms": "3600000", "min.compaction.lag.ms": "1000"})

	// The source grows and its configs change.
	ctx := testCtx(t)
	if resps, err := b.sadm.UpdatePartitions(ctx, 5, topic); err != nil || resps[topic].Err != nil {
		t.Fatalf("add source partitions: %v %v", err, resps[topic].Err)
	}
	alter := []kadm.AlterConfig{
		{Op: kadm.SetConfig, Name: "retention.ms", Value: kadm.StringPtr("7200000")},
		{Op: kadm.DeleteConfig, Name: "min.compaction.lag.ms"},
		{Op: kadm.SetConfig, Name: "segment.ms", Value: kadm.StringPtr("600000")},
		{Op: kadm.SetConfig, Name: "unclean.leader.election.enable", Value: kadm.StringPtr("true")},
	}
	if resps, err := b.sadm.AlterTopicConfigs(ctx, alter, topic); err != nil || resps[0].Err != nil {
		t.Fatalf("alter source configs: %v %+v", err, resps)
	}
	settled(t, b.src, topic, 5, map[string]string{"retention.ms": "7200000", "segment.ms": "600000", "unclean.leader.election.enable": "true"})

	checkResult(t, result(t, b.sync(t, sel), topic), TopicResult{Source: topic, Target: topic, Partitions: 5, PartitionsAdded: 3,
		ConfigsChanged: []string{"min.compaction.lag.ms", "retention.ms", "segment.ms"}})
	settled(t, b.dst, topic, 5, map[string]string{"cleanup.policy": "delete", "retention.ms": "7200000", "segment.ms": "600000"})

	checkResult(t, result(t, b.sync(t, sel), topic), TopicResult{Source: topic, Target: topic, Partitions: 5})
}

func TestSyncInternalTopics(t *testing.T) {
	t.Parallel()
	b := newBed(t)
	ordinary := kafkatest.Topic(t, "topics-ordinary")
	internal := []string{
		kafkatest.Topic(t, "__switchyard-test"),
		kafkatest.Topic(t, "_confluent-test"),
		kafkatest.Topic(t, "topics-mm2") + ".internal",
	}
	for _, topic := range append([]string{ordinary}, internal...) {
		createTopic(t, b.src, b.sadm, topic, 1, nil)
	}

	// Selected by Include, but internal: skipped, and said so.
	rep := b.sync(t, only(t, Policy{}, append([]string{ordinary}, internal...)...))
	if len(rep.Topics) != 1 || rep.Topics[0].Source != ordinary {
		t.Fatalf("report topics %+v, want only %s", rep.Topics, ordinary)
	}
	for _, topic := range internal {
		if !slices.Contains(rep.SkippedInternal, topic) {
			t.Errorf("SkippedInternal %v lacks %s", rep.SkippedInternal, topic)
		}
		if n, _ := partitions(t, b.dadm, topic); n != -1 {
			t.Errorf("internal topic %s created on the target", topic)
		}
	}

	// Opted in by exact name: mirrored, without an Include match.
	rep = b.sync(t, only(t, Policy{IncludeInternal: internal[:2]}, ordinary))
	for _, topic := range internal[:2] {
		checkResult(t, result(t, rep, topic), TopicResult{Source: topic, Target: topic, Partitions: 1, Created: true,
			ConfigsChanged: []string{"cleanup.policy"}})
		settled(t, b.dst, topic, 1, map[string]string{"cleanup.policy": "delete"})
	}
	if slices.ContainsFunc(rep.Topics, func(r TopicResult) bool { return r.Source == internal[2] }) {
		t.Errorf("%s mirrored without opt-in", internal[2])
	}
}

func TestSyncPrefix(t *testing.T) {
	t.Parallel()
	b := newBed(t)
	topic := kafkatest.Topic(t, "topics-prefix")
	createTopic(t, b.src, b.sadm, topic, 2, map[string]string{"retention.ms": "3600000"})
	sel := only(t, Policy{Prefix: "dr."}, topic)

	rep := b.sync(t, sel, ReplicationFactor(1))
	checkResult(t, result(t, rep, topic), TopicResult{Source: topic, Target: "dr." + topic, Partitions: 2, Created: true,
		ConfigsChanged: []string{"cleanup.policy", "retention.ms"}})
	settled(t, b.dst, "dr."+topic, 2, map[string]string{"cleanup.policy": "delete", "retention.ms": "3600000"})
	if _, replicas := partitions(t, b.dadm, "dr."+topic); replicas != 1 {
		t.Errorf("target replicas %d, want 1", replicas)
	}
	if n, _ := partitions(t, b.dadm, topic); n != -1 {
		t.Errorf("identity-named %s created on the target too", topic)
	}
	checkResult(t, result(t, b.sync(t, sel), topic), TopicResult{Source: topic, Target: "dr." + topic, Partitions: 2})
}

func TestSyncRefusesConflictingTarget(t *testing.T) {
	t.Parallel()
	b := newBed(t)
	more := kafkatest.Topic(t, "topics-more")
	policy := kafkatest.Topic(t, "topics-policy")
	createTopic(t, b.src, b.sadm, more, 2, map[string]string{"retention.ms": "3600000"})
	createTopic(t, b.dst, b.dadm, more, 4, nil)
	createTopic(t, b.src, b.sadm, policy, 2, map[string]string{"cleanup.policy": "compact", "retention.ms": "3600000"})
	createTopic(t, b.dst, b.dadm, policy, 1, map[string]string{"cleanup.policy": "delete"})
	sel := only(t, Policy{}, more, policy)

	for range 2 { // reported again on every sync, never fixed silently
		rep := b.sync(t, sel)
		checkResult(t, result(t, rep, more), TopicResult{Source: more, Target: more, Partitions: 2, Err: ErrTargetHasMorePartitions})
		checkResult(t, result(t, rep, policy), TopicResult{Source: policy, Target: policy, Partitions: 2, Err: ErrCleanupPolicyConflict})
		if err := rep.Err(); !errors.Is(err, ErrTargetHasMorePartitions) || !errors.Is(err, ErrCleanupPolicyConflict) {
			t.Fatalf("Report.Err() = %v", err)
		}
		t.Logf("reported: %v", rep.Err())
	}
	// Left untouched: no partitions added, no configs copied.
	if n, _ := partitions(t, b.dadm, policy); n != 1 {
		t.Errorf("%s: target has %d partitions, want the untouched 1", policy, n)
	}
	if got := dynamicConfigs(t, b.dadm, more); len(got) != 0 {
		t.Errorf("%s: target configs changed to %v", more, got)
	}
}

func TestSyncInvalidOptions(t *testing.T) {
	sel, err := Policy{}.Compile()
	if err != nil {
		t.Fatal(err)
	}
	adm := kadm.NewClient(nil) // never used: Sync fails before any request
	for name, s := range map[string]*Syncer{
		"replication factor 0":  NewSyncer(adm, adm, sel, ReplicationFactor(0)),
		"replication factor -2": NewSyncer(adm, adm, sel, ReplicationFactor(-2)),
		"empty allowlist key":   NewSyncer(adm, adm, sel, ConfigAllowlist("retention.ms", "")),
		"nil selector":          NewSyncer(adm, adm, nil),
	} {
		if _, err := s.Sync(t.Context()); err == nil {
			t.Errorf("%s: Sync succeeded", name)
		}
	}
}
