package mirror

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/switchyard/switchyard/internal/kafkatest"
	"github.com/switchyard/switchyard/mirror/topics"
)

// The ACL tests need clusters that enforce ACLs. On real Kafka that is the
// test bed, whose brokers run StandardAuthorizer with ANONYMOUS as super
// user and allow.everyone.if.no.acl.found (testbed/kafka.sh). kfake with
// EnableACLs denies every request of a principal that is not a super user,
// and only a SASL login makes one, so these tests start their own kfake
// pair with SASL (kafkatest.Pair's clusters stay open for the other tests).
//
// Real clusters are shared: every ACL here is on a resource whose name
// carries the test's unique base name, is removed when the test ends, and
// no test creates cluster or wildcard ACLs there — one would take away
// from every other principal what allow.everyone.if.no.acl.found gives.

const (
	aclTestAdmin, aclTestAdminPassword   = "admin", "admin-secret"
	aclTestWriter, aclTestWriterPassword = "writer", "writer-secret"
)

type aclBed struct {
	src, dst   *kafkatest.Cluster
	scl, dcl   *kgo.Client
	sadm, dadm *kadm.Client
	fake       bool
	base       string // unique prefix of every resource name of the test
}

func newACLBed(t *testing.T) *aclBed {
	t.Helper()
	b := &aclBed{base: kafkatest.Topic(t, "acl")}
	// kgo answers a listing of all topics from a cache younger than
	// MetadataMinAge (5 s by default): topics created by the test would
	// take that long to show.
	opts := []kgo.Opt{kgo.MetadataMinAge(50 * time.Millisecond)}
	if kafkatest.Backend() == kafkatest.BackendKfake {
		fakeOpts := []kfake.Opt{
			kfake.EnableACLs(),
			kfake.EnableSASL(),
			kfake.Superuser("PLAIN", aclTestAdmin, aclTestAdminPassword),
			// Not a super user: only what ACLs grant it.
			kfake.User("PLAIN", aclTestWriter, aclTestWriterPassword),
		}
		b.src = kafkatest.NewFake(t, "source", 3, fakeOpts...)
		b.dst = kafkatest.NewFake(t, "target", 2, fakeOpts...)
		b.fake = true
		opts = append(opts, aclTestLogin(aclTestAdmin, aclTestAdminPassword))
	} else {
		b.src, b.dst = kafkatest.Pair(t)
	}
	b.scl, b.dcl = b.src.Client(t, opts...), b.dst.Client(t, opts...)
	b.sadm, b.dadm = kadm.NewClient(b.scl), kadm.NewClient(b.dcl)
	for _, adm := range []*kadm.Client{b.sadm, b.dadm} {
		if _, err := describeAllACLs(aclTestCtx(t), adm); err != nil {
			t.Fatalf("the clusters must enforce ACLs: %v (a real test bed started by a testbed/kafka.sh older than its authorizer must be restarted)", err)
		}
	}
	t.Cleanup(func() { b.cleanup(t) })
	return b
}

func aclTestLogin(user, password string) kgo.Opt {
	return kgo.SASL(plain.Auth{User: user, Pass: password}.AsMechanism())
}

func aclTestCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// mine reports whether a binding belongs to this test: all of them on a
// private kfake pair, those naming the base on shared real clusters.
func (b *aclBed) mine(a ACLBinding) bool { return b.fake || strings.Contains(a.Name, b.base) }

