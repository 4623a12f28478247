package mirror

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"go.uber.org/zap"

	"github.com/switchyard/switchyard/mirror/offsetmap"
)

// GroupSyncReport says, per group and partition, what SyncGroups did.
type GroupSyncReport struct {
	Groups []GroupResult
}

// GroupResult is the outcome for one group.
type GroupResult struct {
	Group string
	// Err is set when the group was not synced at all (it has live members
	// on the target, or its offsets could not be read or written).
	Err        error
	Partitions []PartitionOffset
}

// PartitionOffset is the outcome for one partition of a group.
type PartitionOffset struct {
	Topic       string // source topic
	TargetTopic string
	Partition   int32
	// Source is the group's committed offset on the source.
	Source int64
	// Target is the translated offset (-1 when it could not be translated).
	Target int64
	// Previous is the target's committed offset before the sync (-1: none).
	Previous int64
	// Resumed is the source position Target stands for: Source, except
	// when the source no longer holds the records at Source (see
	// OutcomeLogStart).
	Resumed int64
	// Outcome is one of the Outcome constants.
	Outcome string
	Err     error
}

// The outcomes of a group partition's sync (PartitionOffset.Outcome).
const (
	OutcomeCommitted = "committed"
	// OutcomeLogStart: committed, but the source no longer holds the
	// records the group would read next — its log start passed them
	// (retention, DeleteRecords), some maybe deleted before the mirror
	// copied them (a gap it went on after) — so the group resumes at
	// Resumed, the first position the mirror holds after them, as a source
	// consumer reset to the earliest offset would.
	OutcomeLogStart = "log-start"
	// OutcomeUnchanged: the target group is there already.
	OutcomeUnchanged = "unchanged"
	// OutcomeSkipped: it would move the target group backwards, or the
	// topic is not mirrored.
	OutcomeSkipped = "skipped"
	// OutcomeError: Err says why (e.g. beyond the mirrored position).
	OutcomeError = "error"
)

// Err returns the first error of the report: a group not synced or a
// partition not translated.
func (r GroupSyncReport) Err() error {
	var errs []error
	for _, g := range r.Groups {
		if g.Err != nil {
			errs = append(errs, fmt.Errorf("group %s: %w", g.Group, g.Err))
		}
		for _, p := range g.Partitions {
			if p.Err != nil {
				errs = append(errs, fmt.Errorf("group %s %s/%d: %w", g.Group, p.Topic, p.Partition, p.Err))
			}
		}
	}
	return errors.Join(errs...)
}

