package proxy

import (
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// groupMembers tells, after a switch, the consumer-group members that
// joined on the new cluster from those still carrying a membership of the
// old one.
//
// A member of the old cluster's group arrives at the new cluster's
// coordinator with a member id that coordinator never gave out. If its
// first answer there is REBALANCE_IN_PROGRESS (another member already
// rejoined), a cooperative client (franz-go's default, the Java client's
// CooperativeStickyAssignor) rejoins, is told UNKNOWN_MEMBER_ID by JoinGroup
// and joins afresh — keeping the partitions it had and the positions it
// reached on the old cluster, which name other records on the new one. So
// the proxy answers such a member's Heartbeat itself, at once, with
// UNKNOWN_MEMBER_ID: every client takes that as "my membership is gone",
// drops its partitions and positions (onPartitionsLost), rejoins, and
// resumes from the group's committed offsets, which a cutover has
// translated onto the new cluster.
type groupMembers struct {
	switched atomic.Bool // a switch happened: members must be known
	mu       sync.Mutex
	known    map[string]map[string]bool // group → member ids given out by the current cluster
}

// reset forgets every member: called by a switch.
func (g *groupMembers) reset() {
	g.mu.Lock()
	g.known = map[string]map[string]bool{}
	g.mu.Unlock()
	g.switched.Store(true)
}

// joined records a member id the current cluster gave out.
func (g *groupMembers) joined(group, member string) {
	if member == "" || !g.switched.Load() {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.known[group] == nil {
		g.known[group] = map[string]bool{}
	}
	g.known[group][member] = true
}

// stale reports whether a member id predates the last switch.
func (g *groupMembers) stale(group, member string) bool {
	if member == "" || !g.switched.Load() {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return !g.known[group][member]
}

// checkHeartbeat answers a heartbeat of a member that predates the switch
// with UNKNOWN_MEMBER_ID; nil means forward it.
func (p *Proxy) checkHeartbeat(hdr requestHeader, body []byte) []byte {
	if !p.members.switched.Load() {
		return nil
	}
	req := kmsg.NewPtrHeartbeatRequest()
	if err := decodeRequest(req, hdr, body); err != nil || !p.members.stale(req.Group, req.MemberID) {
		return nil
	}
	resp := kmsg.NewPtrHeartbeatResponse()
	resp.Version, resp.ErrorCode = hdr.Version, kerr.UnknownMemberID.Code
	p.m.staleMembers.Inc()
	return responseFrame(keyHeartbeat, hdr.Version, hdr.CorrID, resp.AppendTo(nil))
}

// joinGroupOf returns the group a JoinGroup request joins ("" when the
// proxy has not switched: nothing to track).
func (p *Proxy) joinGroupOf(hdr requestHeader, body []byte) string {
	if !p.members.switched.Load() {
		return ""
	}
	req := kmsg.NewPtrJoinGroupRequest()
	if err := decodeRequest(req, hdr, body); err != nil {
		return ""
	}
	return req.Group
}

// noteJoined records the member id of a JoinGroup response.
func (p *Proxy) noteJoined(group string, hdr requestHeader, frame []byte) {
	if group == "" {
		return
	}
	hl, err := responseHeaderLen(hdr.Key, hdr.Version, frame)
	if err != nil {
		return
	}
	resp := kmsg.NewPtrJoinGroupResponse()
	if err := decodeResponse(resp, hdr.Key, hdr.Version, frame[hl:]); err != nil || resp.ErrorCode != 0 {
		return
	}
	p.members.joined(group, resp.MemberID)
}
