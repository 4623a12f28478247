package proxy

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/switchyard/switchyard/internal/kafkatest"
)

// TestStaleGroupMembersAreToldToRejoin: after a switch, a heartbeat from a
// member of the old cluster's group is answered UNKNOWN_MEMBER_ID by the
// proxy itself (so the client drops its positions and rejoins from the
// committed offsets), while a member that joined on the new cluster is
// forwarded as usual.
func TestStaleGroupMembersAreToldToRejoin(t *testing.T) {
	source, target := kafkatest.Pair(t)
	tp := startProxy(t, source, target)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(tp.Addr().String()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	group := kafkatest.Topic(t, "g")
	join := func() (string, int32) {
		t.Helper()
		req := testJoinRequest(group, "")
		for {
			resp, err := req.RequestWith(ctx, cl)
			if err != nil {
				t.Fatal(err)
			}
			switch kerr.ErrorForCode(resp.ErrorCode) {
			case nil:
				return resp.MemberID, resp.Generation
			case kerr.MemberIDRequired:
				req.MemberID = resp.MemberID
			default:
				t.Fatalf("join: %v", kerr.ErrorForCode(resp.ErrorCode))
			}
		}
	}
	heartbeat := func(member string, gen int32) error {
		t.Helper()
		req := kmsg.NewPtrHeartbeatRequest()
		req.Group, req.MemberID, req.Generation = group, member, gen
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			t.Fatal(err)
		}
		return kerr.ErrorForCode(resp.ErrorCode)
	}
	old, oldGen := join()
	// SyncGroup so the heartbeat is accepted on the source.
	sync := kmsg.NewPtrSyncGroupRequest()
	sync.Group, sync.MemberID, sync.Generation = group, old, oldGen
	if _, err := sync.RequestWith(ctx, cl); err != nil {
		t.Fatal(err)
	}
	if err := heartbeat(old, oldGen); err != nil {
		t.Fatalf("heartbeat before the switch: %v", err)
	}
	if _, err := tp.Switch(ctx, "target"); err != nil {
		t.Fatal(err)
	}
	if err := heartbeat(old, oldGen); err != kerr.UnknownMemberID {
		t.Fatalf("heartbeat of a member of the old cluster: %v, want UNKNOWN_MEMBER_ID", err)
	}
	if got := gatheredValue(t, tp.reg, "switchyard_proxy_stale_members_total"); got != 1 {
		t.Errorf("stale_members_total %v, want 1", got)
	}
	// A member of the new cluster is the broker's business.
	fresh, gen := join()
	if err := heartbeat(fresh, gen); err == kerr.UnknownMemberID {
		t.Fatalf("heartbeat of a member that joined on the new cluster: %v", err)
	}
}

// testJoinRequest is a consumer's JoinGroup (30 s timeouts, the range
// protocol) of group with member id member.
func testJoinRequest(group, member string) *kmsg.JoinGroupRequest {
	req := kmsg.NewPtrJoinGroupRequest()
	req.Group, req.MemberID, req.ProtocolType, req.SessionTimeoutMillis, req.RebalanceTimeoutMillis = group, member, "consumer", 30000, 30000
	proto := kmsg.NewJoinGroupRequestProtocol()
	proto.Name, proto.Metadata = "range", (&kmsg.ConsumerMemberMetadata{Topics: []string{"x"}}).AppendTo(nil)
	req.Protocols = append(req.Protocols, proto)
	return req
}

