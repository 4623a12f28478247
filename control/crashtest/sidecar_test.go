//go:build unix

package crashtest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/switchyard/switchyard/internal/proxytest"
	"github.com/switchyard/switchyard/proxy"
	"github.com/switchyard/switchyard/proxy/controlclient"
)

// Kafka API keys the cutover gates, and those the test holds on the
// control plane's own way to the clusters.
const (
	keyProduce        int16 = 0
	keyFetch          int16 = 1
	keyListOffsets    int16 = 2
	keyOffsetCommit   int16 = 8
	keyInitProducerID int16 = 22
)

// event is one change the control client made to its proxy: a switch or a
// gate set or cleared.
type event struct {
	at     time.Time // when the proxy was told (after any pin holding it)
	done   time.Time
	op     string     // "switch" or "gate"
	active string     // the active cluster when it began
	to     string     // switch: the cluster switched to
	before proxy.Gate // the gate in force when it began
	after  proxy.Gate // gate: the gate set (zero when cleared)
	err    error
}

func (e event) String() string {
	s := fmt.Sprintf("%s %s", e.at.Format("15:04:05.000000"), e.op)
	if e.op == "switch" {
		s += fmt.Sprintf(" %s -> %s (gate %s)", e.active, e.to, gateString(e.before))
	} else {
		s += fmt.Sprintf(" on %s: %s -> %s", e.active, gateString(e.before), gateString(e.after))
	}
	if e.err != nil {
		s += fmt.Sprintf(" (error: %v)", e.err)
	}
	return s
}

func gateString(g proxy.Gate) string {
	if g.IsZero() {
		return "none"
	}
	names := func(keys []int16) string {
		var ks []string
		for _, k := range keys {
			name, ok := map[int16]string{keyProduce: "Produce", keyFetch: "Fetch", keyOffsetCommit: "OffsetCommit"}[k]
			if !ok {
				name = fmt.Sprint(k)
			}
			ks = append(ks, name)
		}
		return strings.Join(ks, ",")
	}
	var s []string
	if len(g.APIKeys) > 0 {
		s = append(s, fmt.Sprintf("%s[%s]", g.Mode, names(g.APIKeys)))
	}
	if len(g.RejectKeys) > 0 {
		s = append(s, fmt.Sprintf("REJECT[%s]", names(g.RejectKeys)))
	}
	return strings.Join(s, "+")
}

// liftsProduce: a gate change on the given cluster after which Produce is
// no longer blocked.
func liftsProduce(cluster string) func(event) bool {
	return func(e event) bool {
		return e.op == "gate" && e.active == cluster && e.before.Blocks(keyProduce) && !e.after.Blocks(keyProduce)
	}
}

// putsProduce: a gate change that starts blocking Produce.
func putsProduce(e event) bool {
	return e.op == "gate" && !e.before.Blocks(keyProduce) && e.after.Blocks(keyProduce)
}

func switchesTo(cluster string) func(event) bool {
	return func(e event) bool { return e.op == "switch" && e.to == cluster }
}

// pin holds the first call of the control client that matches, before it
// reaches the proxy or after, until the test lets it go: the step the
// control plane is in then waits for this sidecar's acknowledgement.
type pin struct {
	what    string
	match   func(event) bool
	before  bool
	hit     chan struct{} // closed when a call is held
	release chan struct{} // closed to let it go on
	once    sync.Once
}

func (p *pin) let() { p.once.Do(func() { close(p.release) }) }

func (p *pin) wait(ctx context.Context) {
	select {
	case <-p.release:
	case <-ctx.Done():
	}
}

// recorder is the proxy as the control client sees it: it records every
// switch and gate change and holds pinned ones.
type recorder struct {
	p *proxy.Proxy

	mu     sync.Mutex
	events []event
	armed  []*pin
	pins   []*pin // every pin ever armed, to let go at the end
}

var _ controlclient.Proxy = (*recorder)(nil)

func (r *recorder) arm(what string, before bool, match func(event) bool) *pin {
	p := &pin{what: what, match: match, before: before, hit: make(chan struct{}), release: make(chan struct{})}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.armed = append(r.armed, p)
	r.pins = append(r.pins, p)
	return p
}

// letAll lets every pinned call go on and disarms the rest.
func (r *recorder) letAll() {
	r.mu.Lock()
	pins := r.pins
	r.armed = nil
	r.mu.Unlock()
	for _, p := range pins {
		p.let()
	}
}

func (r *recorder) take(e event) *pin {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, p := range r.armed {
		if p.match(e) {
			r.armed = slices.Delete(r.armed, i, i+1)
			close(p.hit)
			return p
		}
	}
	return nil
}

func (r *recorder) add(e event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) history() []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

func (r *recorder) Status() proxy.Status { return r.p.Status() }

func (r *recorder) Switch(ctx context.Context, cluster string) (proxy.SwitchReport, error) {
	st := r.p.Status()
	e := event{op: "switch", active: st.ActiveCluster, to: cluster, before: st.Gate, after: st.Gate}
	p := r.take(e)
	if p != nil && p.before {
		p.wait(ctx)
		if ctx.Err() != nil {
			return proxy.SwitchReport{}, ctx.Err()
		}
	}
	e.at = time.Now()
	rep, err := r.p.Switch(ctx, cluster)
	e.done, e.err = time.Now(), err
	r.add(e)
	if p != nil && !p.before {
		p.wait(ctx)
	}
	return rep, err
}

func (r *recorder) SetGate(g proxy.Gate) error {
	return r.gate(g, func() error { return r.p.SetGate(g) })
}

// ExtendHold passes hold leases on; they change no state the test checks.
func (r *recorder) ExtendHold(until time.Time) { r.p.ExtendHold(until) }

func (r *recorder) ClearGate() {
	_ = r.gate(proxy.Gate{}, func() error { r.p.ClearGate(); return nil })
}

func (r *recorder) gate(g proxy.Gate, apply func() error) error {
	st := r.p.Status()
	e := event{op: "gate", active: st.ActiveCluster, before: st.Gate, after: g}
	p := r.take(e)
	if p != nil && p.before {
		p.wait(context.Background())
	}
	e.at = time.Now()
	err := apply()
	e.done, e.err = time.Now(), err
	r.add(e)
	if p != nil && !p.before {
		p.wait(context.Background())
	}
	return err
}

// sidecar is an in-process proxy following the control plane.
type sidecar struct {
	name, role string
	h          *proxytest.Handle
	rec        *recorder
	cc         *controlclient.Client
}

func (s *sidecar) addr() string { return s.h.Addr().String() }

// putsCommit: a gate change that starts blocking OffsetCommit (the
// groups' quiesce).
func putsCommit(e event) bool {
	return e.op == "gate" && !e.before.Blocks(keyOffsetCommit) && e.after.Blocks(keyOffsetCommit)
}
