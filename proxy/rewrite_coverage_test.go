package proxy

// Rewrite coverage: proof, per API key and per version, that no upstream
// broker address, node id, topic id or cluster id reaches a client.
//
//   - TestRewriteAddressSitesClassified finds, by reflection over every kmsg
//     response type, every struct that carries a host or a port, and fails
//     for one that is neither a client-facing broker address (rewritten) nor
//     on the allowlist of addresses clients never see or must see as they
//     are. A new kmsg field therefore forces a decision.
//   - TestRewriteResponseEveryVersion walks every key with broker addresses
//     from version 0 to kmsg's maximum: a response filled with upstream
//     values goes through rewriteResponse and must come out with only proxy
//     addresses, virtual node ids, virtual topic ids, raised epochs and the
//     virtual cluster id, and otherwise byte for byte what the cluster sent.
//     A version kmsg learns is walked without a code change here.
//   - TestRewriteApiVersionsCapsAtKmsgMax proves the proxy never advertises a
//     version above kmsg's maximum, so nothing this file did not walk can be
//     negotiated.
//   - TestRewriteTopicIDsEveryVersion proves every TopicID field, at any
//     depth, of every request and response version is visited by
//     translateMessage, and that ids round-trip.

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/rand"
	"net"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"
)

// addrSite names a struct that carries a host and/or port inside the
// response of one API key. path is "" for the response itself, "Brokers[]"
// for an element of the Brokers slice, "Assignment*" for the struct a
// pointer field leads to, and so on, joined with ".".
type addrSite struct {
	key  int16
	path string
}

// clientAddrSites are the broker addresses clients dial: the proxy must
// present its own listeners (or, for controllers clients cannot reach
// through the proxy, remove the address).
var clientAddrSites = map[addrSite]string{
	{0, "Brokers[]"}:            "Produce v10+ NodeEndpoints (KIP-951, tagged)",
	{1, "Brokers[]"}:            "Fetch v16+ NodeEndpoints (KIP-951, tagged)",
	{3, "Brokers[]"}:            "Metadata brokers, every version",
	{10, ""}:                    "FindCoordinator v0-3 coordinator",
	{10, "Coordinators[]"}:      "FindCoordinator v4+ batched coordinators",
	{55, "Nodes[].Listeners[]"}: "DescribeQuorum v2 controller listeners (removed by the proxy)",
	{60, "Brokers[]"}:           "DescribeCluster brokers",
	{78, "NodeEndpoints[]"}:     "ShareFetch NodeEndpoints",
	{79, "NodeEndpoints[]"}:     "ShareAcknowledge NodeEndpoints",
}

// foreignAddrSites are hosts and ports that are not broker addresses a
// client could dial, or that belong to APIs clients never send. Each needs
// its reason; a new one needs a decision.
var foreignAddrSites = map[addrSite]string{
	{15, "Groups[].Members[]"}:                      "DescribeGroups ClientHost: the member's own address as its coordinator saw it, not a broker",
	{29, "Resources[].ACLs[]"}:                      "DescribeACLs Host: the host an ACL applies to (a client pattern), not a broker",
	{31, "Results[].MatchingACLs[]"}:                "DeleteACLs Host: the host an ACL applies to (a client pattern), not a broker",
	{52, "NodeEndpoints[]"}:                         "Vote: raft, controller to controller; clients never send it",
	{53, "NodeEndpoints[]"}:                         "BeginQuorumEpoch: raft, controller to controller; clients never send it",
	{54, "NodeEndpoints[]"}:                         "EndQuorumEpoch: raft, controller to controller; clients never send it",
	{59, "NodeEndpoints[]"}:                         "FetchSnapshot: raft, controller to controller; clients never send it",
	{69, "Groups[].Members[]"}:                      "ConsumerGroupDescribe ClientHost: a member's own address, not a broker",
	{77, "Groups[].Members[]"}:                      "ShareGroupDescribe ClientHost: a member's own address, not a broker",
	{82, "CurrentLeader"}:                           "UpdateRaftVoter: controller-only (a voter updating its own endpoints); clients never send it",
	{88, "PartitionsByUserEndpoint[].UserEndpoint"}: "StreamsGroupHeartbeat: Kafka Streams application endpoints (interactive queries), not brokers",
	{89, "Groups[].Members[]"}:                      "StreamsGroupDescribe ClientHost: a member's own address, not a broker",
	{89, "Groups[].Members[].UserEndpoint*"}:        "StreamsGroupDescribe: Kafka Streams application endpoint of a member, not a broker",
}

