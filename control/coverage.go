package control

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
)

// Unit roles (CutoverUnit.role).
const (
	roleProducer = "producer"
	roleConsumer = "consumer"
	rolePipeline = "pipeline"
	roleReader   = "reader"
	roleIdle     = "idle"
)

// sidecarUsage is one sidecar's report of what its clients do.
type sidecarUsage struct {
	Key   string // app/instance
	App   string
	Usage *switchyardv1.Usage
}

// appUsage is the union of an application's sidecars' usage.
type appUsage struct {
	sidecars             []string
	writes, reads, group map[string]bool
	// txGroups: groups whose offsets it committed inside transactions.
	txGroups map[string]bool
}

// computeCoverage derives what a cutover moves, and in which order, from
// what the selected sidecars report (ProxyStatus.usage) and what the spec
// names. Units are whole applications — every instance of an application
// behaves alike — merged when:
//
//   - they share a consumer group (all members of a group move together;
//     a transactional producer that commits a group's offsets counts as a
//     member);
//   - they write a topic that a unit of the second phase also writes: a
//     target partition must never have writers on the target while another
//     writer still writes it on the source.
//
// A unit with groups or group-less reads moves in phase 2, after the
// producers (phase 1) are released: producers never wait for consumers.
//
// others are the sidecars not selected; a group they report as well has
// members the cutover cannot move, which is an error naming them (the
// group's offsets could never become final).
//
// A group the spec names that no selected sidecar reports (its clients
// have not been seen yet, or run without a sidecar) cannot be placed: the
// whole selection then moves as one phase-2 unit, as a one-phase cutover
// did, with a warning.
func computeCoverage(selected, others []sidecarUsage, spec *switchyardv1.CutoverSpec) (*switchyardv1.CutoverCoverage, error) {
	apps := map[string]*appUsage{}
	for _, s := range selected {
		a := apps[s.App]
		if a == nil {
			a = &appUsage{writes: map[string]bool{}, reads: map[string]bool{}, group: map[string]bool{}, txGroups: map[string]bool{}}
			apps[s.App] = a
		}
		a.sidecars = append(a.sidecars, s.Key)
		for _, t := range s.Usage.GetTopics() {
			if t.GetProduced() {
				a.writes[t.GetTopic()] = true
			}
			if t.GetFetched() {
				a.reads[t.GetTopic()] = true
			}
		}
		for _, g := range s.Usage.GetGroups() {
			if g.GetProtocol() == "streams" {
				// KIP-1071: the broker assigns tasks and owns the
				// topology; the stale-member answers and the quiesce are
				// not built for it yet.
				return nil, fmt.Errorf("group %s of %s uses the streams group protocol (KIP-1071, group.protocol=streams), which cutovers do not move yet: run the application with the classic protocol (the default)", g.GetGroup(), s.Key)
			}
			a.group[g.GetGroup()] = true
			if g.GetTransactional() {
				a.txGroups[g.GetGroup()] = true
			}
		}
		for _, tx := range s.Usage.GetTransactions() {
			for _, g := range tx.GetGroups() {
				a.group[g], a.txGroups[g] = true, true
			}
		}
	}
	cov := &switchyardv1.CutoverCoverage{}
	if len(apps) == 0 {
		return cov, nil
	}

	// A group with members outside the selection cannot move.
	var outside []string
	for _, o := range others {
		for _, g := range o.Usage.GetGroups() {
			for _, a := range apps {
				if a.group[g.GetGroup()] {
					outside = append(outside, fmt.Sprintf("group %s also has members behind %s", g.GetGroup(), o.Key))
					break
				}
			}
		}
	}
	if len(outside) > 0 {
		sort.Strings(outside)
		return nil, fmt.Errorf("%s, which the selection does not include: select its application too", strings.Join(slices.Compact(outside), "; "))
	}

	names := make([]string, 0, len(apps))
	for n := range apps {
		names = append(names, n)
	}
	sort.Strings(names)
	uf := newUnionFind(names)

	late := func(app string) bool { return len(apps[app].group) > 0 || len(apps[app].reads) > 0 }

	// Groups the spec names that no selected sidecar reports.
	var unplaced []string
	for _, g := range spec.GetGroups() {
		if !slices.ContainsFunc(names, func(n string) bool { return apps[n].group[g] }) {
			unplaced = append(unplaced, g)
		}
	}
	if len(unplaced) > 0 {
		for _, n := range names[1:] {
			uf.union(names[0], n)
		}
		cov.UnplacedGroups = unplaced
		cov.Warnings = append(cov.Warnings, fmt.Sprintf("no selected sidecar reports using groups %v: the whole selection moves as one unit, in one pass, with the groups", unplaced))
	}

	// Merge: shared groups; then shared written topics with a late unit,
	// until nothing changes (a merge can make a unit late).
	for changed := true; changed; {
		changed = false
		owner := map[string]string{}
		for _, n := range names {
			for g := range apps[n].group {
				if o, ok := owner[g]; ok {
					changed = uf.union(o, n) || changed
				} else {
					owner[g] = n
				}
			}
		}
		lateRoot := map[string]bool{}
		for _, n := range names {
			if late(n) {
				lateRoot[uf.find(n)] = true
			}
		}
		writers := map[string][]string{}
		for _, n := range names {
			for t := range apps[n].writes {
				writers[t] = append(writers[t], n)
			}
		}
		for _, ws := range writers {
			if len(ws) < 2 || !slices.ContainsFunc(ws, func(n string) bool { return lateRoot[uf.find(n)] }) {
				continue
			}
			for _, n := range ws[1:] {
				changed = uf.union(ws[0], n) || changed
			}
		}
	}

	byRoot := map[string][]string{}
	for _, n := range names {
		r := uf.find(n)
		byRoot[r] = append(byRoot[r], n)
	}
	var units []*switchyardv1.CutoverUnit
	allWrites, allGroups := map[string]bool{}, map[string]bool{}
	for _, members := range byRoot {
		u := &switchyardv1.CutoverUnit{Apps: members}
		w, r, g, tx := map[string]bool{}, map[string]bool{}, map[string]bool{}, map[string]bool{}
		for _, n := range members {
			a := apps[n]
			u.Sidecars = append(u.Sidecars, a.sidecars...)
			maps.Copy(tx, a.txGroups)
			for t := range a.writes {
				w[t], allWrites[t] = true, true
			}
			for t := range a.reads {
				r[t] = true
			}
			for x := range a.group {
				g[x], allGroups[x] = true, true
			}
		}
		for _, x := range unplaced {
			g[x], allGroups[x] = true, true
		}
		u.Writes, u.Reads, u.Groups = sortedNames(w), sortedNames(r), sortedNames(g)
		u.Transactional = len(g) > 0 && !slices.ContainsFunc(u.Groups, func(x string) bool { return !tx[x] })
		sort.Strings(u.Sidecars)
		switch {
		case len(g) > 0 && len(w) > 0:
			u.Role = rolePipeline
		case len(g) > 0:
			u.Role = roleConsumer
		case len(r) > 0:
			u.Role = roleReader
		case len(w) > 0:
			u.Role = roleProducer
		default:
			u.Role = roleIdle
		}
		u.Phase = 1
		if len(g) > 0 || len(r) > 0 {
			u.Phase = 2
		}
		if u.Role == roleIdle {
			cov.Warnings = append(cov.Warnings, fmt.Sprintf("%s reported nothing their clients did yet: they move with the producers; "+
				"what they write by the drain is waited for then, but a consumer group they join later does not move with them "+
				"(start the cutover once their clients have run)", strings.Join(members, ", ")))
		}
		if u.Role == roleReader {
			cov.Warnings = append(cov.Warnings, fmt.Sprintf("%s read %v without a consumer group: their positions cross as source offsets, which differ on the target where the source's log start moved",
				strings.Join(members, ", "), u.Reads))
		}
		units = append(units, u)
	}
	sort.Slice(units, func(i, j int) bool {
		if units[i].Phase != units[j].Phase {
			return units[i].Phase < units[j].Phase
		}
		return units[i].Apps[0] < units[j].Apps[0]
	})
	for i, u := range units {
		u.Id = fmt.Sprintf("u%d", i+1)
	}
	for _, t := range spec.GetTopics() {
		allWrites[t] = true
	}
	for _, g := range spec.GetGroups() {
		allGroups[g] = true
	}
	cov.Units, cov.Writes, cov.Groups = units, sortedNames(allWrites), sortedNames(allGroups)
	return cov, nil
}

