package mirror

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"golang.org/x/sync/errgroup"

	"github.com/switchyard/switchyard/mirror/topics"
)

// ACL sync copies the source's access rules for the mirrored topics and
// groups to the target, so that applications moved to the target are
// allowed — and denied — exactly what they were on the source. Unlike
// MirrorMaker 2, which copies only literal topic ACLs, leaves out ALLOW
// WRITE and turns ALL into READ (its target topics are read-only
// replicas), a migration needs the producers' rights too: every binding is
// copied as it is, whatever its operation and permission, with principal
// and host unchanged.

// ErrNoAuthorizer: a cluster answered SECURITY_DISABLED, it runs without an
// authorizer. The source then has no ACLs to copy, and the target could not
// enforce any; ACL sync is for clusters that both enforce ACLs.
var ErrNoAuthorizer = errors.New("cluster has no authorizer: set authorizer.class.name on its brokers, or leave ACL sync off")

// ACLOptions tunes SyncACLs; the zero value is the default.
type ACLOptions struct {
	// Wildcards also copies ACLs on the literal resource name "*" for
	// topics and groups. Off by default: such an ACL grants (or denies)
	// on every topic or group of the target, not only the mirrored ones.
	// Under a prefix naming policy a topic wildcard is never copied, since
	// "*" on the target would also cover the target's own topics.
	Wildcards bool
}

// ACLBinding is one ACL: who (principal, host) may or may not (permission)
// do what (operation) on which resources (type, name, pattern).
type ACLBinding struct {
	Type       kmsg.ACLResourceType
	Name       string
	Pattern    kmsg.ACLResourcePatternType
	Principal  string
	Host       string
	Operation  kmsg.ACLOperation
	Permission kmsg.ACLPermissionType
}

func (b ACLBinding) String() string {
	return fmt.Sprintf("%s %s@%s %s on %s %s %q", b.Permission, b.Principal, b.Host, b.Operation, b.Pattern, b.Type, b.Name)
}

func compareACLBindings(a, b ACLBinding) int {
	return cmp.Or(cmp.Compare(a.Type, b.Type), cmp.Compare(a.Name, b.Name), cmp.Compare(a.Pattern, b.Pattern),
		cmp.Compare(a.Principal, b.Principal), cmp.Compare(a.Host, b.Host),
		cmp.Compare(a.Operation, b.Operation), cmp.Compare(a.Permission, b.Permission))
}

// ACLOutcome says what SyncACLs did with one source binding.
type ACLOutcome string

// Outcomes of ACLResult.
const (
	ACLCreated ACLOutcome = "created" // missing on the target, created
	ACLPresent ACLOutcome = "present" // already on the target, nothing done
	ACLSkipped ACLOutcome = "skipped" // not in scope; Reason says why
	ACLError   ACLOutcome = "error"   // in scope but not created; Err says why
)

// ACLResult is the outcome for one binding of the source.
type ACLResult struct {
	Source ACLBinding
	// Target is the binding wanted on the target: Source with the topic
	// name or prefix translated by the naming policy. Zero when skipped.
	Target  ACLBinding
	Outcome ACLOutcome
	Reason  string // for ACLSkipped
	Err     error  // for ACLError
}

// ACLReport lists every ACL binding of the source, sorted, with what
// SyncACLs did with it.
type ACLReport struct {
	Bindings []ACLResult
}

// Count returns how many bindings had the outcome.
func (r ACLReport) Count(o ACLOutcome) int {
	n := 0
	for _, b := range r.Bindings {
		if b.Outcome == o {
			n++
		}
	}
	return n
}

// Err joins the errors of the bindings that could not be created.
func (r ACLReport) Err() error {
	var errs []error
	for _, b := range r.Bindings {
		if b.Err != nil {
			errs = append(errs, fmt.Errorf("ACL %s: %w", b.Source, b.Err))
		}
	}
	return errors.Join(errs...)
}

// Reasons for ACLSkipped.
const (
	aclReasonTopicNotSelected  = "topic not selected"
	aclReasonGroupNotSelected  = "group not selected"
	aclReasonNoSelectedTopic   = "prefix covers no selected source topic"
	aclReasonNoSelectedGroup   = "prefix covers no selected source group"
	aclReasonWildcard          = "wildcard: applies to every resource of the target, not only mirrored ones (ACLOptions.Wildcards copies it)"
	aclReasonWildcardRenamed   = "wildcard topic ACL cannot be translated under a prefix naming policy: on the target it would cover topics not mirrored from this source"
	aclReasonNotPrefixPolicy   = "prefixed pattern cannot be translated: the topic naming policy does not just prepend a prefix"
	aclReasonEmptyName         = "empty resource name"
	aclReasonNoPrincipal       = "empty principal or host"
	aclReasonInvalid           = "permission or operation not valid in an ACL binding"
	aclReasonPatternType       = "pattern type not LITERAL or PREFIXED"
	aclReasonCluster           = "cluster ACLs are out of scope: they grant on the whole target cluster, not on mirrored resources"
	aclReasonTransactionalID   = "transactional-id ACLs are out of scope: transactional ids belong to producers, not to mirrored topics"
	aclReasonOtherResourceType = "resource type out of scope (only topic and group ACLs are synced)"
)