// TestSwitchAnswersPendingJoinGroup: a JoinGroup waiting for a rebalance on
// the old cluster does not hold the switch up to the drain timeout; the
// proxy answers it NOT_COORDINATOR and the client rejoins on the new one.
func TestSwitchAnswersPendingJoinGroup(t *testing.T) {
	source, target := kafkatest.Pair(t)
	tp := startProxy(t, source, target, func(c *Config) { c.DrainTimeout = 20 * time.Second })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(tp.Addr().String()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	group := kafkatest.Topic(t, "g")
	joinReq := func(member string) *kmsg.JoinGroupRequest { return testJoinRequest(group, member) }
	// A first member joins and stays silent: a second member's join then
	// waits for it (up to the 30 s rebalance timeout).
	req := joinReq("")
	for {
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			t.Fatal(err)
		}
		if resp.ErrorCode == kerr.MemberIDRequired.Code {
			req.MemberID = resp.MemberID
			continue
		}
		if resp.ErrorCode != 0 {
			t.Fatalf("first join: %v", kerr.ErrorForCode(resp.ErrorCode))
		}
		break
	}
	pending := make(chan int16, 1)
	go func() {
		r := joinReq("")
		for {
			resp, err := r.RequestWith(ctx, cl)
			if err != nil {
				pending <- -1
				return
			}
			if resp.ErrorCode == kerr.MemberIDRequired.Code {
				r.MemberID = resp.MemberID
				continue
			}
			pending <- resp.ErrorCode
			return
		}
	}()
	eventually(t, 10*time.Second, "the second join in flight", func() error {
		if n := tp.Status().InFlightByAPI[keyJoinGroup]; n == 0 {
			return errNotYet
		}
		return nil
	})
	start := time.Now()
	rep, err := tp.Switch(ctx, "target")
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 5*time.Second || rep.ConnectionsClosed != 0 {
		t.Errorf("switch took %v and closed %d connections; the pending join should be answered at once", took, rep.ConnectionsClosed)
	}
	// The proxy answers NOT_COORDINATOR; kgo's request path retries that
	// on the coordinator it finds again — on the target, where the proxy
	// answers the member id the source gave out REBALANCE_IN_PROGRESS
	// (members.go).
	if code := <-pending; code != kerr.NotCoordinator.Code && code != kerr.RebalanceInProgress.Code {
		t.Errorf("the pending join was answered %v, want NOT_COORDINATOR (or REBALANCE_IN_PROGRESS after kgo's retry)", kerr.ErrorForCode(code))
	}
}

// TestStaleJoinAnswerByClient: a JoinGroup carrying a member id of the old
// cluster is answered REBALANCE_IN_PROGRESS, then UNKNOWN_MEMBER_ID; to a
// client that named itself librdkafka (or a library on it) in ApiVersions,
// ILLEGAL_GENERATION first, which librdkafka takes silently and, in a
// cooperative group, as its assignment lost.
func TestStaleJoinAnswerByClient(t *testing.T) {
	source, target := kafkatest.Pair(t)
	tp := startProxy(t, source, target)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	type member struct {
		cl    *kgo.Client
		group string
		id    string
	}
	join := func(cl *kgo.Client, group, id string) (*kmsg.JoinGroupResponse, error) {
		t.Helper()
		resp, err := testJoinRequest(group, id).RequestWith(ctx, cl)
		if err != nil {
			t.Fatal(err)
		}
		return resp, kerr.ErrorForCode(resp.ErrorCode)
	}
	cases := []struct {
		name   string
		opts   []kgo.Opt
		first  error
		member member
	}{
		{name: "franz-go", first: kerr.RebalanceInProgress},
		{name: "confluent-kafka-python", opts: []kgo.Opt{kgo.SoftwareNameAndVersion("confluent-kafka-python", "2.16.1-rdkafka-2.16.0")}, first: kerr.IllegalGeneration},
		{name: "librdkafka", opts: []kgo.Opt{kgo.SoftwareNameAndVersion("librdkafka", "2.0.2")}, first: kerr.IllegalGeneration},
	}
	// Each joins a group of its own on the source.
	for i := range cases {
		cl := tp.client(t, cases[i].opts...)
		group := kafkatest.Topic(t, "g")
		resp, err := join(cl, group, "")
		if err == kerr.MemberIDRequired {
			resp, err = join(cl, group, resp.MemberID)
		}
		if err != nil {
			t.Fatalf("%s join on the source: %v", cases[i].name, err)
		}
		cases[i].member = member{cl, group, resp.MemberID}
	}
	if _, err := tp.Switch(ctx, "target"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		if _, err := join(tc.member.cl, tc.member.group, tc.member.id); err != tc.first {
			t.Errorf("%s: first JoinGroup of the source's member answered %v, want %v", tc.name, err, tc.first)
		}
		if _, err := join(tc.member.cl, tc.member.group, tc.member.id); err != kerr.UnknownMemberID {
			t.Errorf("%s: second JoinGroup answered %v, want UNKNOWN_MEMBER_ID", tc.name, err)
		}
	}
}
