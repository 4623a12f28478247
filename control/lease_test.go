package control

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
)

var newFeatures = []switchyardv1.SidecarFeature{
	switchyardv1.SidecarFeature_SIDECAR_FEATURE_GATE_REJECT_KEYS,
	switchyardv1.SidecarFeature_SIDECAR_FEATURE_HOLD_LEASE,
}

// TestGateSpecForFeatures: a gate with reject keys is sent as it is to a
// sidecar that announced them, and to one that did not, as the gate it
// understands that lets nothing through that is to be refused: every key
// refused, no budget. A gate without reject keys is the same for both.
func TestGateSpecForFeatures(t *testing.T) {
	flip := &gateSpec{APIKeys: []int32{produceKey}, Mode: "HOLD", HoldBudget: time.Second, RejectKeys: []int32{fetchKey}}
	hold := &gateSpec{APIKeys: []int32{produceKey}, Mode: "HOLD", HoldBudget: time.Second}
	for _, tt := range []struct {
		name     string
		g        *gateSpec
		features []switchyardv1.SidecarFeature
		want     *switchyardv1.Gate
	}{
		{"per-key modes understood", flip, newFeatures,
			&switchyardv1.Gate{ApiKeys: []int32{0}, Mode: "HOLD", HoldBudget: durationpb.New(time.Second), RejectApiKeys: []int32{1}}},
		{"per-key modes not understood", flip, nil, &switchyardv1.Gate{ApiKeys: []int32{0, 1}, Mode: "REJECT"}},
		{"no reject keys, new sidecar", hold, newFeatures, &switchyardv1.Gate{ApiKeys: []int32{0}, Mode: "HOLD", HoldBudget: durationpb.New(time.Second)}},
		{"no reject keys, old sidecar", hold, nil, &switchyardv1.Gate{ApiKeys: []int32{0}, Mode: "HOLD", HoldBudget: durationpb.New(time.Second)}},
	} {
		if got := tt.g.toProto(tt.features); !proto.Equal(got, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
	for _, tt := range []struct {
		g    *gateSpec
		want bool
	}{{flip, true}, {hold, true}, {nil, false}, {&gateSpec{APIKeys: []int32{1}, Mode: "REJECT"}, false},
		{&gateSpec{APIKeys: []int32{1}, Mode: "HOLD", RejectKeys: []int32{1}}, false}} {
		if got := tt.g.holds(); got != tt.want {
			t.Errorf("%+v holds = %v, want %v", tt.g, got, tt.want)
		}
	}
}

// TestCutoverFlipHoldsProduceAndLeases: with consumer groups under HOLD, a
// sidecar that announced per-key modes keeps Produce held through the flip
// while Fetch is refused; one that did not gets the gate it understands
// (both refused). While the cutover waits, the control plane renews the
// hold lease of the sidecars that announced leases, for the desired state
// they hold under and for the policy's hold budget — never for a state
// without a HOLD gate, never to a sidecar that did not ask.
func TestCutoverFlipHoldsProduceAndLeases(t *testing.T) {
	fm := &fakeMirror{ready: true}
	p := startPlane(t, "", fm)
	fresh := connectSidecarWith(t, p, "orders", "new", "source", newFeatures)
	old := connectSidecar(t, p, "orders", "old", "source")
	p.waitSidecars(2)
	sp := spec()
	const budget = 400 * time.Millisecond
	sp.Policy.HoldBudget, sp.Policy.DrainTimeout = durationpb.New(budget), durationpb.New(20*time.Second)
	resp, err := p.client.CreateCutover(p.authed(), &switchyardv1.CreateCutoverRequest{Spec: sp})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetCutover().GetId()
	p.waitCutover(id, switchyardv1.CutoverStep_CUTOVER_STEP_DRAIN)
	// The drain waits for the mirror: the hold is renewed meanwhile.
	deadline := time.Now().Add(10 * time.Second)
	for {
		fresh.mu.Lock()
		n := len(fresh.leases)
		fresh.mu.Unlock()
		if n >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d hold leases within 10s of the drain, want one every %v", n, leaseEvery(budget))
		}
		time.Sleep(10 * time.Millisecond)
	}
	fm.mu.Lock()
	fm.caughtUp = true
	fm.mu.Unlock()
	c := p.waitCutover(id, switchyardv1.CutoverStep_CUTOVER_STEP_DONE)
	if got, want := steps(c), "preflight gate drain sync-groups flip release verify done"; got != want {
		t.Errorf("steps %q, want %q", got, want)
	}

	for _, tt := range []struct {
		s    *fakeSidecar
		want string
	}{
		{fresh, "- source/HOLD[0] target/HOLD[0]+REJECT[1] target/REJECT[1] target/-"},
		{old, "- source/HOLD[0] target/REJECT[0 1] target/REJECT[1] target/-"},
	} {
		tt.s.mu.Lock()
		var seq []string
		holding := map[uint64]bool{}
		for _, d := range tt.s.received {
			seq = append(seq, gateSeq(d))
			if g := d.GetGate(); g.GetMode() == "HOLD" {
				holding[d.GetVersion()] = true
				if got := g.GetHoldBudget().AsDuration(); got != budget {
					t.Errorf("sidecar %s: HOLD gate of version %d with budget %v, want %v", tt.s.instance, d.GetVersion(), got, budget)
				}
			}
		}
		leases := slices.Clone(tt.s.leases)
		tt.s.mu.Unlock()
		if got := strings.Join(seq, " "); got != tt.want {
			t.Errorf("sidecar %s received %s, want %s", tt.s.instance, got, tt.want)
		}
		if tt.s == old && len(leases) > 0 {
			t.Errorf("sidecar %s, which announced no leases, got %d", tt.s.instance, len(leases))
		}
		for _, l := range leases {
			if !holding[l.GetVersion()] || l.GetValidFor().AsDuration() != budget {
				t.Errorf("sidecar %s: lease %v, want one for a version with a HOLD gate, valid for %v", tt.s.instance, l, budget)
			}
		}
	}
}

// gateSeq is "cluster/MODE[keys]+REJECT[keys]" for a desired state, "-"
// for the empty one and "cluster/-" for no gate.
func gateSeq(d *switchyardv1.DesiredState) string {
	if d.GetVersion() == 0 {
		return "-"
	}
	g := d.GetGate()
	if g == nil {
		return d.GetActiveCluster() + "/-"
	}
	s := fmt.Sprintf("%s/%s%v", d.GetActiveCluster(), g.GetMode(), g.GetApiKeys())
	if len(g.GetRejectApiKeys()) > 0 {
		s += fmt.Sprintf("+REJECT%v", g.GetRejectApiKeys())
	}
	return s
}
