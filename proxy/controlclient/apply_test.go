package controlclient

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
	"github.com/switchyard/switchyard/proxy"
)

func newRegistry() *prometheus.Registry { return prometheus.NewRegistry() }

// TestReconcileOrder: a gate added with a switch goes on before it, one
// lifted with a switch comes off after it, and during the switch every key
// blocked before or after is blocked; a state that cannot apply changes
// nothing.
func TestReconcileOrder(t *testing.T) {
	hold0 := proxy.Gate{APIKeys: []int16{0}, Mode: proxy.GateHold}
	tests := []struct {
		name    string
		active  string
		gate    proxy.Gate
		desired *switchyardv1.DesiredState
		ops     []string
		err     error
	}{
		{"gate added with the switch", "source", proxy.Gate{}, desired(1, "target", "HOLD", 0),
			[]string{"set HOLD[0]", "switch target under HOLD[0]"}, nil},
		{"gate lifted with the switch", "source", hold0, desired(1, "target", ""),
			[]string{"switch target under HOLD[0]", "clear"}, nil},
		// Produce, held before, stays held through the switch (and is
		// released onto the target): only the keys the new gate blocks
		// take its mode.
		{"gate changed with the switch", "source", hold0, desired(1, "target", "REJECT", 1),
			[]string{"set HOLD[0]+REJECT[1]", "switch target under HOLD[0]+REJECT[1]", "set REJECT[1]"}, nil},
		{"a cutover's flip: Produce held, Fetch refused", "source", hold0, withReject(desired(1, "target", "HOLD", 0), 1),
			[]string{"set HOLD[0]+REJECT[1]", "switch target under HOLD[0]+REJECT[1]"}, nil},
		{"reject keys alone", "source", proxy.Gate{}, withReject(desired(1, "source", ""), 1, 8),
			[]string{"set REJECT[1 8]"}, nil},
		{"reject key out of range", "source", proxy.Gate{}, withReject(desired(1, "target", "HOLD", 0), 40000), nil, proxy.ErrInvalidGate},
		{"gate kept through the switch", "source", hold0, desired(1, "target", "hold", 0),
			[]string{"switch target under HOLD[0]"}, nil},
		{"gate set, no switch", "source", proxy.Gate{}, desired(1, "source", "REJECT", 0, 8),
			[]string{"set REJECT[0 8]"}, nil},
		{"gate mode changed, no switch", "source", hold0, desired(1, "source", "REJECT", 0),
			[]string{"set REJECT[0]"}, nil},
		{"gate lifted, no switch", "source", hold0, desired(1, "source", ""), []string{"clear"}, nil},
		{"switch alone", "source", proxy.Gate{}, desired(1, "target", ""), []string{"switch target under no gate"}, nil},
		{"already so", "target", hold0, desired(1, "target", "HOLD", 0), nil, nil},
		{"unknown cluster", "source", proxy.Gate{}, desired(1, "nowhere", "HOLD", 0), nil, proxy.ErrUnknownCluster},
		{"no active cluster", "source", proxy.Gate{}, desired(1, "", "HOLD", 0), nil, ErrInvalidDesiredState},
		{"unknown gate mode", "source", proxy.Gate{}, desired(1, "target", "PAUSE", 0), nil, proxy.ErrInvalidGate},
		{"gate without keys", "source", proxy.Gate{}, desired(1, "target", "HOLD"), nil, proxy.ErrInvalidGate},
		{"API key out of range", "source", proxy.Gate{}, desired(1, "target", "HOLD", 40000), nil, proxy.ErrInvalidGate},
		{"gate the proxy refuses, with a switch", "source", proxy.Gate{}, desired(1, "target", "HOLD", 18), nil, proxy.ErrInvalidGate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fp := newFakeProxy(tt.active, "source", "target")
			fp.gate = tt.gate
			c, err := New(testConfig("127.0.0.1:1"), fp, newRegistry(), nil)
			if err != nil {
				t.Fatal(err)
			}
			err = c.reconcile(context.Background(), tt.desired)
			if !errors.Is(err, tt.err) {
				t.Errorf("reconcile = %v, want %v", err, tt.err)
			}
			if got := fp.opsSoFar(); !slices.Equal(got, tt.ops) {
				t.Errorf("ops = %q, want %q", got, tt.ops)
			}
		})
	}
}

// withReject adds reject keys to d's gate (making one if d has none).
func withReject(d *switchyardv1.DesiredState, keys ...int32) *switchyardv1.DesiredState {
	if d.Gate == nil {
		d.Gate = &switchyardv1.Gate{}
	}
	d.Gate.RejectApiKeys = keys
	return d
}

