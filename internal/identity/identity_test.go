package identity

import (
	"fmt"
	"strings"
	"testing"
)

func TestCheckName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"orders", true},
		{"shop/orders-7d9f-abcde", true},
		{"", true},
		{strings.Repeat("a", 253), true},
		{strings.Repeat("a", 254), false},
		{"with space", false},
		{"tab\there", false},
		{"ünïcode", false},
		{"nul\x00", false},
	} {
		if err := CheckName(tc.name); (err == nil) != tc.ok {
			t.Errorf("CheckName(%.20q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

func TestCheckLabels(t *testing.T) {
	many := map[string]string{}
	for i := range MaxLabels + 1 {
		many[fmt.Sprintf("k%d", i)] = "v"
	}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   string // "" ok
	}{
		{"none", nil, ""},
		{"kubernetes style", map[string]string{"app.kubernetes.io/name": "orders", "role": "producer", "empty": ""}, ""},
		{"empty key", map[string]string{"": "x"}, "empty key"},
		{"comma in value", map[string]string{"role": "a,b"}, "value"},
		{"equals in key", map[string]string{"a=b": "c"}, "key"},
		{"long value", map[string]string{"k": strings.Repeat("v", 254)}, "at most 253"},
		{"long key", map[string]string{strings.Repeat("k", 254): ""}, "at most 253"},
		{"too many", many, fmt.Sprintf("%d labels: at most %d", MaxLabels+1, MaxLabels)},
	} {
		err := CheckLabels(tc.labels)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	if len(many) == MaxLabels+1 {
		delete(many, "k0")
		if err := CheckLabels(many); err != nil {
			t.Errorf("%d labels: %v", MaxLabels, err)
		}
	}
}