// Field names the tests treat as node ids, epochs and topic ids. They are
// the test's own lists, not the proxy's, so that a field the proxy misses
// shows up as a difference.
var (
	testNodeIDFields = map[string]bool{
		"NodeID": true, "BrokerID": true, "LeaderID": true, "Leader": true,
		"ControllerID": true, "PreferredReadReplica": true, "ReplicaID": true,
	}
	testNodeIDListFields = map[string]bool{
		"Replicas": true, "ISR": true, "OfflineReplicas": true,
		"EligibleLeaderReplicas": true, "LastKnownELR": true,
	}
	testEpochFields = map[string]bool{
		"LeaderEpoch": true, "CurrentLeaderEpoch": true,
		"CommittedLeaderEpoch": true, "LastFetchedEpoch": true,
	}
	tagsType = reflect.TypeOf(kmsg.Tags{})
)

const (
	upstreamHostPrefix = "upstream-"
	upstreamPortBase   = 9000
	realClusterID      = "real-cluster"
	testEpoch          = 5
	testEpochOffset    = 100
)

// maxKmsgKey is the highest API key kmsg knows.
func maxKmsgKey() int16 {
	var hi int16
	for k := int16(0); k < 1024; k++ {
		if kmsg.RequestForKey(k) != nil {
			hi = k
		}
	}
	return hi
}

// walkStructTypes calls fn for every struct type reachable from t (t
// included), through struct fields, slices of structs and pointers to
// structs, with the path of addrSite.
func walkStructTypes(t reflect.Type, path string, fn func(path string, t reflect.Type)) {
	walkStructTypesSeen(t, path, fn, map[reflect.Type]bool{})
}

func walkStructTypesSeen(t reflect.Type, path string, fn func(string, reflect.Type), seen map[reflect.Type]bool) {
	if seen[t] || t == tagsType {
		return
	}
	seen[t] = true
	defer delete(seen, t)
	fn(path, t)
	join := func(s string) string {
		if path == "" {
			return s
		}
		return path + "." + s
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		switch ft := f.Type; {
		case ft.Kind() == reflect.Struct:
			walkStructTypesSeen(ft, join(f.Name), fn, seen)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			walkStructTypesSeen(ft.Elem(), join(f.Name+"[]"), fn, seen)
		case ft.Kind() == reflect.Pointer && ft.Elem().Kind() == reflect.Struct:
			walkStructTypesSeen(ft.Elem(), join(f.Name+"*"), fn, seen)
		}
	}
}

func isIntKind(k reflect.Kind) bool {
	switch k {
	case reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Int,
		reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uint:
		return true
	}
	return false
}

// addressFields reports whether a struct type carries a host (a string
// field named Host or ending in Host) or a port (an integer field named
// Port).
func addressFields(t reflect.Type) (host, port bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		switch {
		case f.Type.Kind() == reflect.String && strings.HasSuffix(f.Name, "Host"):
			host = true
		case f.Name == "Port" && isIntKind(f.Type.Kind()):
			port = true
		}
	}
	return host, port
}

// responseAddrSites returns every struct in any kmsg response type that
// carries a host or port.
func responseAddrSites() map[addrSite]bool {
	sites := map[addrSite]bool{}
	for k := int16(0); k <= maxKmsgKey(); k++ {
		r := kmsg.ResponseForKey(k)
		if r == nil {
			continue
		}
		walkStructTypes(reflect.TypeOf(r).Elem(), "", func(path string, t reflect.Type) {
			if h, p := addressFields(t); h || p {
				sites[addrSite{k, path}] = true
			}
		})
	}
	return sites
}

func TestRewriteAddressSitesClassified(t *testing.T) {
	found := responseAddrSites()
	var keys []addrSite
	for s := range found {
		keys = append(keys, s)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].key != keys[j].key {
			return keys[i].key < keys[j].key
		}
		return keys[i].path < keys[j].path
	})
	for _, s := range keys {
		_, client := clientAddrSites[s]
		_, foreign := foreignAddrSites[s]
		switch {
		case client && foreign:
			t.Errorf("%s (key %d) %q is in both tables", apiName(s.key), s.key, s.path)
		case !client && !foreign:
			t.Errorf("%s (key %d) response struct %q carries a host or port that is neither a rewritten broker address (clientAddrSites) nor allowlisted (foreignAddrSites): decide and add it",
				apiName(s.key), s.key, s.path)
		}
	}
	for _, table := range []map[addrSite]string{clientAddrSites, foreignAddrSites} {
		for s, why := range table {
			if !found[s] {
				t.Errorf("table entry %s (key %d) %q (%s) names no host or port in kmsg: out of date", apiName(s.key), s.key, s.path, why)
			}
		}
	}
}