// cleanup deletes this test's ACLs on both clusters (real ones outlive it).
func (b *aclBed) cleanup(t *testing.T) {
	if b.fake {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, adm := range []*kadm.Client{b.sadm, b.dadm} {
		all, err := describeAllACLs(ctx, adm)
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		for _, a := range all {
			if !b.mine(a) {
				continue
			}
			if _, err := adm.DeleteACLs(ctx, aclTestBuilder(a)); err != nil {
				t.Errorf("cleanup: delete %s: %v", a, err)
			}
		}
	}
}

// aclTestBuilder returns a builder that creates, or matches exactly, one
// binding.
func aclTestBuilder(a ACLBinding) *kadm.ACLBuilder {
	b := kadm.NewACLs().ResourcePatternType(a.Pattern).Operations(a.Operation)
	switch a.Type {
	case kmsg.ACLResourceTypeTopic:
		b.Topics(a.Name)
	case kmsg.ACLResourceTypeGroup:
		b.Groups(a.Name)
	case kmsg.ACLResourceTypeCluster:
		b.Clusters()
	case kmsg.ACLResourceTypeTransactionalId:
		b.TransactionalIDs(a.Name)
	}
	if a.Permission == kmsg.ACLPermissionTypeAllow {
		b.Allow(a.Principal).AllowHosts(a.Host).MaybeDeny().MaybeDenyHosts()
	} else {
		b.Deny(a.Principal).DenyHosts(a.Host).MaybeAllow().MaybeAllowHosts()
	}
	return b
}

// createACLs creates the bindings on a cluster and waits until it lists
// them all: Kafka applies ACLs asynchronously, and a sync that listed the
// source too early would miss some.
func (b *aclBed) createACLs(t *testing.T, cl *kgo.Client, acls []ACLBinding) {
	t.Helper()
	ctx := aclTestCtx(t)
	adm := kadm.NewClient(cl)
	for _, a := range acls {
		res, err := adm.CreateACLs(ctx, aclTestBuilder(a))
		if err == nil && len(res) != 1 {
			err = fmt.Errorf("%d results", len(res))
		}
		if err == nil {
			err = res[0].Err
		}
		if err != nil {
			t.Fatalf("create ACL %s: %v", a, err)
		}
	}
	b.waitACLs(t, cl, "setup", func(got []ACLBinding) bool {
		return !slices.ContainsFunc(acls, func(a ACLBinding) bool { return !slices.Contains(got, a) })
	})
}

// waitACLs polls until done accepts this test's ACLs as listed by every
// broker of the cluster. Every broker applies ACL changes from the
// metadata log on its own, so one broker listing a binding says nothing
// of the next (seen on Kafka 3.9.2: the sync's listing, sent to another
// broker, missed a binding the setup had just seen).
func (b *aclBed) waitACLs(t *testing.T, cl *kgo.Client, what string, done func([]ACLBinding) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for {
		perBroker, err := b.aclsPerBroker(ctx, cl)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if !slices.ContainsFunc(perBroker, func(got []ACLBinding) bool { return !done(got) }) {
			return
		}
		select {
		case <-ctx.Done():
			var seen strings.Builder
			for i, got := range perBroker {
				fmt.Fprintf(&seen, "broker %d of %d:\n%s", i+1, len(perBroker), aclList(got))
			}
			t.Fatalf("%s: ACLs not as expected within 30s; last seen:\n%s", what, seen.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// aclsPerBroker lists this test's ACLs on each broker of the cluster.
func (b *aclBed) aclsPerBroker(ctx context.Context, cl *kgo.Client) ([][]ACLBinding, error) {
	brokers, err := kadm.NewClient(cl).ListBrokers(ctx)
	if err != nil {
		return nil, fmt.Errorf("list brokers: %w", err)
	}
	var out [][]ACLBinding
	for _, br := range brokers {
		req := kmsg.NewPtrDescribeACLsRequest()
		req.ResourceType, req.ResourcePatternType = kmsg.ACLResourceTypeAny, kmsg.ACLResourcePatternTypeAny
		req.Operation, req.PermissionType = kmsg.ACLOperationAny, kmsg.ACLPermissionTypeAny
		resp, err := req.RequestWith(ctx, cl.Broker(int(br.NodeID)))
		if err == nil {
			err = kerr.ErrorForCode(resp.ErrorCode)
		}
		if err != nil {
			return nil, fmt.Errorf("describe ACLs on broker %d: %w", br.NodeID, err)
		}
		var got []ACLBinding
		for _, r := range resp.Resources {
			for _, a := range r.ACLs {
				ab := ACLBinding{Type: r.ResourceType, Name: r.ResourceName, Pattern: r.ResourcePatternType,
					Principal: a.Principal, Host: a.Host, Operation: a.Operation, Permission: a.PermissionType}
				if b.mine(ab) {
					got = append(got, ab)
				}
			}
		}
		slices.SortFunc(got, compareACLBindings)
		out = append(out, got)
	}
	return out, nil
}

// createTopics creates topics on a cluster and waits until a listing of
// all topics shows them, as the prefix matching of SyncACLs lists them.
func (b *aclBed) createTopics(t *testing.T, adm *kadm.Client, names ...string) {
	t.Helper()
	ctx := aclTestCtx(t)
	for _, topic := range names {
		if _, err := adm.CreateTopic(ctx, 1, 1, nil, topic); err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			t.Fatalf("create topic %s: %v", topic, err)
		}
	}
	for {
		td, err := adm.ListTopics(ctx)
		if err == nil && !slices.ContainsFunc(names, func(topic string) bool {
			d, ok := td[topic]
			return !ok || d.Err != nil || len(d.Partitions) != 1 || d.Partitions[0].Leader < 0
		}) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("topics %v not all listed within 60s (last error %v)", names, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// commitGroup gives the group a committed offset on the source, so that a
// listing of groups shows it. The group's coordinator may learn of a topic
// just created later than the broker that listed it: it answers
// UNKNOWN_TOPIC_OR_PARTITION meanwhile.
func (b *aclBed) commitGroup(t *testing.T, group, topic string) {
	t.Helper()
	ctx := aclTestCtx(t)
	offs := kadm.Offsets{}
	offs.Add(kadm.Offset{Topic: topic, Partition: 0, At: 0, LeaderEpoch: -1})
	for {
		resp, err := b.sadm.CommitOffsets(ctx, group, offs)
		if err == nil {
			err = resp.Error()
		}
		if err == nil {
			return
		}
		if !errors.Is(err, kerr.UnknownTopicOrPartition) || ctx.Err() != nil {
			t.Fatalf("commit offsets of group %s: %v", group, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (b *aclBed) sync(t *testing.T, sel *topics.Selector, groups func(string) bool, opts ACLOptions) ACLReport {
	t.Helper()
	rep, err := SyncACLs(aclTestCtx(t), b.sadm, b.dadm, sel, groups, opts)
	if err != nil {
		t.Fatalf("SyncACLs: %v", err)
	}
	if err := rep.Err(); err != nil {
		t.Fatalf("SyncACLs report has errors: %v", err)
	}
	return rep
}

func aclSelector(t *testing.T, p topics.Policy, names ...string) *topics.Selector {
	t.Helper()
	for _, n := range names {
		p.Include = append(p.Include, regexp.QuoteMeta(n))
	}
	sel, err := p.Compile()
	if err != nil {
		t.Fatal(err)
	}
	return sel
}

// want is the expected report entry of one source binding.
type aclWant struct {
	src     ACLBinding
	outcome ACLOutcome
	target  ACLBinding // zero unless copied
	reason  string
}

// checkReport compares the report entries of this test's bindings with
// want, exactly: same bindings, outcomes, targets and reasons.
func (b *aclBed) checkReport(t *testing.T, rep ACLReport, want []aclWant) {
	t.Helper()
	got := map[ACLBinding]ACLResult{}
	for _, r := range rep.Bindings {
		if b.mine(r.Source) {
			got[r.Source] = r
		}
	}
	var diffs []string
	for _, w := range want {
		r, ok := got[w.src]
		delete(got, w.src)
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("missing from the report: %s", w.src))
		case r.Outcome != w.outcome || r.Target != w.target || r.Reason != w.reason || r.Err != nil:
			diffs = append(diffs, fmt.Sprintf("%s:\n   got %s → %s (%s, err %v)\n  want %s → %s (%s)",
				w.src, r.Outcome, r.Target, r.Reason, r.Err, w.outcome, w.target, w.reason))
		}
	}
	for _, r := range got {
		diffs = append(diffs, fmt.Sprintf("unexpected in the report: %s → %s %s", r.Source, r.Outcome, r.Target))
	}
	if len(diffs) > 0 {
		t.Fatalf("report:\n%s", strings.Join(diffs, "\n"))
	}
}

// checkTarget waits until the target's bindings of this test are exactly
// want (no more, no fewer).
func (b *aclBed) checkTarget(t *testing.T, want []ACLBinding) {
	t.Helper()
	want = slices.Clone(want)
	slices.SortFunc(want, compareACLBindings)
	b.waitACLs(t, b.dcl, "target, want exactly:\n"+aclList(want), func(got []ACLBinding) bool {
		return slices.Equal(got, want)
	})
}

func aclList(acls []ACLBinding) string {
	var s strings.Builder
	for _, a := range acls {
		fmt.Fprintf(&s, "  %s\n", a)
	}
	return s.String()
}

func aclTopic(name string, pattern kmsg.ACLResourcePatternType, perm kmsg.ACLPermissionType, principal, host string, op kmsg.ACLOperation) ACLBinding {
	return ACLBinding{Type: kmsg.ACLResourceTypeTopic, Name: name, Pattern: pattern, Principal: principal, Host: host, Operation: op, Permission: perm}
}

func aclGroup(name string, pattern kmsg.ACLResourcePatternType, perm kmsg.ACLPermissionType, principal, host string, op kmsg.ACLOperation) ACLBinding {
	a := aclTopic(name, pattern, perm, principal, host, op)
	a.Type = kmsg.ACLResourceTypeGroup
	return a
}

const (
	aclLit   = kmsg.ACLResourcePatternTypeLiteral
	aclPfx   = kmsg.ACLResourcePatternTypePrefixed
	aclAllow = kmsg.ACLPermissionTypeAllow
	aclDeny  = kmsg.ACLPermissionTypeDeny
)

// aclCase is the source ACL set shared by the identity and prefix tests:
// bindings on a selected topic with WRITE, READ, ALL and DENY, on an
// unselected topic, prefixed topic bindings covering a selected and an
// unselected topic, group bindings (literal and aclPfx) of selected and
// unselected groups, and a transactional-id binding (out of scope). The
// writer principal is the kfake user that is not a super user.
type aclCase struct {
	selTopic, otherTopic, selGroup, otherGroup string

	topicWrite, topicRead, topicAll, topicDeny, topicDenyHost, otherTopicWrite  ACLBinding
	prefixSel, prefixOther, groupRead, groupDeny, otherGroupRead, groupPrefixed ACLBinding
	otherGroupPrefixed, txn                                                     ACLBinding
	selectGroup                                                                 func(string) bool
}

func (b *aclBed) setupCase(t *testing.T) aclCase {
	t.Helper()
	writer := "User:" + aclTestWriter
	c := aclCase{
		selTopic:   b.base + "-orders",
		otherTopic: b.base + "-secret",
		selGroup:   b.base + "-app-1",
		otherGroup: b.base + "-other",
	}
	c.topicWrite = aclTopic(c.selTopic, aclLit, aclAllow, writer, "*", kmsg.ACLOperationWrite)
	c.topicRead = aclTopic(c.selTopic, aclLit, aclAllow, "User:reader", "10.1.2.3", kmsg.ACLOperationRead)
	c.topicAll = aclTopic(c.selTopic, aclLit, aclAllow, "User:owner", "*", kmsg.ACLOperationAll)
	c.topicDeny = aclTopic(c.selTopic, aclLit, aclDeny, "User:mallory", "*", kmsg.ACLOperationRead)
	c.topicDenyHost = aclTopic(c.selTopic, aclLit, aclDeny, writer, "10.9.9.9", kmsg.ACLOperationWrite)
	c.otherTopicWrite = aclTopic(c.otherTopic, aclLit, aclAllow, writer, "*", kmsg.ACLOperationWrite)
	c.prefixSel = aclTopic(b.base+"-ord", aclPfx, aclAllow, "User:reader", "*", kmsg.ACLOperationDescribe)
	c.prefixOther = aclTopic(b.base+"-sec", aclPfx, aclAllow, "User:reader", "*", kmsg.ACLOperationRead)
	c.groupRead = aclGroup(c.selGroup, aclLit, aclAllow, "User:reader", "*", kmsg.ACLOperationRead)
	c.groupDeny = aclGroup(c.selGroup, aclLit, aclDeny, "User:mallory", "*", kmsg.ACLOperationAll)
	c.otherGroupRead = aclGroup(c.otherGroup, aclLit, aclAllow, "User:reader", "*", kmsg.ACLOperationRead)
	c.groupPrefixed = aclGroup(b.base+"-app-", aclPfx, aclAllow, "User:reader", "*", kmsg.ACLOperationDelete)
	c.otherGroupPrefixed = aclGroup(b.base+"-oth", aclPfx, aclAllow, "User:reader", "*", kmsg.ACLOperationRead)
	c.txn = ACLBinding{Type: kmsg.ACLResourceTypeTransactionalId, Name: b.base + "-txn", Pattern: aclLit,
		Principal: writer, Host: "*", Operation: kmsg.ACLOperationWrite, Permission: aclAllow}
	appGroups := regexp.MustCompile("^" + regexp.QuoteMeta(b.base+"-app-") + ".*$")
	c.selectGroup = appGroups.MatchString

	// The prefixed ACLs are copied only if they cover a selected source
	// topic or group as listed: both topics and one group of each kind exist.
	b.createTopics(t, b.sadm, c.selTopic, c.otherTopic)
	b.commitGroup(t, c.selGroup, c.selTopic)
	b.commitGroup(t, c.otherGroup+"-x", c.otherTopic)
	b.createACLs(t, b.scl, []ACLBinding{c.topicWrite, c.topicRead, c.topicAll, c.topicDeny, c.topicDenyHost,
		c.otherTopicWrite, c.prefixSel, c.prefixOther, c.groupRead, c.groupDeny, c.otherGroupRead,
		c.groupPrefixed, c.otherGroupPrefixed, c.txn})
	return c
}

// TestSyncACLsCopiesExactly: every binding in scope arrives on the target
// unchanged — WRITE, READ, ALL, DENY, principal and host — and nothing
// else; a second sync creates nothing. On kfake, the copied WRITE is also
// shown to be enforced: a principal that is not a super user may produce
// to the target topic only after the sync.
func TestSyncACLsCopiesExactly(t *testing.T) {
	b := newACLBed(t)
	c := b.setupCase(t)
	sel := aclSelector(t, topics.Policy{}, c.selTopic)

	var extra []aclWant
	if b.fake {
		// Out of scope whatever the selection; not created on shared
		// real clusters (see the top of this file).
		cluster := ACLBinding{Type: kmsg.ACLResourceTypeCluster, Name: "kafka-cluster", Pattern: aclLit,
			Principal: "User:" + aclTestWriter, Host: "*", Operation: kmsg.ACLOperationIdempotentWrite, Permission: aclAllow}
		wildTopic := aclTopic("*", aclLit, aclAllow, "User:reader", "*", kmsg.ACLOperationDescribe)
		wildGroup := aclGroup("*", aclLit, aclDeny, "User:mallory", "*", kmsg.ACLOperationRead)
		b.createACLs(t, b.scl, []ACLBinding{cluster, wildTopic, wildGroup})
		extra = []aclWant{
			{src: cluster, outcome: ACLSkipped, reason: aclReasonCluster},
			{src: wildTopic, outcome: ACLSkipped, reason: aclReasonWildcard},
			{src: wildGroup, outcome: ACLSkipped, reason: aclReasonWildcard},
		}
		b.createTopics(t, b.dadm, c.selTopic)
		if err := aclTestProduce(t, b.dst, c.selTopic); !errors.Is(err, kerr.TopicAuthorizationFailed) && !errors.Is(err, kerr.ClusterAuthorizationFailed) {
			t.Fatalf("produce as %s before the sync: got %v, want an authorization error", aclTestWriter, err)
		}
	}

	copied := []ACLBinding{c.topicWrite, c.topicRead, c.topicAll, c.topicDeny, c.topicDenyHost, c.prefixSel,
		c.groupRead, c.groupDeny, c.groupPrefixed}
	want := append([]aclWant{
		{src: c.otherTopicWrite, outcome: ACLSkipped, reason: aclReasonTopicNotSelected},
		{src: c.prefixOther, outcome: ACLSkipped, reason: aclReasonNoSelectedTopic},
		{src: c.otherGroupRead, outcome: ACLSkipped, reason: aclReasonGroupNotSelected},
		{src: c.otherGroupPrefixed, outcome: ACLSkipped, reason: aclReasonNoSelectedGroup},
		{src: c.txn, outcome: ACLSkipped, reason: aclReasonTransactionalID},
	}, extra...)
	first := slices.Clone(want)
	for _, a := range copied {
		first = append(first, aclWant{src: a, outcome: ACLCreated, target: a})
	}
	b.checkReport(t, b.sync(t, sel, c.selectGroup, ACLOptions{}), first)
	b.checkTarget(t, copied)

	// Idempotent: everything is there, nothing is created again.
	second := slices.Clone(want)
	for _, a := range copied {
		second = append(second, aclWant{src: a, outcome: ACLPresent, target: a})
	}
	b.checkReport(t, b.sync(t, sel, c.selectGroup, ACLOptions{}), second)
	b.checkTarget(t, copied)

	if b.fake {
		if err := aclTestProduce(t, b.dst, c.selTopic); err != nil {
			t.Fatalf("produce as %s after the sync copied its WRITE: %v", aclTestWriter, err)
		}
	}
}

// aclTestProduce produces one record as the writer (a kfake user that is
// not a super user).
func aclTestProduce(t *testing.T, c *kafkatest.Cluster, topic string) error {
	t.Helper()
	cl := c.Client(t, aclTestLogin(aclTestWriter, aclTestWriterPassword), kgo.RecordRetries(1),
		kgo.RequestRetries(1), kgo.RecordDeliveryTimeout(10*time.Second))
	return cl.ProduceSync(aclTestCtx(t), &kgo.Record{Topic: topic, Value: []byte("v")}).FirstErr()
}

// TestSyncACLsTranslatesPrefixedNames: under a prefix naming policy, topic
// ACL names are translated — a literal name to the target topic's name, a
// prefix to the policy prefix followed by it — while group ACLs keep
// their names and a topic wildcard, which cannot be translated, is
// skipped even when wildcards are opted in.
func TestSyncACLsTranslatesPrefixedNames(t *testing.T) {
	b := newACLBed(t)
	c := b.setupCase(t)
	const policyPrefix = "src."
	sel := aclSelector(t, topics.Policy{Prefix: policyPrefix}, c.selTopic)
	renamed := func(a ACLBinding) ACLBinding {
		a.Name = policyPrefix + a.Name
		return a
	}

	want := []aclWant{
		{src: c.otherTopicWrite, outcome: ACLSkipped, reason: aclReasonTopicNotSelected},
		{src: c.prefixOther, outcome: ACLSkipped, reason: aclReasonNoSelectedTopic},
		{src: c.otherGroupRead, outcome: ACLSkipped, reason: aclReasonGroupNotSelected},
		{src: c.otherGroupPrefixed, outcome: ACLSkipped, reason: aclReasonNoSelectedGroup},
		{src: c.txn, outcome: ACLSkipped, reason: aclReasonTransactionalID},
	}
	var targets []ACLBinding
	for _, a := range []ACLBinding{c.topicWrite, c.topicRead, c.topicAll, c.topicDeny, c.topicDenyHost, c.prefixSel} {
		want = append(want, aclWant{src: a, outcome: ACLCreated, target: renamed(a)})
		targets = append(targets, renamed(a))
	}
	for _, a := range []ACLBinding{c.groupRead, c.groupDeny, c.groupPrefixed} {
		want = append(want, aclWant{src: a, outcome: ACLCreated, target: a})
		targets = append(targets, a)
	}
	opts := ACLOptions{}
	if b.fake {
		wildTopic := aclTopic("*", aclLit, aclAllow, "User:reader", "*", kmsg.ACLOperationDescribe)
		wildGroup := aclGroup("*", aclLit, aclAllow, "User:reader", "*", kmsg.ACLOperationDescribe)
		b.createACLs(t, b.scl, []ACLBinding{wildTopic, wildGroup})
		opts.Wildcards = true
		want = append(want,
			aclWant{src: wildTopic, outcome: ACLSkipped, reason: aclReasonWildcardRenamed},
			aclWant{src: wildGroup, outcome: ACLCreated, target: wildGroup})
		targets = append(targets, wildGroup)
	}
	b.checkReport(t, b.sync(t, sel, c.selectGroup, opts), want)
	b.checkTarget(t, targets)
}

// TestSyncACLsWildcardsOptIn: wildcard ACLs are skipped by default and
// copied as they are with ACLOptions.Wildcards under identity naming. kfake
// only: a wildcard ACL on the shared real clusters would apply to every
// other test.
func TestSyncACLsWildcardsOptIn(t *testing.T) {
	b := newACLBed(t)
	if !b.fake {
		t.Skip("wildcard ACLs would apply to every test sharing the real clusters")
	}
	wildTopic := aclTopic("*", aclLit, aclAllow, "User:reader", "*", kmsg.ACLOperationRead)
	wildGroup := aclGroup("*", aclLit, aclDeny, "User:mallory", "*", kmsg.ACLOperationAll)
	b.createACLs(t, b.scl, []ACLBinding{wildTopic, wildGroup})
	sel := aclSelector(t, topics.Policy{})
	b.checkReport(t, b.sync(t, sel, nil, ACLOptions{}), []aclWant{
		{src: wildTopic, outcome: ACLSkipped, reason: aclReasonWildcard},
		{src: wildGroup, outcome: ACLSkipped, reason: aclReasonWildcard},
	})
	b.checkTarget(t, nil)
	b.checkReport(t, b.sync(t, sel, nil, ACLOptions{Wildcards: true}), []aclWant{
		{src: wildTopic, outcome: ACLCreated, target: wildTopic},
		{src: wildGroup, outcome: ACLCreated, target: wildGroup},
	})
	b.checkTarget(t, []ACLBinding{wildTopic, wildGroup})
}

// plainFakePair returns two kfake clusters without ACL enforcement, and
// admin clients for them: kfake stores and lists ACLs all the same, which
// is enough for tests that inject failures (kfake faults, whatever the
// backend).
func plainFakePair(t *testing.T) (src, dst *kafkatest.Cluster, sadm, dadm *kadm.Client) {
	t.Helper()
	src, dst = kafkatest.NewFake(t, "source", 1), kafkatest.NewFake(t, "target", 1)
	return src, dst, kadm.NewClient(src.Client(t)), kadm.NewClient(dst.Client(t))
}

// TestSyncACLsNoAuthorizer: a cluster without an authorizer answers
// SECURITY_DISABLED, and SyncACLs says so, naming the cluster, rather than
// reporting nothing to copy. kfake lists ACLs even without EnableACLs, so
// the answer is injected.
func TestSyncACLsNoAuthorizer(t *testing.T) {
	for _, side := range []string{"source", "target"} {
		t.Run(side, func(t *testing.T) {
			src, dst, sadm, dadm := plainFakePair(t)
			// An ACL in scope, so that the target is consulted too.
			topic := kafkatest.Topic(t, "acl")
			if _, err := sadm.CreateACLs(aclTestCtx(t), aclTestBuilder(aclTopic(topic, aclLit, aclAllow, "User:reader", "*", kmsg.ACLOperationRead))); err != nil {
				t.Fatal(err)
			}
			disabled := src.Fake
			if side == "target" {
				disabled = dst.Fake
			}
			disabled.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.DescribeACLs}, TopLevel: true, Err: kerr.SecurityDisabled, Count: -1})
			_, err := SyncACLs(aclTestCtx(t), sadm, dadm, aclSelector(t, topics.Policy{}, topic), nil, ACLOptions{})
			if !errors.Is(err, ErrNoAuthorizer) || !errors.Is(err, kerr.SecurityDisabled) || !strings.Contains(err.Error(), side) {
				t.Fatalf("SyncACLs with no authorizer on the %s: got %v, want ErrNoAuthorizer naming the %s", side, err, side)
			}
		})
	}
}

// TestSyncACLsReportsFailuresPerBinding: a creation the target refuses,
// and a prefixed group ACL whose groups cannot be listed, are errors of
// their bindings only; the rest is synced, and a later run completes it.
func TestSyncACLsReportsFailuresPerBinding(t *testing.T) {
	src, dst, sadm, dadm := plainFakePair(t)
	base := kafkatest.Topic(t, "acl")
	refused := aclTopic(base+"-a", aclLit, aclAllow, "User:writer", "*", kmsg.ACLOperationWrite)
	accepted := aclTopic(base+"-b", aclLit, aclAllow, "User:writer", "*", kmsg.ACLOperationWrite)
	group := aclGroup(base+"-g", aclLit, aclAllow, "User:reader", "*", kmsg.ACLOperationRead)
	groupPrefix := aclGroup(base+"-g", aclPfx, aclAllow, "User:reader", "*", kmsg.ACLOperationRead)
	for _, a := range []ACLBinding{refused, accepted, group, groupPrefix} {
		if _, err := sadm.CreateACLs(aclTestCtx(t), aclTestBuilder(a)); err != nil {
			t.Fatal(err)
		}
	}
	sel := aclSelector(t, topics.Policy{}, refused.Name, accepted.Name)
	groups := func(g string) bool { return strings.HasPrefix(g, base+"-g") }

	refuse := dst.Fake.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.CreateACLs}, Resource: refused.Name, Err: kerr.PolicyViolation, Count: -1})
	unlisted := src.Fake.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.ListGroups}, Err: kerr.ClusterAuthorizationFailed, Count: -1})
	rep, err := SyncACLs(aclTestCtx(t), sadm, dadm, sel, groups, ACLOptions{})
	if err != nil {
		t.Fatalf("SyncACLs: %v", err)
	}
	byBinding := map[ACLBinding]ACLResult{}
	for _, r := range rep.Bindings {
		byBinding[r.Source] = r
	}
	if r := byBinding[refused]; r.Outcome != ACLError || !errors.Is(r.Err, kerr.PolicyViolation) {
		t.Errorf("refused creation: got %s (%v), want error POLICY_VIOLATION", r.Outcome, r.Err)
	}
	if r := byBinding[groupPrefix]; r.Outcome != ACLError || !errors.Is(r.Err, kerr.ClusterAuthorizationFailed) || r.Target != (ACLBinding{}) {
		t.Errorf("prefixed group ACL with groups unlisted: got %s → %s (%v), want error CLUSTER_AUTHORIZATION_FAILED", r.Outcome, r.Target, r.Err)
	}
	for _, a := range []ACLBinding{accepted, group} {
		if r := byBinding[a]; r.Outcome != ACLCreated || r.Err != nil {
			t.Errorf("%s: got %s (%v), want created", a, r.Outcome, r.Err)
		}
	}
	if err := rep.Err(); err == nil || !strings.Contains(err.Error(), refused.Name) || !strings.Contains(err.Error(), groupPrefix.Name) {
		t.Errorf("report error: got %v, want one naming both failed bindings", err)
	}
	if t.Failed() {
		t.FailNow()
	}

	refuse.Remove()
	unlisted.Remove()
	// A group under the prefix now exists, so the prefixed ACL is in scope.
	src.CreateTopic(t, accepted.Name, 1)
	offs := kadm.Offsets{}
	offs.Add(kadm.Offset{Topic: accepted.Name, Partition: 0, At: 0, LeaderEpoch: -1})
	if resp, err := sadm.CommitOffsets(aclTestCtx(t), base+"-g-1", offs); err != nil || resp.Error() != nil {
		t.Fatalf("commit offsets: %v %v", err, resp.Error())
	}
	rep, err = SyncACLs(aclTestCtx(t), sadm, dadm, sel, groups, ACLOptions{})
	if err != nil || rep.Err() != nil {
		t.Fatalf("second SyncACLs: %v %v", err, rep.Err())
	}
	want := map[ACLBinding]ACLOutcome{refused: ACLCreated, accepted: ACLPresent, group: ACLPresent, groupPrefix: ACLCreated}
	for _, r := range rep.Bindings {
		if r.Outcome != want[r.Source] || r.Target != r.Source {
			t.Errorf("second sync: %s: got %s → %s, want %s", r.Source, r.Outcome, r.Target, want[r.Source])
		}
	}
	if len(rep.Bindings) != len(want) {
		t.Errorf("second sync: %d bindings reported, want %d", len(rep.Bindings), len(want))
	}
}

