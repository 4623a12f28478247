package proxy

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"

	"github.com/switchyard/switchyard/internal/tlsfiles"
	"github.com/switchyard/switchyard/kafkasec"
)

// upstream is one configured cluster: what the proxy has learned about its
// brokers, topic ids and API versions, and a franz-go client for the
// proxy's own requests to it (metadata, API versions).
type upstream struct {
	name   string
	cfg    ClusterConfig
	sec    *kafkasec.Security // TLS and SASL for every connection to it
	client *kgo.Client

	// epochOffset is added to every leader epoch this cluster reports; it
	// is raised when the proxy switches to the cluster so that epochs only
	// ever rise for clients (see Proxy.Switch).
	epochOffset atomic.Int32

	mu            sync.RWMutex
	brokers       map[int32]string          // real node id → host:port
	topicIDs      map[string][16]byte       // topic name → real id
	topicNames    map[[16]byte]string       // real id → topic name
	leaderEpochs  map[string][]int32        // topic → partition → real leader epoch
	leaders       map[string][]int32        // topic → partition → real leader id (-1: none)
	versions      *kmsg.ApiVersionsResponse // nil until known
	realClusterID string
	// brokerCapLogged: the proxy logged that this cluster named more
	// brokers than MaxVirtualBrokers (virtualFor).
	brokerCapLogged atomic.Bool
	lastErr         string
	lastRefresh     time.Time

	// leaderRefresh serialises the leader refreshes re-sends ask for
	// (refreshLeaders): a token, taken with a context; leaderRefreshAt
	// (guarded by the token) is when the last one started.
	leaderRefresh   chan struct{}
	leaderRefreshAt time.Time
}

func newUpstream(cfg ClusterConfig, dialTimeout time.Duration, log *zap.Logger) (*upstream, error) {
	clog := log.With(zap.String("cluster", cfg.Name))
	sec, err := kafkasec.New(context.Background(), cfg.Name, cfg.Config,
		tlsfiles.OnReloadError(func(err error) {
			clog.Warn("TLS files changed but cannot be loaded; keeping the previous ones", zap.Error(err))
		}))
	if err != nil {
		return nil, err
	}
	if cfg.TLS.InsecureSkipVerify {
		clog.Warn("TLS certificate verification is off for this cluster (tls.insecureSkipVerify)")
	}
	opts := append([]kgo.Opt{
		kgo.SeedBrokers(cfg.Bootstrap...),
		kgo.DialTimeout(dialTimeout),
		kgo.RequestRetries(2),
		kgo.RetryTimeout(dialTimeout),
		kgo.MetadataMinAge(time.Second),
		kgo.WithLogger(kgoLogger{clog.With(zap.String("client", "proxy-admin"))}),
	}, sec.KgoOpts(dialTimeout)...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: client: %w", cfg.Name, err)
	}
	return &upstream{
		name:          cfg.Name,
		cfg:           cfg,
		sec:           sec,
		client:        cl,
		brokers:       map[int32]string{},
		topicIDs:      map[string][16]byte{},
		topicNames:    map[[16]byte]string{},
		leaderEpochs:  map[string][]int32{},
		leaders:       map[string][]int32{},
		leaderRefresh: make(chan struct{}, 1),
	}, nil
}

func (u *upstream) close() { u.client.Close() }

func (u *upstream) setErr(err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if err == nil {
		u.lastErr = ""
	} else {
		u.lastErr = err.Error()
	}
}

// refresh asks the cluster for its API versions (once) and the metadata of
// all topics, and learns brokers and topic ids.
func (u *upstream) refresh(ctx context.Context) error {
	if u.apiVersions() == nil {
		if err := u.loadVersions(ctx); err != nil {
			err = u.diagnose(ctx, err)
			u.setErr(err)
			return err
		}
	}
	resp, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, u.client)
	if err != nil {
		err = u.diagnose(ctx, fmt.Errorf("cluster %s: metadata: %w: %w", u.name, ErrUnreachable, err))
		u.setErr(err)
		return err
	}
	u.learnMetadata(resp)
	u.setErr(nil)
	return nil
}