// clientAddrKeys returns the keys of clientAddrSites, ascending.
func clientAddrKeys() []int16 {
	seen := map[int16]bool{}
	var keys []int16
	for s := range clientAddrSites {
		if !seen[s.key] {
			seen[s.key] = true
			keys = append(keys, s.key)
		}
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	return keys
}

// filler fills kmsg messages with non-zero values by reflection: two
// elements in every slice, upstream hosts and ports, node ids 1..3, topic
// ids from a pool, epochs 5 and the real cluster id.
type filler struct {
	rng      *rand.Rand
	hosts    int // last host/port number handed out
	nodes    int
	strs     int
	topicIDs [][16]byte
	topics   int
	batches  bool // fill RecordBatches/Records with a valid v2 batch
}

// testTopicIDs is the pool of real topic ids the filler hands out.
func testTopicIDs() [][16]byte {
	rng := rand.New(rand.NewSource(7))
	ids := make([][16]byte, 8)
	for i := range ids {
		rng.Read(ids[i][:])
		ids[i][0] |= 1 // never zero
	}
	return ids
}

func newFiller(seed int64) *filler {
	return &filler{rng: rand.New(rand.NewSource(seed)), topicIDs: testTopicIDs(), batches: true}
}

// fillMessage fills msg (a pointer to a kmsg struct) and sets its version.
func (f *filler) fillMessage(msg interface{ SetVersion(int16) }, version int16) {
	v := reflect.ValueOf(msg).Elem()
	f.fillStruct(v, true)
	msg.SetVersion(version)
}

func (f *filler) fillStruct(v reflect.Value, top bool) {
	t := v.Type()
	if t == tagsType {
		return
	}
	n := 0
	if h, p := addressFields(t); h || p {
		f.hosts++
		n = f.hosts
	}
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		if !sf.IsExported() || sf.Type == tagsType || (top && sf.Name == "Version") {
			continue
		}
		f.fillField(sf.Name, v.Field(i), n)
	}
}

func (f *filler) node() int64 {
	f.nodes++
	return int64((f.nodes-1)%3 + 1)
}

func (f *filler) fillField(name string, v reflect.Value, hostN int) {
	k := v.Kind()
	switch {
	case k == reflect.String && strings.HasSuffix(name, "Host"):
		v.SetString(fmt.Sprintf("%s%d.example", upstreamHostPrefix, hostN))
	case name == "Port" && isIntKind(k):
		if v.CanInt() {
			v.SetInt(int64(upstreamPortBase + hostN))
		} else {
			v.SetUint(uint64(upstreamPortBase + hostN))
		}
	case name == "ClusterID" && k == reflect.String:
		v.SetString(realClusterID)
	case name == "ClusterID" && k == reflect.Pointer && v.Type().Elem().Kind() == reflect.String:
		s := realClusterID
		v.Set(reflect.ValueOf(&s))
	case name == "TopicID" && v.Type() == uuidType:
		v.Set(reflect.ValueOf(f.topicIDs[f.topics%len(f.topicIDs)]))
		f.topics++
	case testNodeIDFields[name] && k == reflect.Int32:
		v.SetInt(f.node())
	case testNodeIDListFields[name] && v.Type() == int32sType:
		v.Set(reflect.ValueOf([]int32{int32(f.node()), int32(f.node())}))
	case testEpochFields[name] && k == reflect.Int32:
		v.SetInt(testEpoch)
	case f.batches && (name == "RecordBatches" || name == "Records") && v.Type() == reflect.TypeOf([]byte(nil)):
		v.SetBytes(testBatch(testEpoch, 3))
	default:
		f.fillValue(v)
	}
}

func (f *filler) fillValue(v reflect.Value) {
	switch v.Kind() {
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Int:
		v.SetInt(7)
	case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uint:
		v.SetUint(7)
	case reflect.Float32, reflect.Float64:
		v.SetFloat(0.5)
	case reflect.String:
		f.strs++
		v.SetString("s" + strconv.Itoa(f.strs))
	case reflect.Array:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			for i := 0; i < v.Len(); i++ {
				v.Index(i).SetUint(uint64(f.rng.Intn(255) + 1))
			}
		}
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			v.SetBytes([]byte("payload"))
			return
		}
		s := reflect.MakeSlice(v.Type(), 2, 2)
		for i := 0; i < 2; i++ {
			f.fillValue(s.Index(i))
		}
		v.Set(s)
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		f.fillValue(p.Elem())
		v.Set(p)
	case reflect.Struct:
		f.fillStruct(v, false)
	}
}

