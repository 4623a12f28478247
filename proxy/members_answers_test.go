package proxy

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// staleRequest fills a request of key at version v the way a member of
// the old cluster's group sends it (member ids the current cluster never
// issued), returning its header and body.
func staleRequest(key, v int16, mutate func(kmsg.Request)) (requestHeader, []byte) {
	req := kmsg.RequestForKey(key)
	newFiller(int64(key)<<16|int64(v)).fillMessage(req, v)
	if mutate != nil {
		mutate(req)
	}
	client := "stale-client"
	hdr := requestHeader{Key: key, Version: v, CorrID: 77, ClientID: &client, Known: true, Flexible: req.IsFlexible()}
	return hdr, req.AppendTo(nil)
}

// decodeLocal decodes a response the proxy made.
func decodeLocal(t *testing.T, hdr requestHeader, out []byte) kmsg.Response {
	t.Helper()
	hl, err := responseHeaderLen(hdr.Key, hdr.Version, out)
	if err != nil {
		t.Fatal(err)
	}
	resp := kmsg.ResponseForKey(hdr.Key)
	resp.SetVersion(hdr.Version)
	if err := resp.ReadFrom(out[hl:]); err != nil {
		t.Fatalf("the answer does not decode: %v", err)
	}
	return resp
}

// TestStaleAnswersEveryVersion: after a switch, every group API of a
// member the current cluster did not issue is answered by the proxy, at
// every version kmsg knows, with a response that decodes and carries the
// answer of the table in members.go where the client reads it: at the top
// level, on every partition, or echoing the members that leave.
func TestStaleAnswersEveryVersion(t *testing.T) {
	setEpoch := func(e int32) func(kmsg.Request) {
		return func(r kmsg.Request) { r.(*kmsg.ConsumerGroupHeartbeatRequest).MemberEpoch = e }
	}
	cases := []struct {
		name    string
		key     int16
		mutate  func(kmsg.Request)
		kip848  bool  // sent on a connection that sent ConsumerGroupHeartbeats
		rdkafka bool  // sent by librdkafka
		want    int16 // -1: the request is forwarded
		// from: the first version that names a member (earlier ones are
		// forwarded).
		from int16
		// again: the answer to the same request sent a second time.
		again int16
	}{
		{name: "Heartbeat", key: keyHeartbeat, want: kerr.UnknownMemberID.Code, again: kerr.UnknownMemberID.Code},
		{name: "SyncGroup", key: keySyncGroup, want: kerr.UnknownMemberID.Code, again: kerr.UnknownMemberID.Code},
		{name: "JoinGroup", key: keyJoinGroup, want: kerr.RebalanceInProgress.Code, again: kerr.UnknownMemberID.Code},
		{name: "JoinGroup/librdkafka", key: keyJoinGroup, rdkafka: true, want: kerr.IllegalGeneration.Code, again: kerr.UnknownMemberID.Code},
		{name: "OffsetCommit/classic", key: keyOffsetCommit, from: 1, want: kerr.RebalanceInProgress.Code, again: kerr.RebalanceInProgress.Code},
		{name: "OffsetCommit/kip848", key: keyOffsetCommit, from: 1, kip848: true, want: kerr.UnknownMemberID.Code, again: kerr.UnknownMemberID.Code},
		{name: "TxnOffsetCommit", key: keyTxnOffsetCommit, from: 3, want: kerr.UnknownMemberID.Code, again: kerr.UnknownMemberID.Code},
		{name: "ConsumerGroupHeartbeat", key: keyConsumerGroupHeartbeat, mutate: setEpoch(7), want: kerr.UnknownMemberID.Code, again: kerr.UnknownMemberID.Code},
		{name: "ConsumerGroupHeartbeat/leave", key: keyConsumerGroupHeartbeat, mutate: setEpoch(-1), want: 0, again: 0},
		{name: "ConsumerGroupHeartbeat/static-leave", key: keyConsumerGroupHeartbeat, mutate: setEpoch(-2), want: 0, again: 0},
		{name: "ConsumerGroupHeartbeat/join", key: keyConsumerGroupHeartbeat, mutate: setEpoch(0), want: -1, again: -1},
		{name: "LeaveGroup", key: keyLeaveGroup, want: 0, again: 0},
		{name: "DeleteRecords", key: keyDeleteRecords, want: kerr.NotLeaderForPartition.Code, again: kerr.NotLeaderForPartition.Code},
	}
	n := 0
	for _, tc := range cases {
		maxV := kmsg.RequestForKey(tc.key).MaxVersion()
		for v := int16(0); v <= maxV; v++ {
			n++
			t.Run(fmt.Sprintf("%s/v%d", tc.name, v), func(t *testing.T) {
				p, _ := newOfflineProxy(t)
				c := &clientConn{p: p, sentConsumerHeartbeat: tc.kip848, librdkafka: tc.rdkafka}
				hdr, body := staleRequest(tc.key, v, tc.mutate)
				if local, _ := p.checkStale(c, hdr, body, nil); local != nil {
					t.Fatalf("answered before any switch")
				}
				p.members.reset()
				if tc.key == keyDeleteRecords {
					// A stale membership is outstanding.
					h, b := staleRequest(keyHeartbeat, 0, nil)
					if local, _ := p.checkStale(c, h, b, nil); local == nil {
						t.Fatal("stale heartbeat forwarded")
					}
				}
				for i, want := range []int16{tc.want, tc.again} {
					if v < tc.from {
						want = -1
					}
					local, _ := p.checkStale(c, hdr, body, nil)
					if want < 0 {
						if local != nil {
							t.Fatalf("request %d answered by the proxy, want it forwarded", i+1)
						}
						continue
					}
					if local == nil {
						t.Fatalf("request %d forwarded, want answer %v", i+1, kerr.ErrorForCode(want))
					}
					checkStaleAnswer(t, hdr, body, decodeLocal(t, hdr, local), want)
				}
			})
		}
	}
	t.Logf("walked %d request versions", n)
}

