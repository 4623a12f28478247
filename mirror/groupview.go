package mirror

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kadm"
)

// groupView is what the cutover's group checks need of a consumer group,
// whatever protocol it runs: the classic one (JoinGroup/SyncGroup,
// DescribeGroups) or KIP-848's consumer protocol (ConsumerGroupHeartbeat,
// ConsumerGroupDescribe).
type groupView struct {
	// Type is "classic", "consumer", or "" when the cluster has no such
	// group.
	Type string
	// State is the group's state as its protocol names it: classic
	// Empty, PreparingRebalance, CompletingRebalance, Stable, Dead;
	// consumer Empty, Assigning, Reconciling, Stable, Dead.
	State    string
	Members  int
	Assigned kadm.TopicsSet
	// AllOf names topics all of whose partitions count as assigned: a
	// consumer-protocol group whose describe named its assignment by topic
	// id only (kfake does; Kafka sends names too) is assigned, when
	// stable, every partition of the topics its members subscribe to.
	AllOf []string
}

// settled reports whether no rebalance is under way: a member that crossed
// to the target in the middle of one would rejoin there keeping the
// positions it had on the source.
func (g groupView) settled() bool { return g.State == "Stable" || g.State == "Empty" }

// describeGroups describes the groups of either protocol. Classic
// DescribeGroups does not describe a consumer-protocol group's members
// (Kafka answers it as Dead, or GROUP_ID_NOT_FOUND from 4.0 on; kfake with
// its state and no members), so every group it shows without members is
// asked for with ConsumerGroupDescribe too, whose answer wins when it has
// the group; a cluster that does not know that API has no such groups.
func describeGroups(ctx context.Context, adm *kadm.Client, groups []string) (map[string]groupView, error) {
	out := make(map[string]groupView, len(groups))
	classic, err := adm.DescribeGroups(ctx, groups...)
	if err != nil && len(classic) == 0 {
		return nil, fmt.Errorf("describe groups: %w", err)
	}
	var others []string
	for _, g := range groups {
		d, ok := classic[g]
		if ok && d.Err == nil && d.State != "Dead" {
			out[g] = groupView{Type: "classic", State: d.State, Members: len(d.Members), Assigned: d.AssignedPartitions()}
			if len(d.Members) > 0 {
				continue
			}
		}
		others = append(others, g)
	}
	if len(others) == 0 {
		return out, nil
	}
	consumer, err := adm.DescribeConsumerGroups(ctx, others...)
	if err != nil && len(consumer) == 0 {
		return out, nil // no ConsumerGroupDescribe: no consumer-protocol groups
	}
	for _, g := range others {
		d, ok := consumer[g]
		if !ok || d.Err != nil || d.State == "Dead" || d.State == "" {
			continue
		}
		v := groupView{Type: "consumer", State: d.State, Members: len(d.Members), Assigned: d.AssignedPartitions()}
		if _, unnamed := v.Assigned[""]; unnamed {
			v.Assigned, v.AllOf = nil, d.SubscribedTopics()
		}
		out[g] = v
	}
	return out, nil
}