// testBatch is a valid magic v2 record batch header with the given
// partitionLeaderEpoch and CRC, followed by opaque record bytes.
func testBatch(epoch int32, records int32) []byte {
	b := kmsg.RecordBatch{
		FirstOffset:          0,
		PartitionLeaderEpoch: epoch,
		Magic:                2,
		LastOffsetDelta:      records - 1,
		FirstTimestamp:       1,
		MaxTimestamp:         2,
		ProducerID:           42,
		ProducerEpoch:        1,
		FirstSequence:        0,
		NumRecords:           records,
		Records:              []byte("opaque-records"),
	}
	raw := b.AppendTo(nil)
	binary.BigEndian.PutUint32(raw[8:12], uint32(len(raw)-12))
	binary.BigEndian.PutUint32(raw[17:21], crc32.Checksum(raw[21:], crc32.MakeTable(crc32.Castagnoli)))
	return raw
}

// responseHeader is a response header for key and version: the
// correlation id and, for flexible versions other than ApiVersions, a tag
// section with one unknown tag (which the proxy must skip and keep).
func testResponseHeader(key, version int16, corrID int32) []byte {
	h := kbin.AppendInt32(nil, corrID)
	resp := kmsg.ResponseForKey(key)
	resp.SetVersion(version)
	if key != keyApiVersions && resp.IsFlexible() {
		h = kbin.AppendUvarint(h, 1) // one tag
		h = kbin.AppendUvarint(h, 9) // tag id
		h = kbin.AppendUvarint(h, 2) // length
		h = append(h, 0xab, 0xcd)    // data
	}
	return h
}

// newOfflineProxy is a proxy that is never run, in front of a cluster at
// 127.0.0.1:1 that it never reaches: virtual brokers bind ephemeral
// listeners, which p.Close releases at the end of the test.
func newOfflineProxy(t testing.TB) (*Proxy, *upstream) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.BrokerPortBase = -1
	cfg.DialTimeout = 200 * time.Millisecond
	cfg.Clusters = []ClusterConfig{{Name: "source", Bootstrap: []string{"127.0.0.1:1"}}}
	p, err := New(cfg, zap.NewNop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatalf("new proxy: %v", err)
	}
	t.Cleanup(p.Close)
	u := p.active
	u.mu.Lock()
	for i, id := range testTopicIDs() {
		name := fmt.Sprintf("topic-%d", i)
		u.topicIDs[name] = id
		u.topicNames[id] = name
	}
	u.mu.Unlock()
	// Map real nodes 1, 2, 3 to virtual 0, 1, 2 up front: no real id equals
	// its virtual id, so an untranslated id cannot pass for a translated one.
	for r := int32(1); r <= 3; r++ {
		p.virtualFor(u, r)
	}
	return p, u
}

// rewriteResponseFor runs p.rewriteResponse for a response to a request
// with header hdr, as the connection's writer does (for InitProducerId, a
// first initialisation of a non-transactional producer).
func rewriteResponseFor(p *Proxy, u *upstream, hdr requestHeader, frame []byte) ([]byte, error) {
	return p.rewriteResponse(deadCtx(), u, &pendingReq{hdr: hdr, prevProducerID: -1}, frame)
}

// deadCtx is a cancelled context: anything the proxy would fetch from the
// (unreachable) cluster fails at once instead of waiting for a dial.
func deadCtx() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// expectation computes, from what the cluster sent, what the client must
// receive, with the test's own field lists.
type expectation struct {
	p       *Proxy
	u       *upstream
	key     int16
	version int16
	errs    []string
}

func (x *expectation) errorf(format string, args ...any) {
	x.errs = append(x.errs, fmt.Sprintf(format, args...))
}

func (x *expectation) node(real int32) int32 {
	if real < 0 {
		return real
	}
	x.p.mu.Lock()
	v, ok := x.p.toVirtual[x.u.name][real]
	x.p.mu.Unlock()
	if !ok {
		x.errorf("real node %d was never given a virtual id", real)
		return -1000 - real
	}
	return v
}