// unionFind is a disjoint-set forest over names, for merging units.
type unionFind struct{ parent map[string]string }

func newUnionFind(names []string) *unionFind {
	uf := &unionFind{parent: make(map[string]string, len(names))}
	for _, n := range names {
		uf.parent[n] = n
	}
	return uf
}

func (uf *unionFind) find(n string) string {
	for uf.parent[n] != n {
		uf.parent[n] = uf.parent[uf.parent[n]]
		n = uf.parent[n]
	}
	return n
}

// union merges the sets of a and b, the smaller name becoming the root so
// results do not depend on map order; it reports whether they were apart.
func (uf *unionFind) union(a, b string) bool {
	ra, rb := uf.find(a), uf.find(b)
	if ra == rb {
		return false
	}
	if rb < ra {
		ra, rb = rb, ra
	}
	uf.parent[rb] = ra
	return true
}

// phaseUnits returns the units of a phase.
func phaseUnits(cov *switchyardv1.CutoverCoverage, phase int32) []*switchyardv1.CutoverUnit {
	var out []*switchyardv1.CutoverUnit
	for _, u := range cov.GetUnits() {
		if u.GetPhase() == phase {
			out = append(out, u)
		}
	}
	return out
}

// coverageFor computes a spec's coverage from the sidecars connected now.
func (ct *Controller) coverageFor(spec *switchyardv1.CutoverSpec) (*switchyardv1.CutoverCoverage, error) {
	selected, others := ct.reg.Usage(spec.GetSelector())
	return computeCoverage(selected, others, spec)
}

// groupsOf returns the consumer groups a cutover moves: those its
// sidecars reported (with the spec's), or the spec's alone for a cutover
// stored before coverage existed.
func (ct *Controller) groupsOf(run *cutoverRun) []string {
	ct.mu.Lock()
	defer ct.mu.Unlock()
	if cov := run.c.GetCoverage(); cov != nil {
		return cov.GetGroups()
	}
	return run.c.GetSpec().GetGroups()
}

// coveredTopics returns every topic the coverage's units write or read.
func coveredTopics(cov *switchyardv1.CutoverCoverage) []string {
	set := unitNames(cov.GetUnits(), (*switchyardv1.CutoverUnit).GetReads)
	for _, t := range cov.GetWrites() {
		set[t] = true
	}
	return sortedNames(set)
}

// unitNames is the set of the names pick gives for each of units (their
// writes, reads or applications).
func unitNames(units []*switchyardv1.CutoverUnit, pick func(*switchyardv1.CutoverUnit) []string) map[string]bool {
	set := map[string]bool{}
	for _, u := range units {
		for _, n := range pick(u) {
			set[n] = true
		}
	}
	return set
}