// aclCreateParallelism bounds the CreateACLs requests in flight.
const aclCreateParallelism = 4

// SyncACLs copies to the target the source's ACLs that govern the mirrored
// topics and groups, and reports, for every binding of the source, whether
// it was created, already present, skipped (and why) or failed.
//
// In scope:
//   - topic ACLs on a literal name that sel selects, renamed to its target
//     name (sel.TargetName);
//   - topic ACLs on a prefix that covers at least one selected topic of
//     the source as it is now; under a prefix naming policy the prefix is
//     translated too (source prefix "orders-" → target prefix
//     "<policy prefix>orders-"), which covers the renamed topics as the
//     source prefix covers the originals;
//   - group ACLs on a literal name for which groups returns true (group
//     names are never renamed), and on a prefix that covers at least one
//     selected group listed on the source;
//   - with opts.Wildcards, topic and group ACLs on the literal name "*".
//
// Every operation (ALL and WRITE included) and permission (DENY as well as
// ALLOW) is kept, and principal and host are copied unchanged. Cluster,
// transactional-id, delegation-token and user ACLs are skipped with a
// reason; so is a pattern that cannot be translated (a topic wildcard
// under a prefix policy, a prefixed pattern under a naming policy that is
// not a plain prefix). A nil groups selects no group.
//
// Only missing bindings are created, so a second run creates nothing. ACLs
// of the target are never deleted or changed: a binding removed on the
// source stays on the target. The returned error is for what stops the
// whole sync (an ACL listing failed; ErrNoAuthorizer when a cluster has no
// authorizer); per-binding failures are in the report (ACLReport.Err).
//
// The source needs DESCRIBE on the cluster (and DESCRIBE on topics and
// groups, to match prefixes), the target DESCRIBE and ALTER on the cluster.
// Kafka applies created ACLs asynchronously: a binding created an instant
// ago may not show in a listing yet, and a run at that moment creates it
// again, which Kafka treats as a no-op.
func SyncACLs(ctx context.Context, src, dst *kadm.Client, sel *topics.Selector, groups func(string) bool, opts ACLOptions) (ACLReport, error) {
	if src == nil || dst == nil || sel == nil {
		return ACLReport{}, errors.New("ACL sync: source, target and topic selector are required")
	}
	if groups == nil {
		groups = func(string) bool { return false }
	}
	srcACLs, err := describeAllACLs(ctx, src)
	if err != nil {
		return ACLReport{}, fmt.Errorf("ACL sync: describe source ACLs: %w", err)
	}
	scope := &aclScope{src: src, sel: sel, groups: groups, opts: opts}
	rep := ACLReport{Bindings: make([]ACLResult, len(srcACLs))}
	var wanted []int // indexes into rep.Bindings of the bindings in scope
	for i, b := range srcACLs {
		r := &rep.Bindings[i]
		r.Source = b
		target, reason, err := scope.translate(ctx, b)
		switch {
		case err != nil:
			r.Outcome, r.Err = ACLError, err
		case reason != "":
			r.Outcome, r.Reason = ACLSkipped, reason
		default:
			r.Target = target
			wanted = append(wanted, i)
		}
	}
	if len(wanted) == 0 {
		return rep, nil
	}

	dstACLs, err := describeAllACLs(ctx, dst)
	if err != nil {
		return ACLReport{}, fmt.Errorf("ACL sync: describe target ACLs: %w", err)
	}
	present := make(map[ACLBinding]bool, len(dstACLs))
	for _, b := range dstACLs {
		present[b] = true
	}
	var missing []int
	for _, i := range wanted {
		r := &rep.Bindings[i]
		if present[r.Target] {
			r.Outcome = ACLPresent
			continue
		}
		missing = append(missing, i)
	}
	createACLs(ctx, dst, rep.Bindings, missing)
	return rep, nil
}