func (x *expectation) apply(v reflect.Value, path string) {
	t := v.Type()
	join := func(s string) string {
		if path == "" {
			return s
		}
		return path + "." + s
	}
	nodeIdx := -1
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		f := v.Field(i)
		if !sf.IsExported() || sf.Type == tagsType {
			continue
		}
		switch {
		case x.key == keyFindCoordinator && x.version >= 4 && path == "" && (sf.Name == "NodeID" || sf.Name == "Host" || sf.Name == "Port"):
			// Not on the wire from v4 on (batched coordinators).
		case x.key == keyDescribeQuorum && (testNodeIDFields[sf.Name] || testNodeIDListFields[sf.Name] || testEpochFields[sf.Name]):
			// Controller ids and raft epochs are not broker state a client
			// caches or dials: left as the cluster reports them.
		case testNodeIDFields[sf.Name] && sf.Type == int32Type:
			f.SetInt(int64(x.node(int32(f.Int()))))
			if sf.Name == "NodeID" || sf.Name == "BrokerID" {
				nodeIdx = i
			}
		case testNodeIDListFields[sf.Name] && sf.Type == int32sType:
			ids := f.Interface().([]int32)
			for j := range ids {
				ids[j] = x.node(ids[j])
			}
		case testEpochFields[sf.Name] && sf.Type == int32Type:
			if e := f.Int(); e >= 0 {
				f.SetInt(e + testEpochOffset)
			}
		case sf.Name == "TopicID" && sf.Type == uuidType:
			id := f.Interface().([16]byte)
			if id == ([16]byte{}) {
				break
			}
			name, ok := x.u.topicName(id)
			if !ok {
				x.errorf("%s: real topic id %x unknown to the upstream", join(sf.Name), id)
				break
			}
			f.Set(reflect.ValueOf(virtualTopicID(x.p.ClusterID(), name)))
		case path == "" && sf.Name == "ClusterID" && (x.key == keyMetadata || x.key == keyDescribeCluster):
			cid := x.p.ClusterID()
			if f.Kind() == reflect.Pointer {
				if !f.IsNil() {
					f.Set(reflect.ValueOf(&cid))
				}
			} else {
				f.SetString(cid)
			}
		case x.key == keyDescribeQuorum && sf.Name == "Listeners":
			f.Set(reflect.Zero(sf.Type)) // controllers' addresses are removed
		case x.key == keyFetch && sf.Name == "DivergingEpoch":
			if e := f.FieldByName("Epoch"); e.Int() >= 0 {
				e.SetInt(e.Int() + testEpochOffset)
			}
		case (x.key == keyFetch && sf.Name == "RecordBatches") || (x.key == keyShareFetch && sf.Name == "Records"):
			b := append([]byte(nil), f.Bytes()...)
			if len(b) >= 17 && b[16] == 2 {
				e := int32(binary.BigEndian.Uint32(b[12:16]))
				binary.BigEndian.PutUint32(b[12:16], uint32(e+testEpochOffset))
			}
			f.SetBytes(b)
		case sf.Type.Kind() == reflect.Struct:
			x.apply(f, join(sf.Name))
		case sf.Type.Kind() == reflect.Slice && sf.Type.Elem().Kind() == reflect.Struct:
			for j := 0; j < f.Len(); j++ {
				x.apply(f.Index(j), join(sf.Name+"[]"))
			}
		case sf.Type.Kind() == reflect.Pointer && sf.Type.Elem().Kind() == reflect.Struct:
			if !f.IsNil() {
				x.apply(f.Elem(), join(sf.Name+"*"))
			}
		}
	}
	if _, ok := clientAddrSites[addrSite{x.key, path}]; ok && x.key != keyDescribeQuorum &&
		!(x.key == keyFindCoordinator && x.version >= 4 && path == "") {
		if nodeIdx < 0 {
			x.errorf("%s: broker address without a node id", path)
			return
		}
		vnode := int32(v.Field(nodeIdx).Int())
		host, port, ok := x.p.brokerAddress(vnode)
		if !ok {
			x.errorf("%s: virtual node %d has no listener", path, vnode)
			return
		}
		v.FieldByName("Host").SetString(host)
		v.FieldByName("Port").SetInt(int64(port))
	}
}

// leaks returns the paths of every string containing the upstream host
// prefix and every port in the upstream range, at any depth.
func leaks(v reflect.Value, path string, maxPort int) []string {
	var out []string
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			out = append(out, leaks(v.Elem(), path, maxPort)...)
		}
	case reflect.String:
		if strings.Contains(v.String(), upstreamHostPrefix) {
			out = append(out, fmt.Sprintf("%s = %q", path, v.String()))
		}
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			if bytes.Contains(v.Bytes(), []byte(upstreamHostPrefix)) {
				out = append(out, path+" (bytes)")
			}
			return out
		}
		for i := 0; i < v.Len(); i++ {
			out = append(out, leaks(v.Index(i), fmt.Sprintf("%s[%d]", path, i), maxPort)...)
		}
	case reflect.Struct:
		if v.Type() == tagsType {
			return out
		}
		for i := 0; i < v.NumField(); i++ {
			sf := v.Type().Field(i)
			if !sf.IsExported() {
				continue
			}
			f := v.Field(i)
			if sf.Name == "Port" && isIntKind(f.Kind()) {
				var p int64
				if f.CanInt() {
					p = f.Int()
				} else {
					p = int64(f.Uint())
				}
				if p > upstreamPortBase && p <= int64(upstreamPortBase+maxPort) {
					out = append(out, fmt.Sprintf("%s.Port = %d", path, p))
				}
			}
			out = append(out, leaks(f, path+"."+sf.Name, maxPort)...)
		}
	}
	return out
}