// TestSyncACLsRejectsMissingArguments: no panic on nil clients or selector.
func TestSyncACLsRejectsMissingArguments(t *testing.T) {
	if _, err := SyncACLs(t.Context(), nil, nil, nil, nil, ACLOptions{}); err == nil {
		t.Fatal("SyncACLs with nil arguments: got no error")
	}
}

// TestMirrorSyncsACLs: a mirror with acls on creates the source's ACLs of
// the topics it mirrors on the target, and reports it in Status.
func TestMirrorSyncsACLs(t *testing.T) {
	b := newACLBed(t)
	topic, other := b.base+"-orders", b.base+"-secret"
	write := aclTopic(topic, aclLit, aclAllow, "User:"+aclTestWriter, "*", kmsg.ACLOperationWrite)
	b.createTopics(t, b.sadm, topic, other)
	b.createACLs(t, b.scl, []ACLBinding{write, aclTopic(other, aclLit, aclAllow, "User:"+aclTestWriter, "*", kmsg.ACLOperationWrite)})

	cfg := DefaultConfig()
	cfg.Name = kafkatest.Topic(t, "m")
	cfg.SourceBootstrap, cfg.TargetBootstrap = b.src.Bootstrap, b.dst.Bootstrap
	cfg.Topics = topics.Policy{Include: []string{regexp.QuoteMeta(topic)}}
	cfg.ACLs = true
	var opts []kgo.Opt
	if b.fake {
		opts = append(opts, aclTestLogin(aclTestAdmin, aclTestAdminPassword))
	}
	mr, err := New(cfg, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)), prometheus.NewRegistry(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mr.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("mirror run: %v", err)
		}
	}()
	b.waitACLs(t, b.dcl, "the mirrored topic's ACL on the target", func(got []ACLBinding) bool {
		return len(got) == 1 && got[0] == write // the other topic's ACL stays behind
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := mr.Status()
		if st.ACLs != nil && st.ACLs.Created+st.ACLs.Present >= 1 {
			if st.ACLs.Errors != 0 || st.ACLs.LastError != "" {
				t.Errorf("ACL sync errors in status: %+v", st.ACLs)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never showed the ACL sync: %+v", st.ACLs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