// createACLs creates the target bindings of results[idx...] and records
// each outcome. kadm's builder creates principals × hosts × resources ×
// operations, so one request can only carry the operations of one
// principal and host on one resource with one permission: bindings are
// grouped that way, and the groups sent a few at a time.
func createACLs(ctx context.Context, dst *kadm.Client, results []ACLResult, idx []int) {
	type resourceKey struct {
		typ        kmsg.ACLResourceType
		name       string
		pattern    kmsg.ACLResourcePatternType
		principal  string
		host       string
		permission kmsg.ACLPermissionType
	}
	var order []resourceKey
	byKey := map[resourceKey][]int{}
	for _, i := range idx {
		t := results[i].Target
		k := resourceKey{t.Type, t.Name, t.Pattern, t.Principal, t.Host, t.Permission}
		if _, ok := byKey[k]; !ok {
			order = append(order, k)
		}
		byKey[k] = append(byKey[k], i)
	}
	var g errgroup.Group
	g.SetLimit(aclCreateParallelism)
	for _, k := range order {
		g.Go(func() error {
			is := byKey[k]
			b := kadm.NewACLs().ResourcePatternType(k.pattern)
			if k.typ == kmsg.ACLResourceTypeTopic {
				b.Topics(k.name)
			} else {
				b.Groups(k.name)
			}
			if k.permission == kmsg.ACLPermissionTypeAllow {
				b.Allow(k.principal).AllowHosts(k.host)
			} else {
				b.Deny(k.principal).DenyHosts(k.host)
			}
			ops := make([]kmsg.ACLOperation, len(is))
			for j, i := range is {
				ops[j] = results[i].Target.Operation
			}
			b.Operations(ops...)
			created, err := dst.CreateACLs(ctx, b)
			outcome := map[ACLBinding]error{}
			for _, c := range created {
				e := withMessage(c.Err, c.ErrMessage)
				outcome[ACLBinding{Type: c.Type, Name: c.Name, Pattern: c.Pattern, Principal: c.Principal, Host: c.Host,
					Operation: c.Operation, Permission: c.Permission}] = e
			}
			for _, i := range is {
				r := &results[i]
				e, answered := outcome[r.Target]
				switch {
				case err != nil:
					r.Outcome, r.Err = ACLError, fmt.Errorf("create on the target: %w", err)
				case !answered:
					r.Outcome, r.Err = ACLError, errors.New("create on the target: no result for this binding")
				case e != nil:
					r.Outcome, r.Err = ACLError, fmt.Errorf("create on the target: %w", e)
				default:
					r.Outcome = ACLCreated
				}
			}
			return nil
		})
	}
	_ = g.Wait() // every goroutine records its errors in results
}

// describeAllACLs lists every ACL binding of a cluster, sorted.
func describeAllACLs(ctx context.Context, adm *kadm.Client) ([]ACLBinding, error) {
	// Any resource, any pattern, any principal and host for ALLOW and
	// DENY, any operation: kadm collapses this to one request matching
	// everything.
	filter := kadm.NewACLs().AnyResource().ResourcePatternType(kadm.ACLPatternAny).
		Allow().AllowHosts().Deny().DenyHosts().Operations()
	results, err := adm.DescribeACLs(ctx, filter)
	if err != nil {
		return nil, aclListError(err)
	}
	seen := map[ACLBinding]bool{}
	var out []ACLBinding
	for _, r := range results {
		if r.Err != nil {
			return nil, aclListError(withMessage(r.Err, r.ErrMessage))
		}
		for _, d := range r.Described {
			b := ACLBinding{Type: d.Type, Name: d.Name, Pattern: d.Pattern, Principal: d.Principal, Host: d.Host,
				Operation: d.Operation, Permission: d.Permission}
			if !seen[b] { // one filter today, but a future kadm could split it into overlapping ones
				seen[b] = true
				out = append(out, b)
			}
		}
	}
	slices.SortFunc(out, compareACLBindings)
	return out, nil
}

// withMessage adds a broker's error message to its error code, unless the
// code's own text already says it.
func withMessage(err error, msg string) error {
	if err == nil || msg == "" || strings.Contains(err.Error(), msg) {
		return err
	}
	return fmt.Errorf("%w: %s", err, msg)
}

func aclListError(err error) error {
	switch {
	case errors.Is(err, kerr.SecurityDisabled):
		return fmt.Errorf("%w (%w)", ErrNoAuthorizer, err)
	case errors.Is(err, kerr.ClusterAuthorizationFailed):
		return fmt.Errorf("listing ACLs needs DESCRIBE on the cluster: %w", err)
	default:
		return err
	}
}

// aclScope decides which source bindings are copied and what they become.
// It lists the source's topics and groups on first need only: just
// prefixed ACLs need them.
type aclScope struct {
	src    *kadm.Client
	sel    *topics.Selector
	groups func(string) bool
	opts   ACLOptions

	topicNames, groupNames []string // selected ones, listed on first need
	topicsErr, groupsErr   error
	topicsDone, groupsDone bool
}