// diffValues lists the paths where a and b differ (at most max).
func diffValues(a, b reflect.Value, path string, out *[]string, max int) {
	if len(*out) >= max {
		return
	}
	if a.Kind() != b.Kind() {
		*out = append(*out, path+": kinds differ")
		return
	}
	switch a.Kind() {
	case reflect.Pointer:
		if a.IsNil() || b.IsNil() {
			if a.IsNil() != b.IsNil() {
				*out = append(*out, fmt.Sprintf("%s: want %v, got %v", path, a, b))
			}
			return
		}
		diffValues(a.Elem(), b.Elem(), path, out, max)
	case reflect.Struct:
		if a.Type() == tagsType {
			return
		}
		for i := 0; i < a.NumField(); i++ {
			if a.Type().Field(i).IsExported() {
				diffValues(a.Field(i), b.Field(i), path+"."+a.Type().Field(i).Name, out, max)
			}
		}
	case reflect.Slice:
		if a.Type().Elem().Kind() == reflect.Uint8 {
			if !bytes.Equal(a.Bytes(), b.Bytes()) {
				*out = append(*out, fmt.Sprintf("%s: want %x, got %x", path, a.Bytes(), b.Bytes()))
			}
			return
		}
		if a.Len() != b.Len() {
			*out = append(*out, fmt.Sprintf("%s: want %d elements, got %d", path, a.Len(), b.Len()))
			return
		}
		for i := 0; i < a.Len(); i++ {
			diffValues(a.Index(i), b.Index(i), fmt.Sprintf("%s[%d]", path, i), out, max)
		}
	default:
		if !reflect.DeepEqual(a.Interface(), b.Interface()) {
			*out = append(*out, fmt.Sprintf("%s: want %v, got %v", path, a.Interface(), b.Interface()))
		}
	}
}

func TestRewriteResponseEveryVersion(t *testing.T) {
	total := 0
	for _, key := range clientAddrKeys() {
		maxV := kmsg.ResponseForKey(key).MaxVersion()
		for v := int16(0); v <= maxV; v++ {
			total++
			t.Run(fmt.Sprintf("%s/v%d", apiName(key), v), func(t *testing.T) {
				checkRewriteResponse(t, key, v)
			})
		}
	}
	t.Logf("walked %d response versions over %d API keys", total, len(clientAddrKeys()))
}

func checkRewriteResponse(t *testing.T, key, version int16) {
	p, u := newOfflineProxy(t)
	u.epochOffset.Store(testEpochOffset)

	// What the cluster sends: a filled response, as encoded at this version.
	fl := newFiller(int64(key)<<16 | int64(version))
	filled := kmsg.ResponseForKey(key)
	fl.fillMessage(filled, version)
	body := filled.AppendTo(nil)
	sent := kmsg.ResponseForKey(key)
	sent.SetVersion(version)
	if err := sent.ReadFrom(body); err != nil {
		t.Fatalf("kmsg cannot read back its own encoding: %v", err)
	}
	hdrBytes := testResponseHeader(key, version, 42)
	frame := append(append([]byte(nil), hdrBytes...), body...)

	req := kmsg.RequestForKey(key)
	req.SetVersion(version)
	hdr := requestHeader{Key: key, Version: version, CorrID: 42, Known: true, Flexible: req.IsFlexible()}
	out, err := rewriteResponseFor(p, u, hdr, frame)
	if err != nil {
		t.Fatalf("rewriteResponse: %v", err)
	}
	if !bytes.HasPrefix(out, hdrBytes) {
		t.Fatalf("response header changed: sent %x, got %x", hdrBytes, out[:min(len(out), len(hdrBytes))])
	}
	if bytes.Contains(out, []byte(upstreamHostPrefix)) {
		t.Errorf("an upstream host survives in the bytes sent to the client")
	}
	got := kmsg.ResponseForKey(key)
	got.SetVersion(version)
	if err := got.ReadFrom(out[len(hdrBytes):]); err != nil {
		t.Fatalf("rewritten response does not decode: %v", err)
	}
	for _, l := range leaks(reflect.ValueOf(got).Elem(), apiName(key), fl.hosts) {
		t.Errorf("upstream address leaks: %s", l)
	}

	// No virtual broker for a node the cluster never named.
	p.mu.Lock()
	for real := range p.toVirtual[u.name] {
		if real < 1 || real > 3 {
			t.Errorf("virtual broker allocated for real node %d, which the response does not name at v%d", real, version)
		}
	}
	p.mu.Unlock()

	// Byte for byte what the cluster sent, with exactly the translations
	// the client must see.
	want := kmsg.ResponseForKey(key)
	want.SetVersion(version)
	if err := want.ReadFrom(body); err != nil {
		t.Fatal(err)
	}
	x := &expectation{p: p, u: u, key: key, version: version}
	x.apply(reflect.ValueOf(want).Elem(), "")
	for _, e := range x.errs {
		t.Errorf("%s", e)
	}
	if wantBody := want.AppendTo(nil); !bytes.Equal(wantBody, out[len(hdrBytes):]) {
		var diffs []string
		diffValues(reflect.ValueOf(want).Elem(), reflect.ValueOf(got).Elem(), apiName(key), &diffs, 20)
		if len(diffs) == 0 {
			diffs = []string{fmt.Sprintf("encodings differ: want %x, got %x", wantBody, out[len(hdrBytes):])}
		}
		for _, d := range diffs {
			t.Errorf("rewritten field: %s", d)
		}
	}
	switch r := got.(type) {
	case *kmsg.MetadataResponse:
		if version >= 2 && (r.ClusterID == nil || *r.ClusterID != p.ClusterID()) {
			t.Errorf("metadata cluster id: got %v, want %q", r.ClusterID, p.ClusterID())
		}
	case *kmsg.DescribeClusterResponse:
		if r.ClusterID != p.ClusterID() {
			t.Errorf("describe cluster id: got %q, want %q", r.ClusterID, p.ClusterID())
		}
	}
}

