package controlclient

import (
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
)

// TestHoldLease: a hold lease extends the proxy's holds, from when it
// arrives, for its validity — if it is for the desired state the sidecar
// applied, or for the newest one received while it is being applied (the
// switch of a flip may still run). A lease for any other version (one the
// sidecar moved past, one it never received), or without a positive
// validity, changes nothing.
func TestHoldLease(t *testing.T) {
	fp := newFakeProxy("source", "source", "target")
	fc := startFake(t, "127.0.0.1:0")
	tc := startClient(t, fp, testConfig(fc.addr))
	mark := fc.mark()
	fc.send(t, desired(4, "source", "HOLD", 0))
	fc.ack(t, mark, 4)

	outcomes := map[string]float64{}
	lease := func(name string, v uint64, validFor *durationpb.Duration, outcome string) {
		t.Helper()
		before := time.Now()
		fc.sendResponse(t, &switchyardv1.ConnectResponse{HoldLease: &switchyardv1.HoldLease{Version: v, ValidFor: validFor}})
		outcomes[outcome]++
		waitFor(t, name+": lease "+outcome, func() bool {
			return tc.metric(t, "switchyard_sidecar_hold_leases_total", "outcome", outcome) == outcomes[outcome]
		})
		leases := fp.leasesSoFar()
		if got, want := len(leases), int(outcomes["honoured"]); got != want {
			t.Fatalf("%s: the proxy's hold was extended %d times, want %d", name, got, want)
		}
		if outcome == "honoured" {
			d := validFor.AsDuration()
			if until := leases[len(leases)-1]; until.Before(before.Add(d)) || until.After(time.Now().Add(d)) {
				t.Errorf("%s: hold extended until %v, want %v after the lease arrived (sent at %v)", name, until, d, before)
			}
		}
	}
	sec := durationpb.New(2 * time.Second)
	lease("the applied version", 4, sec, "honoured")
	lease("an older version", 3, sec, "ignored")
	lease("a version never received", 5, sec, "ignored")
	lease("no version", 0, sec, "ignored")
	lease("no validity", 4, nil, "ignored")
	lease("a negative validity", 4, durationpb.New(-time.Second), "ignored")
	lease("an invalid duration", 4, &durationpb.Duration{Seconds: 1, Nanos: -5}, "ignored")

	// A flip whose switch is still running: the lease the control plane
	// sends for it already counts, and the one for the state applied
	// still does too.
	fp.mu.Lock()
	fp.block = true
	fp.mu.Unlock()
	fc.send(t, desired(5, "target", "HOLD", 0))
	select {
	case <-fp.switchCtx:
	case <-time.After(waitTimeout):
		t.Fatal("the switch of version 5 did not start")
	}
	lease("the version being applied", 5, sec, "honoured")
	lease("the version applied, during the switch", 4, sec, "honoured")
	lease("a version below the one applied", 2, sec, "ignored")
}
