package admin

import (
	"errors"
	"slices"
	"testing"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
	"github.com/switchyard/switchyard/proxy"
)

func TestGateFromProto(t *testing.T) {
	tests := []struct {
		name string
		in   *switchyardv1.Gate
		want proxy.Gate
		err  error
	}{
		{"nil is no gate", nil, proxy.Gate{}, nil},
		{"hold", &switchyardv1.Gate{ApiKeys: []int32{0, 8}, Mode: "HOLD"}, proxy.Gate{APIKeys: []int16{0, 8}, Mode: proxy.GateHold}, nil},
		{"mode in any case", &switchyardv1.Gate{ApiKeys: []int32{0}, Mode: "reject"}, proxy.Gate{APIKeys: []int16{0}, Mode: proxy.GateReject}, nil},
		{"no mode", &switchyardv1.Gate{ApiKeys: []int32{0}}, proxy.Gate{}, proxy.ErrInvalidGate},
		{"no keys", &switchyardv1.Gate{Mode: "HOLD"}, proxy.Gate{}, proxy.ErrInvalidGate},
		{"key beyond int16", &switchyardv1.Gate{ApiKeys: []int32{32768}, Mode: "HOLD"}, proxy.Gate{}, proxy.ErrInvalidGate},
		{"negative key", &switchyardv1.Gate{ApiKeys: []int32{-1}, Mode: "HOLD"}, proxy.Gate{}, proxy.ErrInvalidGate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := GateFromProto(tt.in)
			if !errors.Is(err, tt.err) {
				t.Fatalf("GateFromProto = %v, want %v", err, tt.err)
			}
			if got.Mode != tt.want.Mode || !slices.Equal(got.APIKeys, tt.want.APIKeys) {
				t.Errorf("GateFromProto = %+v, want %+v", got, tt.want)
			}
			// Round trip through gateToProto for the valid ones.
			if err == nil && len(got.APIKeys) > 0 {
				back := gateToProto(got)
				if !slices.Equal(back.GetApiKeys(), tt.in.GetApiKeys()) || back.GetMode() != got.Mode.String() {
					t.Errorf("round trip: %v", back)
				}
			}
		})
	}
}