// diagnose explains a failure of the proxy's own client when the cluster
// has TLS or SASL configured: franz-go reports a broker that hangs up
// during a failed handshake as a bare EOF, so the proxy connects once
// itself, step by step, and reports the step that failed (TLS handshake,
// SASL handshake, authentication) instead. err is kept when that
// connection succeeds.
func (u *upstream) diagnose(ctx context.Context, err error) error {
	if !u.cfg.Config.Enabled() || ctx.Err() != nil {
		return err
	}
	for _, addr := range u.cfg.Bootstrap {
		c, derr := u.sec.Dial(ctx, addr, 10*time.Second)
		if derr == nil {
			c.Close()
			return err
		}
		if !errors.Is(derr, syscall.ECONNREFUSED) {
			return fmt.Errorf("%w: %w", ErrUnreachable, derr)
		}
	}
	return err
}

// refreshOnMiss refreshes all topics after a lookup missed, at most once a
// second: a client naming a deleted topic's id must not turn every one of
// its requests into a metadata round trip.
func (u *upstream) refreshOnMiss(ctx context.Context) {
	u.mu.Lock()
	if time.Since(u.lastRefresh) < time.Second {
		u.mu.Unlock()
		return
	}
	u.lastRefresh = time.Now()
	u.mu.Unlock()
	_ = u.refresh(ctx)
}

func (u *upstream) loadVersions(ctx context.Context) error {
	req := kmsg.NewPtrApiVersionsRequest()
	req.ClientSoftwareName = "switchyard"
	req.ClientSoftwareVersion = "0"
	resp, err := req.RequestWith(ctx, u.client)
	if err != nil {
		return fmt.Errorf("cluster %s: api versions: %w: %w", u.name, ErrUnreachable, err)
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return fmt.Errorf("cluster %s: api versions: %w", u.name, err)
	}
	u.mu.Lock()
	u.versions = resp
	u.mu.Unlock()
	return nil
}

// pickVersion returns the highest version of key in [lo, hi] the cluster
// supports (hi while its versions are unknown, lo if none is).
func (u *upstream) pickVersion(key, lo, hi int16) int16 {
	vs := u.apiVersions()
	if vs == nil {
		return hi
	}
	for _, k := range vs.ApiKeys {
		if k.ApiKey == key {
			return max(lo, k.MinVersion, min(hi, k.MaxVersion))
		}
	}
	return lo
}

// apiVersions returns the cluster's ApiVersions answer, nil until known.
func (u *upstream) apiVersions() *kmsg.ApiVersionsResponse {
	u.mu.RLock()
	defer u.mu.RUnlock()
	return u.versions
}

// learnMetadata records brokers, the cluster id and topic ids from a
// metadata response (as the cluster sent it, before translation).
func (u *upstream) learnMetadata(resp *kmsg.MetadataResponse) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, b := range resp.Brokers {
		u.brokers[b.NodeID] = net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port)))
	}
	if resp.ClusterID != nil {
		u.realClusterID = *resp.ClusterID
	}
	for _, t := range resp.Topics {
		if t.Topic == nil {
			continue
		}
		if t.TopicID != ([16]byte{}) {
			u.topicIDs[*t.Topic] = t.TopicID
			u.topicNames[t.TopicID] = *t.Topic
		}
		if len(t.Partitions) > 0 {
			leaders := make([]int32, len(t.Partitions))
			for i := range leaders {
				leaders[i] = -1
			}
			for _, p := range t.Partitions {
				// REPLICA_NOT_AVAILABLE (a follower is offline) still
				// names the leader.
				led := p.ErrorCode == 0 || p.ErrorCode == kerr.ReplicaNotAvailable.Code
				if int(p.Partition) < len(leaders) && p.Partition >= 0 && led && p.Leader >= 0 {
					leaders[p.Partition] = p.Leader
				}
			}
			u.leaders[*t.Topic] = leaders
		}
		if resp.Version >= 7 && len(t.Partitions) > 0 {
			epochs := make([]int32, len(t.Partitions))
			for _, p := range t.Partitions {
				if int(p.Partition) < len(epochs) && p.Partition >= 0 {
					epochs[p.Partition] = p.LeaderEpoch
				}
			}
			u.leaderEpochs[*t.Topic] = epochs
		}
	}
}

// leader returns the real broker last learned to lead a partition.
func (u *upstream) leader(topic string, partition int32) (int32, bool) {
	u.mu.RLock()
	defer u.mu.RUnlock()
	ls := u.leaders[topic]
	if partition < 0 || int(partition) >= len(ls) || ls[partition] < 0 {
		return 0, false
	}
	return ls[partition], true
}