// TestRewriteListenersReleased checks the cleanup the other tests rely on:
// Close on a proxy that never ran releases the virtual brokers' listeners.
func TestRewriteListenersReleased(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.BrokerPortBase = -1
	cfg.Clusters = []ClusterConfig{{Name: "source", Bootstrap: []string{"127.0.0.1:1"}}}
	p, err := New(cfg, zap.NewNop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	p.virtualFor(p.active, 7)
	host, port, ok := p.brokerAddress(0)
	if !ok {
		p.Close()
		t.Fatal("virtual broker 0 has no listener")
	}
	addr := net.JoinHostPort(host, strconv.Itoa(int(port)))
	p.Close()
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("virtual broker listener %s still accepts after Close", addr)
	}
}

func TestRewriteApiVersionsCapsAtKmsgMax(t *testing.T) {
	maxKey := maxKmsgKey()
	advertiseAll := func() *kmsg.ApiVersionsResponse {
		r := kmsg.NewPtrApiVersionsResponse()
		for k := int16(0); k <= maxKey+5; k++ {
			ak := kmsg.NewApiVersionsResponseApiKey()
			ak.ApiKey, ak.MinVersion, ak.MaxVersion = k, 0, 999
			r.ApiKeys = append(r.ApiKeys, ak)
		}
		return r
	}
	check := func(t *testing.T, keys []kmsg.ApiVersionsResponseApiKey) {
		got := map[int16]int16{}
		for _, k := range keys {
			got[k.ApiKey] = k.MaxVersion
			if req := kmsg.RequestForKey(k.ApiKey); req != nil && k.MaxVersion > req.MaxVersion() {
				t.Errorf("%s (key %d) advertised up to v%d, kmsg (and this test) stop at v%d", apiName(k.ApiKey), k.ApiKey, k.MaxVersion, req.MaxVersion())
			}
		}
		for _, k := range clientAddrKeys() {
			want := kmsg.RequestForKey(k).MaxVersion()
			if got[k] != want {
				t.Errorf("%s (key %d): advertised max v%d, want v%d (kmsg's maximum, walked by TestRewriteResponseEveryVersion)", apiName(k), k, got[k], want)
			}
		}
	}
	t.Run("intersectVersions", func(t *testing.T) {
		check(t, intersectVersions([]*kmsg.ApiVersionsResponse{advertiseAll(), advertiseAll()}))
	})
	t.Run("apiVersionsResponse", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.Listen = "127.0.0.1:0"
		cfg.BrokerPortBase = -1
		cfg.Clusters = []ClusterConfig{
			{Name: "source", Bootstrap: []string{"127.0.0.1:1"}},
			{Name: "target", Bootstrap: []string{"127.0.0.1:1"}},
		}
		cfg.Active = "source"
		p, err := New(cfg, zap.NewNop(), prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		for _, u := range p.upstreams {
			u.mu.Lock()
			u.versions = advertiseAll()
			u.mu.Unlock()
		}
		maxV := kmsg.NewPtrApiVersionsRequest().MaxVersion()
		for v := int16(0); v <= maxV; v++ {
			frame, err := p.apiVersionsResponse(deadCtx(), requestHeader{Key: keyApiVersions, Version: v, CorrID: 9, Known: true}, nil)
			if err != nil {
				t.Fatalf("v%d: %v", v, err)
			}
			resp := kmsg.NewPtrApiVersionsResponse()
			resp.Version = v
			if err := resp.ReadFrom(frame[4:]); err != nil { // header v0: the correlation id only
				t.Fatalf("v%d: decode: %v", v, err)
			}
			check(t, resp.ApiKeys)
		}
	})
}

