package control

import (
	"testing"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
)

// TestDrainBusyNamesOpenTransactions: a sidecar counts an open transaction
// as one Produce and one EndTxn in flight; the drain's reason tells open
// transactions from produce requests.
func TestDrainBusyNamesOpenTransactions(t *testing.T) {
	for _, tc := range []struct {
		name     string
		inflight map[int32]int64
		want     string
	}{
		{"produce only", map[int32]int64{produceKey: 3}, "3 produce requests in flight"},
		{"one request", map[int32]int64{produceKey: 1}, "1 produce request in flight"},
		{"transactions only", map[int32]int64{produceKey: 2, endTxnKey: 2}, "2 transactions still open"},
		{"both", map[int32]int64{produceKey: 5, endTxnKey: 2}, "3 produce requests in flight, 2 transactions still open"},
		// An EndTxn in flight beside the transaction it ends.
		{"ending", map[int32]int64{produceKey: 1, endTxnKey: 2}, "1 transaction still open"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := drainBusy(&switchyardv1.ProxyStatus{InFlightByApi: tc.inflight}); got != tc.want {
				t.Errorf("drainBusy(%v) = %q, want %q", tc.inflight, got, tc.want)
			}
		})
	}
}
