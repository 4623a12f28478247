package topics

import (
	"strings"
	"testing"
)

func TestSelects(t *testing.T) {
	tests := []struct {
		name   string
		policy Policy
		yes    []string
		no     []string
	}{
		{
			name: "zero policy: everything but internal topics",
			yes:  []string{"orders", "payments.v1", "app-KSTREAM-AGGREGATE-STATE-STORE-0000000001-changelog", "heartbeats", "my-connect-configs", "schemas"},
			no: []string{"__consumer_offsets", "__transaction_state", "__switchyard_mirror_a", "__amazon_msk_canary",
				"_schemas", "connect-configs", "connect-offsets", "connect-status", "_confluent-metrics",
				"_confluent-ksql-default__command_topic", "_redpanda.audit_log", "mm2-offset-syncs.a.internal",
				"a.checkpoints.internal"},
		},
		{
			name:   "include is anchored",
			policy: Policy{Include: []string{"orders", `pay\..*`}},
			yes:    []string{"orders", "pay.v1"},
			no:     []string{"orders2", "my-orders", "pay", "xpay.v1"},
		},
		{
			name:   "alternation is anchored as a whole",
			policy: Policy{Include: []string{"a|b"}},
			yes:    []string{"a", "b"},
			no:     []string{"ab", "xa", "bx"},
		},
		{
			name:   "exclude wins over include",
			policy: Policy{Include: []string{"orders.*"}, Exclude: []string{".*-tmp"}},
			yes:    []string{"orders", "orders-eu"},
			no:     []string{"orders-tmp"},
		},
		{
			name:   "include does not reach internal topics",
			policy: Policy{Include: []string{".*"}},
			yes:    []string{"orders"},
			no:     []string{"_schemas", "__consumer_offsets", "connect-status"},
		},
		{
			name:   "opt-in by exact name, without an include match",
			policy: Policy{Include: []string{"orders"}, IncludeInternal: []string{"_schemas", "connect-configs", "__switchyard_x"}},
			yes:    []string{"orders", "_schemas", "connect-configs", "__switchyard_x"},
			no:     []string{"connect-offsets", "__switchyard_y", "_schemas2"},
		},
		{
			name:   "exclude wins over opt-in",
			policy: Policy{IncludeInternal: []string{"_schemas"}, Exclude: []string{"_schemas"}},
			no:     []string{"_schemas"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := tt.policy.Compile()
			if err != nil {
				t.Fatal(err)
			}
			for _, topic := range tt.yes {
				if !s.Selects(topic) {
					t.Errorf("Selects(%q) = false, want true", topic)
				}
			}
			for _, topic := range tt.no {
				if s.Selects(topic) {
					t.Errorf("Selects(%q) = true, want false", topic)
				}
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name   string
		policy Policy
		want   string
	}{
		{"bad include", Policy{Include: []string{"ok", "orders("}}, `include: pattern "orders("`},
		{"bad exclude", Policy{Exclude: []string{"[a-"}}, `exclude: pattern "[a-"`},
		{"opt-in of an ordinary topic", Policy{IncludeInternal: []string{"_schema"}}, `includeInternal: "_schema" is not an internal topic`},
		{"prefix with a slash", Policy{Prefix: "dr/"}, `prefix: "dr/"`},
		{"internal prefix", Policy{Prefix: "__dr."}, `prefix: "__dr."`},
		{"prefix too long", Policy{Prefix: strings.Repeat("p", 249)}, `prefix: "ppp`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.policy.Compile()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestTargetName(t *testing.T) {
	for _, tc := range []struct{ prefix, source, want string }{
		{"", "orders", "orders"},
		{"dr.", "orders", "dr.orders"},
		{"eu-", "_schemas", "eu-_schemas"},
	} {
		s, err := Policy{Prefix: tc.prefix}.Compile()
		if err != nil {
			t.Fatal(err)
		}
		if got := s.TargetName(tc.source); got != tc.want {
			t.Errorf("prefix %q: TargetName(%q) = %q, want %q", tc.prefix, tc.source, got, tc.want)
		}
	}
}

func TestAllowlist(t *testing.T) {
	a := newAllowlist(DefaultConfigAllowlist())
	for _, k := range []string{"cleanup.policy", "retention.ms", "retention.bytes", "segment.bytes", "segment.ms",
		"max.message.bytes", "compression.type", "message.timestamp.type", "min.compaction.lag.ms", "delete.retention.ms"} {
		if !a.allows(k) {
			t.Errorf("default allowlist refuses %s", k)
		}
	}
	for _, k := range []string{"min.insync.replicas", "unclean.leader.election.enable", "leader.replication.throttled.replicas",
		"follower.replication.throttled.replicas", "message.format.version", "message.downconversion.enable",
		"message.timestamp.before.max.ms", "local.retention.ms", "remote.storage.enable", "retention.local.target.bytes",
		"confluent.placement.constraints", "confluent.tier.enable", "redpanda.remote.read", "flush.ms", "preallocate",
		"segment.index.bytes", "kfake.is_internal"} {
		if a.allows(k) {
			t.Errorf("default allowlist allows %s", k)
		}
	}
	p := newAllowlist([]string{"retention.", "cleanup.policy"})
	if !p.allows("retention.local.target.ms") || !p.allows("cleanup.policy") || p.allows("retention") || p.allows("segment.ms") {
		t.Error("prefix entries do not match as prefixes")
	}
}

func TestNormPolicy(t *testing.T) {
	for in, want := range map[string]string{
		"delete": "delete", "compact,delete": "compact,delete", "delete, compact": "compact,delete",
		"Compact": "compact", "": "", "compact,compact": "compact",
	} {
		if got := normPolicy(in); got != want {
			t.Errorf("normPolicy(%q) = %q, want %q", in, got, want)
		}
	}
}
