package proxy

import (
	"reflect"
	"sync"
)

// translator maps the values a client caches between what the upstream
// cluster uses (real) and what the proxy presents (virtual). A translator
// for a response maps real→virtual; one for a request maps virtual→real.
type translator interface {
	topicID(id [16]byte) [16]byte
	nodeID(id int32) int32
	epoch(e int32) int32
	// address returns the host and port to present for a (translated) node
	// id; ok false leaves the address unchanged.
	address(node int32) (host string, port int32, ok bool)
}

// Field names, across every kmsg message, that carry the values the proxy
// translates. They are matched by name so that a field kmsg adds to a new
// version of a message is covered without code changes; the rewrite tests
// walk every version to prove it.
var (
	nodeIDFields = map[string]bool{
		"NodeID": true, "BrokerID": true, "LeaderID": true, "Leader": true,
		"ControllerID": true, "PreferredReadReplica": true,
	}
	nodeIDListFields = map[string]bool{
		"Replicas": true, "ISR": true, "OfflineReplicas": true,
		"EligibleLeaderReplicas": true, "LastKnownELR": true,
	}
	epochFields = map[string]bool{
		"LeaderEpoch": true, "CurrentLeaderEpoch": true,
		"CommittedLeaderEpoch": true, "LastFetchedEpoch": true,
	}
)

type action uint8

const (
	actTopicID action = iota + 1
	actNodeID
	actNodeIDs
	actEpoch
	actStruct
	actStructs
	actStructPtr
	actHostPort // after the struct's node id is translated
)

type step struct {
	index int // field index
	act   action
	sub   *plan
	node  int // for actHostPort: index of the node id field
	port  int // for actHostPort: index of the Port field
}

type plan struct{ steps []step }

// plans caches one translation plan per message struct type. It holds only
// data derived from types, so sharing it process-wide is safe.
var plans sync.Map // reflect.Type → *plan

var (
	uuidType    = reflect.TypeOf([16]byte{})
	int32Type   = reflect.TypeOf(int32(0))
	int32sType  = reflect.TypeOf([]int32(nil))
	stringType  = reflect.TypeOf("")
	tagsTypeStr = "Tags"
)

// planFor builds (once) the plan for a struct type. nil means the type holds
// nothing to translate.
func planFor(t reflect.Type) *plan {
	if p, ok := plans.Load(t); ok {
		return p.(*plan)
	}
	p := buildPlan(t, map[reflect.Type]bool{})
	plans.Store(t, p)
	return p
}

func buildPlan(t reflect.Type, visiting map[reflect.Type]bool) *plan {
	if visiting[t] {
		return nil
	}
	visiting[t] = true
	defer delete(visiting, t)
	var p plan
	hostIdx, portIdx, nodeIdx := -1, -1, -1
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() || f.Type.Name() == tagsTypeStr {
			continue
		}
		switch {
		case f.Type == uuidType && f.Name == "TopicID":
			p.steps = append(p.steps, step{index: i, act: actTopicID})
		case f.Type == int32Type && nodeIDFields[f.Name]:
			p.steps = append(p.steps, step{index: i, act: actNodeID})
			if f.Name == "NodeID" || f.Name == "BrokerID" {
				nodeIdx = i
			}
		case f.Type == int32sType && nodeIDListFields[f.Name]:
			p.steps = append(p.steps, step{index: i, act: actNodeIDs})
		case f.Type == int32Type && epochFields[f.Name]:
			p.steps = append(p.steps, step{index: i, act: actEpoch})
		case f.Type == stringType && f.Name == "Host":
			hostIdx = i
		case f.Type == int32Type && f.Name == "Port":
			portIdx = i
		case f.Type.Kind() == reflect.Struct:
			if sub := buildPlan(f.Type, visiting); sub != nil {
				p.steps = append(p.steps, step{index: i, act: actStruct, sub: sub})
			}
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
			if sub := buildPlan(f.Type.Elem(), visiting); sub != nil {
				p.steps = append(p.steps, step{index: i, act: actStructs, sub: sub})
			}
		case f.Type.Kind() == reflect.Pointer && f.Type.Elem().Kind() == reflect.Struct:
			// Nullable structs, e.g. the KIP-848 heartbeat's Assignment.
			if sub := buildPlan(f.Type.Elem(), visiting); sub != nil {
				p.steps = append(p.steps, step{index: i, act: actStructPtr, sub: sub})
			}
		}
	}
	// A struct naming a broker (node id, host, port) gets the address of the
	// virtual broker. Structs with a host but no node id (ACL hosts,
	// application endpoints) are not broker addresses and stay untouched.
	if hostIdx >= 0 && portIdx >= 0 && nodeIdx >= 0 {
		p.steps = append(p.steps, step{index: hostIdx, act: actHostPort, node: nodeIdx, port: portIdx})
	}
	if len(p.steps) == 0 {
		return nil
	}
	return &p
}

// translateMessage applies tr to every translatable field of msg, a pointer
// to a kmsg request or response struct.
func translateMessage(msg any, tr translator) {
	v := reflect.ValueOf(msg)
	if v.Kind() != reflect.Pointer || v.IsNil() {
		return
	}
	v = v.Elem()
	if p := planFor(v.Type()); p != nil {
		applyPlan(v, p, tr)
	}
}

func applyPlan(v reflect.Value, p *plan, tr translator) {
	for _, s := range p.steps {
		f := v.Field(s.index)
		switch s.act {
		case actTopicID:
			id := f.Interface().([16]byte)
			if id != ([16]byte{}) {
				f.Set(reflect.ValueOf(tr.topicID(id)))
			}
		case actNodeID:
			f.SetInt(int64(tr.nodeID(int32(f.Int()))))
		case actNodeIDs:
			ids := f.Interface().([]int32)
			for i, id := range ids {
				ids[i] = tr.nodeID(id)
			}
		case actEpoch:
			f.SetInt(int64(tr.epoch(int32(f.Int()))))
		case actStruct:
			applyPlan(f, s.sub, tr)
		case actStructs:
			for i := 0; i < f.Len(); i++ {
				applyPlan(f.Index(i), s.sub, tr)
			}
		case actStructPtr:
			if !f.IsNil() {
				applyPlan(f.Elem(), s.sub, tr)
			}
		case actHostPort:
			if host, port, ok := tr.address(int32(v.Field(s.node).Int())); ok {
				f.SetString(host)
				v.Field(s.port).SetInt(int64(port))
			}
		}
	}
}