// translate returns the target binding for a source binding, or the reason
// it is skipped, or an error that kept it from being decided.
func (s *aclScope) translate(ctx context.Context, b ACLBinding) (ACLBinding, string, error) {
	switch b.Type {
	case kmsg.ACLResourceTypeTopic, kmsg.ACLResourceTypeGroup:
	case kmsg.ACLResourceTypeCluster:
		return ACLBinding{}, aclReasonCluster, nil
	case kmsg.ACLResourceTypeTransactionalId:
		return ACLBinding{}, aclReasonTransactionalID, nil
	default:
		return ACLBinding{}, aclReasonOtherResourceType, nil
	}
	switch {
	case b.Name == "":
		return ACLBinding{}, aclReasonEmptyName, nil
	case b.Principal == "" || b.Host == "":
		// kadm would default an empty host to "*", widening the binding.
		return ACLBinding{}, aclReasonNoPrincipal, nil
	case b.Permission != kmsg.ACLPermissionTypeAllow && b.Permission != kmsg.ACLPermissionTypeDeny,
		b.Operation == kmsg.ACLOperationAny, b.Operation == kmsg.ACLOperationUnknown:
		// Only filters carry these; a binding that does cannot be created.
		return ACLBinding{}, aclReasonInvalid, nil
	}
	isTopic := b.Type == kmsg.ACLResourceTypeTopic
	// The target name of every source topic is policyPrefix + its name
	// when the naming policy is a prefix (identity: an empty prefix).
	policyPrefix := s.sel.TargetName("")
	t := b
	switch b.Pattern {
	case kmsg.ACLResourcePatternTypeLiteral:
		switch {
		case b.Name == "*" && !s.opts.Wildcards:
			return ACLBinding{}, aclReasonWildcard, nil
		case b.Name == "*" && isTopic && policyPrefix != "":
			return ACLBinding{}, aclReasonWildcardRenamed, nil
		case b.Name == "*":
			return t, "", nil
		case isTopic && !s.sel.Selects(b.Name):
			return ACLBinding{}, aclReasonTopicNotSelected, nil
		case isTopic:
			t.Name = s.sel.TargetName(b.Name)
		case !s.groups(b.Name):
			return ACLBinding{}, aclReasonGroupNotSelected, nil
		}
		return t, "", nil
	case kmsg.ACLResourcePatternTypePrefixed:
		if isTopic {
			names, err := s.selectedTopics(ctx)
			if err != nil {
				return ACLBinding{}, "", err
			}
			if !anyHasPrefix(names, b.Name) {
				return ACLBinding{}, aclReasonNoSelectedTopic, nil
			}
			if s.sel.TargetName(b.Name) != policyPrefix+b.Name {
				return ACLBinding{}, aclReasonNotPrefixPolicy, nil
			}
			t.Name = policyPrefix + b.Name
			return t, "", nil
		}
		names, err := s.selectedGroups(ctx)
		if err != nil {
			return ACLBinding{}, "", err
		}
		if !anyHasPrefix(names, b.Name) {
			return ACLBinding{}, aclReasonNoSelectedGroup, nil
		}
		return t, "", nil
	default:
		return ACLBinding{}, aclReasonPatternType, nil
	}
}

func anyHasPrefix(names []string, prefix string) bool {
	return slices.ContainsFunc(names, func(n string) bool { return strings.HasPrefix(n, prefix) })
}

// selectedTopics lists the source's topics that the selector selects.
// Internal ones are listed too: the selector may opt some in.
func (s *aclScope) selectedTopics(ctx context.Context) ([]string, error) {
	if !s.topicsDone {
		s.topicsDone = true
		details, err := s.src.ListTopicsWithInternal(ctx)
		if err != nil {
			s.topicsErr = fmt.Errorf("list source topics to match a prefixed ACL: %w", err)
		}
		for _, name := range details.Names() {
			if s.sel.Selects(name) {
				s.topicNames = append(s.topicNames, name)
			}
		}
	}
	return s.topicNames, s.topicsErr
}

// selectedGroups lists the source's groups that groups selects. A listing
// that fails on some broker is an error, not a shorter list: a group
// missing from it could wrongly leave a prefixed ACL out.
func (s *aclScope) selectedGroups(ctx context.Context) ([]string, error) {
	if !s.groupsDone {
		s.groupsDone = true
		listed, err := s.src.ListGroups(ctx)
		if err != nil {
			s.groupsErr = fmt.Errorf("list source groups to match a prefixed ACL: %w", err)
		}
		for _, g := range listed.Groups() {
			if s.groups(g) {
				s.groupNames = append(s.groupNames, g)
			}
		}
	}
	return s.groupNames, s.groupsErr
}