// PrepareGroups finds the target's coordinator of every named group,
// retrying until each is found or ctx ends, and reports the last failure.
// A cluster that never had a consumer group creates its offsets topic on
// the first such request and answers COORDINATOR_NOT_AVAILABLE until it is
// loaded (1.4 s on the one-broker test bed): asked when a cutover starts,
// the target is ready by the time SyncGroups needs it, instead of the
// groups' sync — inside their block window — waiting for it.
func (mr *Mirror) PrepareGroups(ctx context.Context, groups []string) error {
	if len(groups) == 0 {
		return nil
	}
	dst, err := mr.targetClient()
	if err != nil {
		return fmt.Errorf("target client: %w", err)
	}
	defer dst.Close()
	adm := kadm.NewClient(dst)
	for {
		var last error
		adm.FindGroupCoordinators(ctx, groups...).Each(func(r kadm.FindCoordinatorResponse) {
			if r.Err != nil {
				last = fmt.Errorf("group %s: %w", r.Name, r.Err)
			}
		})
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("find the target's group coordinators: %w", last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// errLiveMembers: the group is active on the target; its offsets are its own.
var errLiveMembers = errors.New("group has live members on the target; its offsets are not overwritten")

// SyncGroups translates the named groups' committed source offsets exactly
// through the offset maps and commits them on the target, for groups with
// no live members there. It never moves a target group backwards, and
// reports (never guesses) an offset beyond the mirrored position. For a
// final sync at cutover, call it once the mirror has caught up with the
// gated producers.
//
// It blocks until the mirror is ready (Run has restored the offset maps
// from the checkpoint topic), or fails when ctx ends first: before that
// the mirror knows no partition, and every offset would be skipped — a
// group would then start on the target from its reset policy, reading
// again, or skipping, what it had consumed. A control plane restarted in
// the middle of a cutover syncs while its mirror is still restoring.
func (mr *Mirror) SyncGroups(ctx context.Context, groups []string) (GroupSyncReport, error) {
	select {
	case <-mr.readyCh:
	case <-ctx.Done():
		return GroupSyncReport{}, fmt.Errorf("mirror %s not ready, its offset maps not restored (%s): %w", mr.cfg.Name, mr.Status().LastError, ctx.Err())
	}
	src, err := mr.sourceClient()
	if err != nil {
		return GroupSyncReport{}, fmt.Errorf("source client: %w", err)
	}
	defer src.Close()
	dst, err := mr.targetClient()
	if err != nil {
		return GroupSyncReport{}, fmt.Errorf("target client: %w", err)
	}
	defer dst.Close()
	return mr.syncGroups(ctx, kadm.NewClient(src), kadm.NewClient(dst), groups)
}

func (mr *Mirror) syncGroups(ctx context.Context, srcAdm, dstAdm *kadm.Client, groups []string) (GroupSyncReport, error) {
	var rep GroupSyncReport
	// A target that never had a consumer group answers
	// COORDINATOR_NOT_AVAILABLE while it creates __consumer_offsets: retry
	// for a while before giving up.
	var (
		described map[string]groupView
		err       error
	)
	for attempt := 0; ; attempt++ {
		described, err = describeGroups(ctx, dstAdm, groups)
		if err == nil || attempt == 50 || ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	if err != nil {
		return rep, fmt.Errorf("on the target: %w", err)
	}
	for _, g := range groups {
		res := GroupResult{Group: g}
		if d := described[g]; d.Members > 0 {
			res.Err = fmt.Errorf("%w (%d members, %s group %s)", errLiveMembers, d.Members, d.Type, d.State)
			rep.Groups = append(rep.Groups, res)
			continue
		}
		res.Partitions, res.Err = mr.syncGroup(ctx, srcAdm, dstAdm, g)
		rep.Groups = append(rep.Groups, res)
	}
	for _, g := range rep.Groups {
		for _, p := range g.Partitions {
			mr.m.groupOffsets.WithLabelValues(mr.cfg.Name, p.Outcome).Inc()
		}
	}
	return rep, nil
}

func (mr *Mirror) syncGroup(ctx context.Context, srcAdm, dstAdm *kadm.Client, group string) ([]PartitionOffset, error) {
	srcOffs, err := StableOffsets(ctx, srcAdm, group)
	if err != nil {
		return nil, fmt.Errorf("fetch offsets on the source: %w", err)
	}
	dstOffs, err := dstAdm.FetchOffsets(ctx, group)
	if err != nil && !isGroupMissing(err) {
		return nil, fmt.Errorf("fetch offsets on the target: %w", err)
	}
	var out []PartitionOffset
	commit := kadm.Offsets{}
	srcOffs.Each(func(o kadm.OffsetResponse) {
		if o.Err != nil || o.At < 0 {
			return
		}
		po := PartitionOffset{Topic: o.Topic, Partition: o.Partition, Source: o.At, Target: -1, Previous: -1, Resumed: o.At}
		om := mr.OffsetMap(o.Topic, o.Partition)
		if om == nil || !mr.sel.Selects(o.Topic) {
			po.Outcome = OutcomeSkipped
			out = append(out, po)
			return
		}
		po.TargetTopic = mr.sel.TargetName(o.Topic)
		if prev, ok := dstOffs.Lookup(po.TargetTopic, o.Partition); ok && prev.Err == nil {
			po.Previous = prev.At
		}
		tgt, err := om.Translate(o.At)
		committed := OutcomeCommitted
		if errors.Is(err, offsetmap.ErrBeforeMirrored) || errors.Is(err, offsetmap.ErrLost) {
			// Below the map's Start (trimmed: the source's log start
			// passed it) or in front of offsets lost in a gap, which
			// also lie below the source's log start: the source holds no
			// record there any more and would reset a consumer at it.
			tgt, po.Resumed, err = om.Resume(o.At)
			committed = OutcomeLogStart
		}
		switch {
		case err != nil:
			po.Outcome, po.Err = OutcomeError, fmt.Errorf("translate source offset %d: %w", o.At, err)
		case tgt == po.Previous:
			po.Target, po.Outcome = tgt, OutcomeUnchanged
		case tgt < po.Previous:
			// Never move a target group backwards: it may have consumed
			// there already.
			po.Target, po.Outcome = tgt, OutcomeSkipped
		default:
			po.Target, po.Outcome = tgt, committed
			commit.Add(kadm.Offset{Topic: po.TargetTopic, Partition: o.Partition, At: tgt, LeaderEpoch: -1, Metadata: o.Metadata})
		}
		out = append(out, po)
	})
	sort.Slice(out, func(i, j int) bool {
		return out[i].Topic < out[j].Topic || (out[i].Topic == out[j].Topic && out[i].Partition < out[j].Partition)
	})
	if len(commit) == 0 {
		return out, nil
	}
	resp, err := dstAdm.CommitOffsets(ctx, group, commit)
	if err != nil {
		return out, fmt.Errorf("commit offsets on the target: %w", err)
	}
	for i := range out {
		if out[i].Outcome != OutcomeCommitted && out[i].Outcome != OutcomeLogStart {
			continue
		}
		if r, ok := resp.Lookup(out[i].TargetTopic, out[i].Partition); ok && r.Err != nil {
			out[i].Outcome, out[i].Err = OutcomeError, fmt.Errorf("commit on the target: %w", r.Err)
		}
	}
	return out, nil
}

func isGroupMissing(err error) bool { return errors.Is(err, kerr.GroupIDNotFound) }

// StableOffsets returns a group's committed offsets once no transactional
// offset commit of the group is pending (KIP-447 RequireStable). A
// transaction's end is answered before its commit reaches the group
// (Kafka writes the markers after the answer): read at once, the group's
// offsets would be those before the transaction its records were written
// in, and a consume-transform-produce application moved with them would
// process those records again on the target — exactly-once broken at the
// cutover (proxy.TestTxnGroupSessionAcrossSwitch caught it on Kafka 4.3.1).
// Partitions answered UNSTABLE_OFFSET_COMMIT are asked again until stable
// or ctx ends.
func StableOffsets(ctx context.Context, adm *kadm.Client, group string) (kadm.OffsetResponses, error) {
	backoff := 10 * time.Millisecond
	for {
		offs, err := adm.FetchOffsets(kadm.RequireStable(ctx), group)
		if err != nil {
			return nil, err
		}
		unstable := false
		offs.Each(func(o kadm.OffsetResponse) {
			unstable = unstable || errors.Is(o.Err, kerr.UnstableOffsetCommit)
		})
		if !unstable {
			return offs, nil
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("offsets of group %s still unstable (a transactional offset commit pending): %w", group, ctx.Err())
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

// groupLoop syncs the configured groups periodically.
func (mr *Mirror) groupLoop(ctx context.Context, srcAdm, dstAdm *kadm.Client) error {
	if len(mr.groups) == 0 {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(mr.cfg.GroupSyncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		listed, err := srcAdm.ListGroups(ctx)
		if err != nil {
			mr.log.Warn("list source groups", zap.Error(err))
			continue
		}
		var names []string
		for _, g := range listed.Groups() {
			for _, re := range mr.groups {
				if re.MatchString(g) {
					names = append(names, g)
					break
				}
			}
		}
		if len(names) == 0 {
			continue
		}
		rep, err := mr.syncGroups(ctx, srcAdm, dstAdm, names)
		if err == nil {
			err = rep.Err()
		}
		if err != nil && ctx.Err() == nil && !errors.Is(err, errLiveMembers) {
			mr.log.Warn("group offset sync", zap.Error(err))
		}
	}
}

// GroupsDrained reports whether every named group is Stable (or Empty) on
// the source and has committed there offsets at the source's last stable
// offset for every partition
// of the topics it has committed on (all mirrored topics when none are
// given), and names the first that has not. With producers gated, a group
// whose members keep consuming drains to true; then SyncGroups translates
// final offsets and nothing committed later on the source is lost.
func (mr *Mirror) GroupsDrained(ctx context.Context, groups []string, topics ...string) (bool, string, error) {
	adm, done, err := mr.sourceAdmin()
	if err != nil {
		return false, "", err
	}
	defer done()
	if len(topics) == 0 {
		mr.mu.Lock()
		set := map[string]bool{}
		for k := range mr.parts {
			set[k.topic] = true
		}
		mr.mu.Unlock()
		for t := range set {
			topics = append(topics, t)
		}
		sort.Strings(topics)
	}
	ends, err := adm.ListCommittedOffsets(ctx, topics...)
	if err != nil {
		return false, "", fmt.Errorf("source end offsets: %w", err)
	}
	// A group in the middle of a rebalance is not drained: a member that
	// crossed to the target mid-rebalance would rejoin there and keep the
	// positions it had on the source.
	described, err := describeGroups(ctx, adm, groups)
	if err != nil {
		return false, "", fmt.Errorf("on the source: %w", err)
	}
	for _, g := range groups {
		if d, ok := described[g]; ok && !d.settled() {
			return false, fmt.Sprintf("group %s is %s on the source (%s protocol)", g, d.State, d.Type), nil
		}
	}
	// A partition assigned to a member that holds records but has no
	// committed offset yet is not drained either: members that joined
	// and consumed but have not auto-committed yet would find nothing on
	// the target and reset (consuming everything again, or skipping).
	starts, err := adm.ListStartOffsets(ctx, topics...)
	if err != nil {
		return false, "", fmt.Errorf("source start offsets: %w", err)
	}
	for _, g := range groups {
		offs, err := StableOffsets(ctx, adm, g)
		if err != nil {
			return false, "", fmt.Errorf("group %s: fetch offsets on the source: %w", g, err)
		}
		behind := ""
		offs.Each(func(o kadm.OffsetResponse) {
			if behind != "" || o.Err != nil || o.At < 0 {
				return
			}
			end, ok := ends.Lookup(o.Topic, o.Partition)
			if !ok || end.Err != nil {
				return // not one of the topics
			}
			if o.At < end.Offset {
				behind = fmt.Sprintf("group %s at %d of %d on %s/%d", g, o.At, end.Offset, o.Topic, o.Partition)
			}
		})
		if d, ok := described[g]; behind == "" && ok {
			assigned := d.Assigned
			if len(d.AllOf) > 0 {
				assigned = kadm.TopicsSet{}
				for _, t := range d.AllOf {
					ends.Each(func(o kadm.ListedOffset) {
						if o.Topic == t {
							assigned.Add(t, o.Partition)
						}
					})
				}
			}
			for topic, parts := range assigned {
				for p := range parts {
					if o, ok := offs.Lookup(topic, p); ok && o.Err == nil && o.At >= 0 {
						continue
					}
					end, eok := ends.Lookup(topic, p)
					start, sok := starts.Lookup(topic, p)
					if eok && sok && end.Err == nil && start.Err == nil && end.Offset > start.Offset {
						behind = fmt.Sprintf("group %s has not committed %s/%d yet", g, topic, p)
						break
					}
				}
				if behind != "" {
					break
				}
			}
		}
		if behind != "" {
			return false, behind, nil
		}
	}
	return true, "", nil
}

// GroupsJoined reports whether every named group is Stable on the target
// with at least as many members as it has on the source, and names the
// first that is not: after a cutover's flip, all its consumers have
// rejoined there (and read their committed offsets). Members that moved
// stay listed on the source until their session times out, so the source
// count is the group's size at the flip.
func (mr *Mirror) GroupsJoined(ctx context.Context, groups []string) (bool, string, error) {
	src, err := mr.sourceClient()
	if err != nil {
		return false, "", fmt.Errorf("source client: %w", err)
	}
	defer src.Close()
	dst, err := mr.targetClient()
	if err != nil {
		return false, "", fmt.Errorf("target client: %w", err)
	}
	defer dst.Close()
	before, err := describeGroups(ctx, kadm.NewClient(src), groups)
	if err != nil {
		return false, "", fmt.Errorf("on the source: %w", err)
	}
	described, err := describeGroups(ctx, kadm.NewClient(dst), groups)
	if err != nil {
		return false, "", fmt.Errorf("on the target: %w", err)
	}
	for _, g := range groups {
		want := max(1, before[g].Members)
		d, ok := described[g]
		switch {
		case !ok:
			return false, fmt.Sprintf("group %s: not on the target yet", g), nil
		case d.State != "Stable" || d.Members < want:
			return false, fmt.Sprintf("group %s: %s with %d of %d members (%s protocol)", g, d.State, d.Members, want, d.Type), nil
		}
	}
	return true, "", nil
}
