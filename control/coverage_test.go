package control

import (
	"fmt"
	"strings"
	"testing"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
)

// use builds a sidecar's usage: "w:T" produced T, "r:T" fetched T, "g:G"
// member of G, "x:G" a transactional id committing G's offsets.
func use(key string, what ...string) sidecarUsage {
	app, _, _ := cutKey(key)
	u := &switchyardv1.Usage{}
	topics := map[string]*switchyardv1.TopicUsage{}
	topic := func(t string) *switchyardv1.TopicUsage {
		if topics[t] == nil {
			topics[t] = &switchyardv1.TopicUsage{Topic: t}
			u.Topics = append(u.Topics, topics[t])
		}
		return topics[t]
	}
	for _, w := range what {
		kind, name, _ := strings.Cut(w, ":")
		switch kind {
		case "w":
			topic(name).Produced = true
		case "r":
			topic(name).Fetched = true
		case "g":
			u.Groups = append(u.Groups, &switchyardv1.GroupUsage{Group: name, Protocol: "classic"})
		case "x":
			u.Transactions = append(u.Transactions, &switchyardv1.TransactionalUsage{Id: app + "-tx", Groups: []string{name}})
		default:
			panic("bad usage " + w)
		}
	}
	return sidecarUsage{Key: key, App: app, Usage: u}
}

// unitsString renders units as "u1 p1 producer [a b] w=[t]; ...".
func unitsString(cov *switchyardv1.CutoverCoverage) string {
	var parts []string
	for _, u := range cov.GetUnits() {
		parts = append(parts, fmt.Sprintf("%s p%d %s %v w=%v g=%v", u.GetId(), u.GetPhase(), u.GetRole(), u.GetApps(), u.GetWrites(), u.GetGroups()))
	}
	return strings.Join(parts, "; ")
}

func TestComputeCoverage(t *testing.T) {
	cases := []struct {
		name     string
		selected []sidecarUsage
		others   []sidecarUsage
		spec     *switchyardv1.CutoverSpec
		want     string
		warning  string // a substring of one warning, if any
		err      string
	}{
		{
			name:     "producers only: one unit per app, phase 1",
			selected: []sidecarUsage{use("orders/0", "w:orders"), use("orders/1", "w:orders"), use("audit/0", "w:audit")},
			want:     "u1 p1 producer [audit] w=[audit] g=[]; u2 p1 producer [orders] w=[orders] g=[]",
		},
		{
			name:     "a consumer moves after the producer of its input",
			selected: []sidecarUsage{use("orders/0", "w:orders"), use("billing/0", "r:orders", "g:billing")},
			want:     "u1 p1 producer [orders] w=[orders] g=[]; u2 p2 consumer [billing] w=[] g=[billing]",
		},
		{
			name:     "a pipeline writes its own internal topics and its output",
			selected: []sidecarUsage{use("in/0", "w:input"), use("wc/0", "r:input", "r:wc-repartition", "w:wc-repartition", "w:wc-changelog", "w:output", "g:wc", "x:wc")},
			want:     "u1 p1 producer [in] w=[input] g=[]; u2 p2 pipeline [wc] w=[output wc-changelog wc-repartition] g=[wc]",
		},
		{
			name:     "apps sharing a group are one unit",
			selected: []sidecarUsage{use("a/0", "r:t", "g:shared"), use("b/0", "r:t", "g:shared"), use("p/0", "w:t")},
			want:     "u1 p1 producer [p] w=[t] g=[]; u2 p2 consumer [a b] w=[] g=[shared]",
		},
		{
			name:     "a transactional producer committing a group joins the group's unit",
			selected: []sidecarUsage{use("c/0", "r:in", "g:g1"), use("tx/0", "w:out", "x:g1")},
			want:     "u1 p2 pipeline [c tx] w=[out] g=[g1]",
		},
		{
			name:     "a producer writing a topic a pipeline writes moves with the pipeline",
			selected: []sidecarUsage{use("p/0", "w:shared"), use("pipe/0", "r:in", "w:shared", "g:pg"), use("q/0", "w:other")},
			want:     "u1 p1 producer [q] w=[other] g=[]; u2 p2 pipeline [p pipe] w=[shared] g=[pg]",
		},
		{
			name:     "merging is transitive through written topics",
			selected: []sidecarUsage{use("a/0", "w:t1", "w:t2"), use("b/0", "w:t2"), use("c/0", "w:t1", "r:x", "g:g")},
			want:     "u1 p2 pipeline [a b c] w=[t1 t2] g=[g]",
		},
		{
			name:     "two producers sharing a topic stay apart: both move in phase 1",
			selected: []sidecarUsage{use("a/0", "w:t"), use("b/0", "w:t")},
			want:     "u1 p1 producer [a] w=[t] g=[]; u2 p1 producer [b] w=[t] g=[]",
		},
		{
			name:     "a reader without a group moves in phase 2, with a warning",
			selected: []sidecarUsage{use("r/0", "r:t")},
			want:     "u1 p2 reader [r] w=[] g=[]",
			warning:  "without a consumer group",
		},
		{
			name:     "an idle app moves with the producers",
			selected: []sidecarUsage{use("quiet/0"), use("p/0", "w:t")},
			want:     "u1 p1 producer [p] w=[t] g=[]; u2 p1 idle [quiet] w=[] g=[]",
			warning:  "quiet reported nothing their clients did yet",
		},
		{
			name:     "a group named in the spec that nobody reports: one unit, phase 2",
			selected: []sidecarUsage{use("p/0", "w:t"), use("c/0", "r:t")},
			spec:     &switchyardv1.CutoverSpec{Groups: []string{"unseen"}},
			want:     "u1 p2 pipeline [c p] w=[t] g=[unseen]",
			warning:  "unseen",
		},
		{
			name:     "the streams group protocol is refused",
			selected: []sidecarUsage{{Key: "s/0", App: "s", Usage: &switchyardv1.Usage{Groups: []*switchyardv1.GroupUsage{{Group: "sg", Protocol: "streams"}}}}},
			err:      "group sg of s/0 uses the streams group protocol",
		},
		{
			name:     "a group with members outside the selection is refused",
			selected: []sidecarUsage{use("a/0", "r:t", "g:g")},
			others:   []sidecarUsage{use("z/3", "r:t", "g:g")},
			err:      "group g also has members behind z/3",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			spec := tc.spec
			if spec == nil {
				spec = &switchyardv1.CutoverSpec{}
			}
			cov, err := computeCoverage(tc.selected, tc.others, spec)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := unitsString(cov); got != tc.want {
				t.Errorf("units\n got %s\nwant %s", got, tc.want)
			}
			if tc.warning != "" && !strings.Contains(strings.Join(cov.GetWarnings(), "\n"), tc.warning) {
				t.Errorf("warnings %q, want one mentioning %q", cov.GetWarnings(), tc.warning)
			}
			if tc.warning == "" && len(cov.GetWarnings()) > 0 {
				t.Errorf("unexpected warnings %q", cov.GetWarnings())
			}
			// Every selected sidecar is in exactly one unit.
			seen := map[string]int{}
			for _, u := range cov.GetUnits() {
				for _, s := range u.GetSidecars() {
					seen[s]++
				}
			}
			for _, s := range tc.selected {
				if seen[s.Key] != 1 {
					t.Errorf("sidecar %s is in %d units", s.Key, seen[s.Key])
				}
			}
		})
	}
}