// learnLeader records a partition's leader as a broker named it (KIP-951
// CurrentLeader in a Produce or Fetch response) unless the proxy already
// knows a leader of a later epoch.
func (u *upstream) learnLeader(topic string, partition, leader, epoch int32) {
	if leader < 0 || partition < 0 {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	ls, es := u.leaders[topic], u.leaderEpochs[topic]
	if int(partition) >= len(ls) {
		return // a partition the proxy never saw: the next refresh tells
	}
	if int(partition) < len(es) {
		if epoch < es[partition] {
			return
		}
		es[partition] = epoch
	}
	ls[partition] = leader
}

// refreshLeaders asks the cluster for the metadata of topics, unless a
// refresh started after since (it answers for the same change): the
// re-sends of many connections refused at once cost one request.
func (u *upstream) refreshLeaders(ctx context.Context, topics []string, since time.Time) error {
	select {
	case u.leaderRefresh <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-u.leaderRefresh }()
	if u.leaderRefreshAt.After(since) {
		return nil
	}
	u.leaderRefreshAt = time.Now()
	req := kmsg.NewPtrMetadataRequest()
	for _, t := range topics {
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr(t)
		req.Topics = append(req.Topics, rt)
	}
	resp, err := req.RequestWith(ctx, u.client)
	if err != nil {
		return fmt.Errorf("cluster %s: metadata of %v: %w", u.name, topics, err)
	}
	u.learnMetadata(resp)
	return nil
}

// leaderEpoch returns the last leader epoch learned for a partition.
func (u *upstream) leaderEpoch(topic string, partition int32) (int32, bool) {
	u.mu.RLock()
	defer u.mu.RUnlock()
	es := u.leaderEpochs[topic]
	if partition < 0 || int(partition) >= len(es) {
		return 0, false
	}
	return es[partition], true
}

func (u *upstream) learnBroker(id int32, host string, port int32) {
	addr := net.JoinHostPort(host, strconv.Itoa(int(port)))
	u.mu.RLock()
	same := u.brokers[id] == addr
	u.mu.RUnlock()
	if same {
		return
	}
	u.mu.Lock()
	u.brokers[id] = addr
	u.mu.Unlock()
}

// brokerIDs returns the real node ids known, ascending.
func (u *upstream) brokerIDs() []int32 {
	u.mu.RLock()
	defer u.mu.RUnlock()
	ids := make([]int32, 0, len(u.brokers))
	for id := range u.brokers {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

func (u *upstream) brokerAddr(id int32) (string, bool) {
	u.mu.RLock()
	defer u.mu.RUnlock()
	a, ok := u.brokers[id]
	return a, ok
}

func (u *upstream) topicName(id [16]byte) (string, bool) {
	u.mu.RLock()
	defer u.mu.RUnlock()
	n, ok := u.topicNames[id]
	return n, ok
}

func (u *upstream) topicID(name string) ([16]byte, bool) {
	u.mu.RLock()
	defer u.mu.RUnlock()
	id, ok := u.topicIDs[name]
	return id, ok
}

func (u *upstream) status() ClusterStatus {
	u.mu.RLock()
	defer u.mu.RUnlock()
	return ClusterStatus{
		Name:          u.name,
		Bootstrap:     append([]string(nil), u.cfg.Bootstrap...),
		Brokers:       len(u.brokers),
		RealClusterID: u.realClusterID,
		LastError:     u.lastErr,
	}
}

// virtualTopicID is the topic id presented to clients for a topic name. It
// is derived from the name and the virtual cluster id, so it is the same on
// every cluster and across proxy restarts.
func virtualTopicID(clusterID, topic string) [16]byte {
	h := sha256.New()
	h.Write([]byte("switchyard/topic-id\x00"))
	h.Write([]byte(clusterID))
	h.Write([]byte{0})
	h.Write([]byte(topic))
	var id [16]byte
	copy(id[:], h.Sum(nil))
	if id == ([16]byte{}) {
		id[15] = 1
	}
	return id
}

// kgoLogger adapts zap to kgo.Logger for the proxy's own clients.
type kgoLogger struct{ l *zap.Logger }

func (k kgoLogger) Level() kgo.LogLevel { return kgo.LogLevelWarn }
func (k kgoLogger) Log(level kgo.LogLevel, msg string, kv ...any) {
	fields := make([]zap.Field, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		fields = append(fields, zap.Any(fmt.Sprint(kv[i]), kv[i+1]))
	}
	switch level {
	case kgo.LogLevelError:
		k.l.Error(msg, fields...)
	default:
		k.l.Warn(msg, fields...)
	}
}