// checkStaleAnswer checks that resp carries code on every partition or at
// the top level, and that a leave echoes who left.
func checkStaleAnswer(t *testing.T, hdr requestHeader, body []byte, resp kmsg.Response, code int16) {
	t.Helper()
	parts, others := errorCodes(reflect.ValueOf(resp).Elem())
	for _, c := range append(parts, others...) {
		if c != code && !(c == 0 && code != 0 && len(parts) > 0) {
			t.Errorf("error %d in the answer, want %d", c, code)
		}
	}
	found := code == 0
	for _, c := range append(parts, others...) {
		found = found || c == code
	}
	if !found {
		t.Errorf("the answer carries no error %d (partition codes %v, others %v)", code, parts, others)
	}
	req := kmsg.RequestForKey(hdr.Key)
	if err := decodeRequest(req, hdr, body); err != nil {
		t.Fatal(err)
	}
	switch r := req.(type) {
	case *kmsg.LeaveGroupRequest:
		lr := resp.(*kmsg.LeaveGroupResponse)
		if len(lr.Members) != len(r.Members) {
			t.Fatalf("leave answer names %d members, the request %d", len(lr.Members), len(r.Members))
		}
		for i, m := range lr.Members {
			if m.MemberID != r.Members[i].MemberID || !reflect.DeepEqual(m.InstanceID, r.Members[i].InstanceID) {
				t.Errorf("leave answer member %d: %q/%v, want %q/%v", i, m.MemberID, m.InstanceID, r.Members[i].MemberID, r.Members[i].InstanceID)
			}
		}
	case *kmsg.ConsumerGroupHeartbeatRequest:
		cr := resp.(*kmsg.ConsumerGroupHeartbeatResponse)
		if code == 0 && (cr.MemberID == nil || *cr.MemberID != r.MemberID || cr.MemberEpoch != r.MemberEpoch) {
			t.Errorf("leave answer: member %v epoch %d, want %q %d", cr.MemberID, cr.MemberEpoch, r.MemberID, r.MemberEpoch)
		}
	case *kmsg.OffsetCommitRequest, *kmsg.TxnOffsetCommitRequest, *kmsg.DeleteRecordsRequest:
		if len(parts) == 0 {
			t.Errorf("no partition answered")
		}
	}
}