// countingTranslator flips every bit of every non-zero topic id it sees and
// counts the calls.
type countingTranslator struct{ topicIDs int }

func (c *countingTranslator) topicID(id [16]byte) [16]byte {
	c.topicIDs++
	return flipID(id)
}
func (c *countingTranslator) nodeID(id int32) int32               { return id }
func (c *countingTranslator) epoch(e int32) int32                 { return e }
func (c *countingTranslator) address(int32) (string, int32, bool) { return "", 0, false }

func flipID(id [16]byte) [16]byte {
	for i := range id {
		id[i] ^= 0xff
	}
	return id
}

// topicIDFields returns the paths of every non-zero TopicID at any depth.
func topicIDFields(v reflect.Value, path string) map[string][16]byte {
	out := map[string][16]byte{}
	var walk func(v reflect.Value, path string)
	walk = func(v reflect.Value, path string) {
		switch v.Kind() {
		case reflect.Pointer:
			if !v.IsNil() {
				walk(v.Elem(), path+"*")
			}
		case reflect.Slice:
			for i := 0; i < v.Len(); i++ {
				walk(v.Index(i), fmt.Sprintf("%s[%d]", path, i))
			}
		case reflect.Struct:
			if v.Type() == tagsType {
				return
			}
			for i := 0; i < v.NumField(); i++ {
				sf := v.Type().Field(i)
				if !sf.IsExported() {
					continue
				}
				if sf.Name == "TopicID" && sf.Type == uuidType {
					if id := v.Field(i).Interface().([16]byte); id != ([16]byte{}) {
						out[path+"."+sf.Name] = id
					}
					continue
				}
				walk(v.Field(i), path+"."+sf.Name)
			}
		}
	}
	walk(v, path)
	return out
}

func TestRewriteTopicIDsEveryVersion(t *testing.T) {
	type msg interface {
		SetVersion(int16)
		MaxVersion() int16
		AppendTo([]byte) []byte
		ReadFrom([]byte) error
	}
	keys, versions := 0, 0
	for key := int16(0); key <= maxKmsgKey(); key++ {
		if kmsg.RequestForKey(key) == nil {
			continue
		}
		counted := false
		for _, dir := range []string{"request", "response"} {
			newMsg := func() msg {
				if dir == "request" {
					return kmsg.RequestForKey(key)
				}
				return kmsg.ResponseForKey(key)
			}
			maxV := newMsg().MaxVersion()
			for v := int16(0); v <= maxV; v++ {
				fl := newFiller(int64(key)*1000 + int64(v))
				filled := newMsg()
				fl.fillMessage(filled, v)
				enc := filled.AppendTo(nil)
				m := newMsg()
				m.SetVersion(v)
				if err := m.ReadFrom(enc); err != nil {
					t.Fatalf("%s %s v%d: kmsg cannot read its own encoding: %v", apiName(key), dir, v, err)
				}
				before := topicIDFields(reflect.ValueOf(m).Elem(), "")
				if len(before) == 0 {
					continue
				}
				if !counted {
					keys++
					counted = true
				}
				versions++
				name := fmt.Sprintf("%s %s v%d", apiName(key), dir, v)

				tr := &countingTranslator{}
				translateMessage(m, tr)
				if tr.topicIDs != len(before) {
					t.Errorf("%s: %d topic id fields, translateMessage visited %d", name, len(before), tr.topicIDs)
				}
				// The translated ids are on the wire...
				m2 := newMsg()
				m2.SetVersion(v)
				if err := m2.ReadFrom(m.AppendTo(nil)); err != nil {
					t.Fatalf("%s: translated message does not decode: %v", name, err)
				}
				after := topicIDFields(reflect.ValueOf(m2).Elem(), "")
				for path, id := range before {
					if after[path] != flipID(id) {
						t.Errorf("%s: topic id at %s not translated", name, path)
					}
				}
				// ...and translating back restores every one.
				translateMessage(m2, &countingTranslator{})
				back := topicIDFields(reflect.ValueOf(m2).Elem(), "")
				for path, id := range before {
					if back[path] != id {
						t.Errorf("%s: topic id at %s does not round-trip", name, path)
					}
				}
			}
		}
	}
	t.Logf("walked %d message versions carrying topic ids over %d API keys", versions, keys)
}