func TestUnionAndSameGate(t *testing.T) {
	g := func(m proxy.GateMode, keys ...int16) proxy.Gate { return proxy.Gate{APIKeys: keys, Mode: m} }
	hr := func(hold []int16, reject ...int16) proxy.Gate {
		return proxy.Gate{APIKeys: hold, Mode: proxy.GateHold, RejectKeys: reject}
	}
	none := proxy.Gate{}
	unions := []struct {
		name    string
		a, b, w proxy.Gate
	}{
		{"none and none", none, none, none},
		{"none and b", none, g(proxy.GateHold, 0), g(proxy.GateHold, 0)},
		{"a and none", g(proxy.GateReject, 1), none, g(proxy.GateReject, 1)},
		{"overlap takes b's mode, the rest keeps a's", g(proxy.GateHold, 8, 0), g(proxy.GateReject, 0, 1), hr([]int16{8}, 0, 1)},
		{"a REJECT gate's keys stay refused", g(proxy.GateReject, 8), g(proxy.GateHold, 0), hr([]int16{0}, 8)},
		{"b's hold over a's refusal", g(proxy.GateReject, 0), g(proxy.GateHold, 0), g(proxy.GateHold, 0)},
		{"the flip: Produce held, Fetch refused", g(proxy.GateHold, 0), hr([]int16{0}, 1), hr([]int16{0}, 1)},
		{"the release after the flip", hr([]int16{0}, 1), g(proxy.GateReject, 1), hr([]int16{0}, 1)},
		{"per-key modes on both sides", hr([]int16{0, 8}, 1), hr([]int16{8}, 0), hr([]int16{8}, 0, 1)},
	}
	for _, tt := range unions {
		got := unionGate(tt.a, tt.b)
		if !sameGate(got, tt.w) || !slices.IsSorted(got.APIKeys) || !slices.IsSorted(got.RejectKeys) {
			t.Errorf("%s: unionGate = %s, want %s", tt.name, gateString(got), gateString(tt.w))
		}
	}
	budgets := []struct {
		name string
		a, b proxy.Gate
		want time.Duration
	}{
		{"b holds: b's", proxy.Gate{APIKeys: []int16{0}, Mode: proxy.GateHold, HoldBudget: time.Second},
			proxy.Gate{APIKeys: []int16{0}, Mode: proxy.GateHold, HoldBudget: 2 * time.Second}, 2 * time.Second},
		{"b only refuses: a's", proxy.Gate{APIKeys: []int16{0}, Mode: proxy.GateHold, HoldBudget: time.Second},
			proxy.Gate{APIKeys: []int16{1}, Mode: proxy.GateReject}, time.Second},
	}
	for _, tt := range budgets {
		if got := unionGate(tt.a, tt.b).HoldBudget; got != tt.want {
			t.Errorf("%s: union's budget %v, want %v", tt.name, got, tt.want)
		}
	}
	sames := []struct {
		name string
		a, b proxy.Gate
		want bool
	}{
		{"none, whatever the mode", none, g(proxy.GateHold), true},
		{"order and duplicates do not matter", g(proxy.GateHold, 1, 0, 0), g(proxy.GateHold, 0, 1), true},
		{"mode matters", g(proxy.GateHold, 0), g(proxy.GateReject, 0), false},
		{"keys matter", g(proxy.GateHold, 0), g(proxy.GateHold, 0, 1), false},
		{"reject keys matter", hr([]int16{0}, 1), g(proxy.GateHold, 0), false},
		{"per-key modes matter", hr([]int16{0}, 1), g(proxy.GateHold, 0, 1), false},
		{"every key refused is a REJECT gate", hr(nil, 0, 1), g(proxy.GateReject, 1, 0), true},
		{"a key in both lists is refused", hr([]int16{0, 1}, 1), hr([]int16{0}, 1), true},
		{"budget matters", proxy.Gate{APIKeys: []int16{0}, Mode: proxy.GateHold, HoldBudget: time.Second}, g(proxy.GateHold, 0), false},
		{"none vs some", none, g(proxy.GateHold, 0), false},
	}
	for _, tt := range sames {
		if got := sameGate(tt.a, tt.b); got != tt.want {
			t.Errorf("%s: sameGate = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestRetryable(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{fmt.Errorf("switch to %q: %w", "t", proxy.ErrUnreachable), true},
		{fmt.Errorf("switch to %q: %w", "t", proxy.ErrSwitchInProgress), true},
		{fmt.Errorf("switch to %q: %w", "t", proxy.ErrClosed), true},
		{errors.New("something else"), true},
		{fmt.Errorf("x: %w", proxy.ErrUnknownCluster), false},
		{fmt.Errorf("x: %w", proxy.ErrInvalidGate), false},
		{fmt.Errorf("x: %w", ErrInvalidDesiredState), false},
		{fmt.Errorf("x: %w", ErrStaleVersion), false},
		{fmt.Errorf("x: %w", ErrVersionConflict), false},
		{fmt.Errorf("switch abandoned: %w", context.Canceled), false},
	}
	for _, tt := range tests {
		if got := retryable(tt.err); got != tt.want {
			t.Errorf("retryable(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestBackoff(t *testing.T) {
	b := newBackoff(100*time.Millisecond, time.Second)
	ceil := 100 * time.Millisecond
	for i := range 10 {
		d := b.next()
		if d < ceil/2 || d > ceil {
			t.Errorf("delay %d = %v, want within [%v, %v]", i, d, ceil/2, ceil)
		}
		ceil = min(ceil*2, time.Second)
	}
	b.reset()
	if d := b.next(); d > 100*time.Millisecond {
		t.Errorf("after reset: %v, want at most 100ms", d)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string // "" : valid
	}{
		{"valid", func(*Config) {}, ""},
		{"no labels", func(c *Config) { c.Labels = nil }, ""},
		{"DNS name", func(c *Config) { c.Address = "switchyard-control.switchyard:9300" }, ""},
		{"no address", func(c *Config) { c.Address = "" }, "address"},
		{"address without port", func(c *Config) { c.Address = "control" }, "address"},
		{"address with bad port", func(c *Config) { c.Address = "control:0" }, "address"},
		{"address without host", func(c *Config) { c.Address = ":9300" }, "address"},
		{"no app", func(c *Config) { c.App = "" }, "app: required"},
		{"app with a space", func(c *Config) { c.App = "my app" }, "app:"},
		{"no instance", func(c *Config) { c.Instance = "" }, "instance: required"},
		{"empty label key", func(c *Config) { c.Labels = map[string]string{"": "x"} }, "labels: empty key"},
		{"label key with =", func(c *Config) { c.Labels = map[string]string{"a=b": "x"} }, "labels: key"},
		{"label value with ,", func(c *Config) { c.Labels = map[string]string{"role": "a,b"} }, "labels: role: value"},
		{"prefixed label key", func(c *Config) { c.Labels = map[string]string{"example.com/role": "producer"} }, ""},
		{"empty label value", func(c *Config) { c.Labels = map[string]string{"canary": ""} }, ""},
		{"status interval", func(c *Config) { c.StatusInterval = 0 }, "statusInterval"},
		{"negative startup wait", func(c *Config) { c.StartupWait = -time.Second }, "startupWait"},
		{"backoff", func(c *Config) { c.MinBackoff = 0 }, "minBackoff"},
		{"backoff bounds", func(c *Config) { c.MaxBackoff = c.MinBackoff / 2 }, "maxBackoff"},
		{"token over plaintext to loopback", func(c *Config) { c.Token = "t" }, ""},
		{"token over plaintext to localhost", func(c *Config) { c.Token, c.Address = "t", "localhost:9300" }, ""},
		{"token over plaintext to IPv6 loopback", func(c *Config) { c.Token, c.Address = "t", "[::1]:9300" }, ""},
		{"token over plaintext off loopback", func(c *Config) { c.Token, c.Address = "t", "switchyard-control.switchyard:9300" },
			"token: not sent in the clear to switchyard-control.switchyard:9300"},
		{"token over plaintext to a routable IP", func(c *Config) { c.Token, c.Address = "t", "10.0.0.7:9300" }, "allowPlaintextToken"},
		{"token over plaintext off loopback, allowed", func(c *Config) {
			c.Token, c.Address, c.AllowPlaintextToken = "t", "switchyard-control.switchyard:9300", true
		}, ""},
		{"token over TLS off loopback", func(c *Config) {
			c.Token, c.Address, c.TLS.ServerName = "t", "switchyard-control.switchyard:9300", "control"
		}, ""},
		{"no token over plaintext off loopback", func(c *Config) { c.Address = "switchyard-control.switchyard:9300" }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig("127.0.0.1:9300")
			tt.mutate(&cfg)
			err := cfg.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Validate() = %v, want an error naming %q", err, tt.want)
			}
		})
	}
}

// TestNew: New checks its configuration and arguments, and registers the
// metrics (once per registry).
func TestNew(t *testing.T) {
	fp := newFakeProxy("source", "source")
	reg := newRegistry()
	if _, err := New(testConfig("127.0.0.1:9300"), fp, reg, nil); err != nil {
		t.Fatalf("New: %v", err)
	}
	if _, err := New(testConfig("127.0.0.1:9300"), fp, reg, nil); err == nil {
		t.Error("New twice on one registry: no error")
	}
	cfg := testConfig("127.0.0.1:9300")
	cfg.App = ""
	if _, err := New(cfg, fp, newRegistry(), nil); err == nil || !strings.Contains(err.Error(), "app") {
		t.Errorf("New without app = %v, want an error naming app", err)
	}
	if _, err := New(testConfig("127.0.0.1:9300"), nil, newRegistry(), nil); err == nil {
		t.Error("New with a nil Proxy: no error")
	}
}