// TestStaleMemberLearning: members the current cluster issues — a
// JoinGroup's member id, including the one MEMBER_ID_REQUIRED hands out,
// and the epochs of a KIP-848 member — are forwarded; the same member with
// an epoch of the old cluster is not.
func TestStaleMemberLearning(t *testing.T) {
	p, _ := newOfflineProxy(t)
	c := &clientConn{p: p}
	p.members.reset()
	respond := func(note *memberNote, hdr requestHeader, resp kmsg.Response) {
		t.Helper()
		if note == nil {
			t.Fatalf("%s forwarded with nothing to learn", apiName(hdr.Key))
		}
		resp.SetVersion(hdr.Version)
		p.learnMember(note, hdr, responseFrame(hdr.Key, hdr.Version, hdr.CorrID, resp.AppendTo(nil)))
	}
	forwarded := func(key, v int16, mutate func(kmsg.Request)) (requestHeader, *memberNote) {
		t.Helper()
		hdr, body := staleRequest(key, v, mutate)
		local, note := p.checkStale(c, hdr, body, nil)
		if local != nil {
			t.Fatalf("%s v%d answered by the proxy, want it forwarded", apiName(key), v)
		}
		return hdr, note
	}
	answered := func(key, v int16, mutate func(kmsg.Request)) {
		t.Helper()
		hdr, body := staleRequest(key, v, mutate)
		if local, _ := p.checkStale(c, hdr, body, nil); local == nil {
			t.Fatalf("%s v%d forwarded, want it answered", apiName(key), v)
		}
	}

	// Classic: join without an id, MEMBER_ID_REQUIRED, join with it.
	hdr, note := forwarded(keyJoinGroup, 9, func(r kmsg.Request) {
		r.(*kmsg.JoinGroupRequest).Group, r.(*kmsg.JoinGroupRequest).MemberID = "g", ""
	})
	jr := kmsg.NewPtrJoinGroupResponse()
	jr.ErrorCode, jr.MemberID = kerr.MemberIDRequired.Code, "m-new"
	respond(note, hdr, jr)
	hdr, note = forwarded(keyJoinGroup, 9, func(r kmsg.Request) {
		r.(*kmsg.JoinGroupRequest).Group, r.(*kmsg.JoinGroupRequest).MemberID = "g", "m-new"
	})
	jr.ErrorCode = 0
	respond(note, hdr, jr)
	forwarded(keyHeartbeat, 4, func(r kmsg.Request) {
		r.(*kmsg.HeartbeatRequest).Group, r.(*kmsg.HeartbeatRequest).MemberID = "g", "m-new"
	})
	forwarded(keyOffsetCommit, 9, func(r kmsg.Request) {
		r.(*kmsg.OffsetCommitRequest).Group, r.(*kmsg.OffsetCommitRequest).MemberID = "g", "m-new"
	})
	// Another group's member of that id is not this one.
	answered(keyHeartbeat, 4, func(r kmsg.Request) {
		r.(*kmsg.HeartbeatRequest).Group, r.(*kmsg.HeartbeatRequest).MemberID = "other", "m-new"
	})

	// KIP-848: the client's member id with the old cluster's epoch 41 is
	// stale; it rejoins at epoch 0 and the new cluster issues epoch 3.
	cgh := func(epoch int32) func(kmsg.Request) {
		return func(r kmsg.Request) {
			h := r.(*kmsg.ConsumerGroupHeartbeatRequest)
			h.Group, h.MemberID, h.MemberEpoch = "g848", "m848", epoch
		}
	}
	commit := func(epoch int32) func(kmsg.Request) {
		return func(r kmsg.Request) {
			o := r.(*kmsg.OffsetCommitRequest)
			o.Group, o.MemberID, o.Generation = "g848", "m848", epoch
		}
	}
	answered(keyConsumerGroupHeartbeat, 1, cgh(41))
	hdr, note = forwarded(keyConsumerGroupHeartbeat, 1, cgh(0))
	cr := kmsg.NewPtrConsumerGroupHeartbeatResponse()
	cr.MemberID, cr.MemberEpoch = kmsg.StringPtr("m848"), 3
	respond(note, hdr, cr)
	forwarded(keyConsumerGroupHeartbeat, 1, cgh(3))
	forwarded(keyOffsetCommit, 9, commit(3))
	answered(keyOffsetCommit, 9, commit(41))
	answered(keyConsumerGroupHeartbeat, 1, cgh(41))

	// A response to a request sent before a switch issues nothing.
	hdr, note = forwarded(keyJoinGroup, 9, func(r kmsg.Request) {
		r.(*kmsg.JoinGroupRequest).Group, r.(*kmsg.JoinGroupRequest).MemberID = "g", ""
	})
	p.members.reset()
	jr.MemberID = "m-late"
	respond(note, hdr, jr)
	answered(keyHeartbeat, 4, func(r kmsg.Request) {
		r.(*kmsg.HeartbeatRequest).Group, r.(*kmsg.HeartbeatRequest).MemberID = "g", "m-late"
	})
}

// TestStaleCheckBeforeSwitchDecodesNothing: before the first switch the
// check reads the key and nothing else: no allocation for any key.
func TestStaleCheckBeforeSwitchDecodesNothing(t *testing.T) {
	p, _ := newOfflineProxy(t)
	c := &clientConn{p: p}
	for _, key := range []int16{keyProduce, keyFetch, keyHeartbeat, keyJoinGroup, keySyncGroup, keyLeaveGroup,
		keyOffsetCommit, keyTxnOffsetCommit, keyConsumerGroupHeartbeat, keyDeleteRecords} {
		hdr, body := staleRequest(key, kmsg.RequestForKey(key).MaxVersion(), nil)
		if allocs := testing.AllocsPerRun(50, func() { p.checkStale(c, hdr, body, nil) }); allocs != 0 {
			t.Errorf("%s: %v allocations per request before any switch, want 0", apiName(key), allocs)
		}
	}
}
