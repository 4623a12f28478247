package proxy

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/switchyard/switchyard/kafkasec"
)

// ClusterConfig names one upstream cluster the proxy may route to.
type ClusterConfig struct {
	// Name identifies the cluster in switches and status ("source", "target").
	Name string `yaml:"name" json:"name"`
	// Bootstrap lists host:port seed brokers.
	Bootstrap []string `yaml:"bootstrap" json:"bootstrap"`
	// Security is how the proxy connects and authenticates to the
	// cluster's brokers (TLS, SASL); the zero value is PLAINTEXT.
	kafkasec.Config `yaml:",inline"`
}

// Config configures a Proxy. Start from DefaultConfig.
type Config struct {
	// Clusters are the upstream clusters; at least one.
	Clusters []ClusterConfig `yaml:"clusters"`
	// Active names the cluster routed to at start.
	Active string `yaml:"active"`
	// Listen is the bootstrap listener clients are configured with.
	Listen string `yaml:"listen"`
	// AdvertiseHost is the host put in rewritten broker addresses; empty
	// means the host of Listen.
	AdvertiseHost string `yaml:"advertiseHost"`
	// BrokerPortBase: virtual broker N listens on port BrokerPortBase+N.
	// Zero picks the port after Listen's; -1 uses ephemeral ports (tests).
	BrokerPortBase int `yaml:"brokerPortBase"`
	// BrokerAddressBase, when set, gives each virtual broker its own loopback
	// address instead of its own port: broker N listens on
	// BrokerAddressBase+N (e.g. 127.0.1.0 → 127.0.1.0, 127.0.1.1, ...) at
	// Listen's port. Overrides BrokerPortBase.
	BrokerAddressBase string `yaml:"brokerAddressBase"`
	// ClusterID is the virtual cluster id presented to clients; empty derives
	// a stable one from the cluster names.
	ClusterID string `yaml:"clusterID"`
	// MaxFrameBytes bounds a client request or upstream response frame.
	MaxFrameBytes int32 `yaml:"maxFrameBytes"`
	// DialTimeout bounds one upstream dial.
	DialTimeout time.Duration `yaml:"dialTimeout"`
	// DrainTimeout bounds how long a switch waits for in-flight requests.
	DrainTimeout time.Duration `yaml:"drainTimeout"`
	// HoldBudget bounds how long a HOLD gate parks a request before it is
	// answered with a retriable error (unless a control plane's hold lease
	// extends it, up to MaxHold), and how long a Produce waits after
	// a switch behind the first batch of its producer and partition on the
	// new cluster (sequences.go) before it is answered NOT_ENOUGH_REPLICAS.
	HoldBudget time.Duration `yaml:"holdBudget"`
	// MaxHold caps every hold, from when the request was parked, whatever
	// extends it: a gate's own budget, a control plane's hold lease
	// (ExtendHold), a switch's drain. Keep it below the clients' request
	// timeout, or the client gives up on a held request first, closes its
	// connection, and with retries=0 fails the send. The default, 18 s,
	// is below the shortest default of the common clients: franz-go's
	// ProduceRequestTimeout plus RequestTimeoutOverhead (10 s + 10 s for a
	// Produce); request.timeout.ms is 30 s in the Java client and
	// librdkafka, sarama's Net.ReadTimeout and kafkajs's requestTimeout
	// 30 s. At or above HoldBudget.
	MaxHold time.Duration `yaml:"maxHold"`
	// ClientAuth says how clients authenticate (SASL passthrough,
	// terminate or none) and whether the client listeners serve TLS.
	ClientAuth ClientAuth `yaml:"clientAuth"`
	// MaxConnections bounds the client connections served at once; more
	// are closed on accept (metric connections_refused_total).
	MaxConnections int `yaml:"maxConnections"`
	// MaxInflightPerConnection bounds the requests of one connection
	// forwarded and not yet answered; beyond it the proxy stops reading
	// that client until a response goes out (TCP back-pressure, no error).
	MaxInflightPerConnection int `yaml:"maxInflightPerConnection"`
	// IdleTimeout closes a client connection that sent nothing and had
	// nothing in flight for this long (brokers' connections.max.idle.ms
	// is 10 minutes); clients reconnect when they need to.
	IdleTimeout time.Duration `yaml:"idleTimeout"`
	// ClientIOTimeout bounds reading one request (from its first byte to
	// its last) and writing one response, so a stalled client — sending
	// half a request, or not reading — cannot pin a connection.
	ClientIOTimeout time.Duration `yaml:"clientIOTimeout"`
	// Gate is applied at start (e.g. --forbidden-api-keys).
	Gate Gate `yaml:"-"`
	// Routing says where partition requests go: "leader" (the default; ""
	// means it) sends each partition of a Produce, Fetch, ListOffsets,
	// OffsetForLeaderEpoch or DeleteRecords to its leader as the proxy
	// knows it, splitting a request whose partitions different brokers
	// lead, and shows clients stable leaders (vleaders.go), so that no
	// client is answered NOT_LEADER_OR_FOLLOWER for a leader move or a
	// switch; "broker" sends every request to the broker behind the
	// client's virtual broker and shows the real leaders (route.go).
	Routing string `yaml:"routing"`
	// MaxVirtualBrokers bounds the virtual brokers (and their listeners)
	// made for one cluster's node ids; ids beyond it are presented as -1.
	MaxVirtualBrokers int `yaml:"maxVirtualBrokers"`
	// StopTimeout bounds how long Run, once its context is cancelled,
	// waits for the connections it closed to finish.
	StopTimeout time.Duration `yaml:"stopTimeout"`

	// MaxHeldBytes bounds the bytes of the requests HOLD gates and a
	// draining switch park at once, over all connections. A request that
	// would take the proxy past it is answered as a REJECT gate would
	// (outcome hold_limit).
	MaxHeldBytes int64 `yaml:"maxHeldBytes"`

	// ProducerIDExpiry is how long an idempotent producer the proxy
	// follows may stay unused before the proxy forgets it, as brokers
	// forget a producer after producer.id.expiration.ms (1 day by
	// default). Use the clusters' value if it was changed.
	ProducerIDExpiry time.Duration `yaml:"producerIdExpiry"`
	// MaxProducerIDs bounds the idempotent producers the proxy follows;
	// beyond it the least recently used one is forgotten (metric
	// producer_ids_expired_total{reason="limit"}).
	MaxProducerIDs int `yaml:"maxProducerIds"`

	// metadataRefresh is the period of the proxy's own metadata refresh
	// (10 s when 0); tests lengthen it to keep a view they made stale.
	metadataRefresh time.Duration
	// MaxTransactionTimeout caps the transaction timeout the proxy assumes
	// for a transactional producer (the one its accepted InitProducerId
	// asked for): an open transaction is taken to have been aborted by
	// its coordinator once that much time and a margin have passed. Kafka's
	// transaction.max.timeout.ms, 15 minutes by default; raise it to match
	// clusters that allow longer transactions, or a switch may land inside
	// one of them.
	MaxTransactionTimeout time.Duration `yaml:"maxTransactionTimeout"`
}

// DefaultConfig returns the defaults: listen on 127.0.0.1:9092 with virtual
// brokers on the following ports, 100 MiB frames, 10 s dial, drain and hold
// budget, no hold longer than 18 s;
// for client SASL terminated by the proxy, Kafka's limits before
// authentication (512 KiB frames, 100 ms before answering a failure) and at
// most 10 failed authentications per client address and minute.
func DefaultConfig() Config {
	return Config{
		Listen:        "127.0.0.1:9092",
		MaxFrameBytes: 100 << 20,
		DialTimeout:   10 * time.Second,
		DrainTimeout:  10 * time.Second,
		HoldBudget:    10 * time.Second,
		MaxHold:       18 * time.Second,

		MaxConnections:           10000,
		MaxInflightPerConnection: 256,
		IdleTimeout:              10 * time.Minute,
		ClientIOTimeout:          60 * time.Second,
		MaxHeldBytes:             64 << 20,
		StopTimeout:              5 * time.Second,
		MaxVirtualBrokers:        1024,
		ClientAuth: ClientAuth{
			MaxPreAuthFrameBytes: 512 << 10,
			FailedAuthDelay:      100 * time.Millisecond,
			MaxFailedAuths:       10,
			FailedAuthWindow:     time.Minute,
		},

		ProducerIDExpiry:      24 * time.Hour,
		MaxProducerIDs:        defaultMaxProducerIDs,
		MaxTransactionTimeout: 15 * time.Minute,
	}
}

// defaultMaxProducerIDs keeps the producer-id table within a few MiB
// (about 400 bytes per producer that wrote to one partition).
const defaultMaxProducerIDs = 20000

// Validate reports the first configuration error, naming the field.
func (c *Config) Validate() error {
	if len(c.Clusters) == 0 {
		return errors.New("clusters: at least one upstream cluster is required")
	}
	seen := map[string]bool{}
	for i, cl := range c.Clusters {
		if cl.Name == "" {
			return fmt.Errorf("clusters[%d].name: empty", i)
		}
		if seen[cl.Name] {
			return fmt.Errorf("clusters[%d].name: %q defined twice", i, cl.Name)
		}
		seen[cl.Name] = true
		if len(cl.Bootstrap) == 0 {
			return fmt.Errorf("clusters[%d] (%s).bootstrap: at least one host:port is required", i, cl.Name)
		}
		for _, a := range cl.Bootstrap {
			if err := checkHostPort(a); err != nil {
				return fmt.Errorf("clusters[%d] (%s).bootstrap: %w", i, cl.Name, err)
			}
		}
		if err := c.Clusters[i].Config.Validate(fmt.Sprintf("clusters[%d] (%s)", i, cl.Name)); err != nil {
			return err
		}
	}
	if c.Active == "" {
		if len(c.Clusters) > 1 {
			return errors.New("active: required when more than one cluster is configured")
		}
		c.Active = c.Clusters[0].Name
	}
	if !seen[c.Active] {
		return fmt.Errorf("active: %w %q", ErrUnknownCluster, c.Active)
	}
	if err := checkHostPort(c.Listen); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if c.BrokerAddressBase != "" {
		ip := net.ParseIP(c.BrokerAddressBase)
		if ip == nil || ip.To4() == nil {
			return fmt.Errorf("brokerAddressBase: %q is not an IPv4 address", c.BrokerAddressBase)
		}
	}
	if c.BrokerPortBase < -1 || c.BrokerPortBase > 65535 {
		return fmt.Errorf("brokerPortBase: %d out of range", c.BrokerPortBase)
	}
	if c.MaxFrameBytes < 1024 {
		return fmt.Errorf("maxFrameBytes: %d is below the 1024-byte minimum", c.MaxFrameBytes)
	}
	if c.DialTimeout <= 0 {
		return fmt.Errorf("dialTimeout: %v must be positive", c.DialTimeout)
	}
	if c.DrainTimeout <= 0 {
		return fmt.Errorf("drainTimeout: %v must be positive", c.DrainTimeout)
	}
	if c.HoldBudget <= 0 {
		return fmt.Errorf("holdBudget: %v must be positive", c.HoldBudget)
	}
	if c.MaxHold < c.HoldBudget {
		return fmt.Errorf("maxHold: %v is below holdBudget %v: no hold outlasts maxHold (keep both below the clients' request timeout)", c.MaxHold, c.HoldBudget)
	}
	if c.MaxHeldBytes <= 0 {
		return fmt.Errorf("maxHeldBytes: %d must be positive", c.MaxHeldBytes)
	}
	switch c.Routing {
	case "", RoutingLeader, RoutingBroker:
	default:
		return fmt.Errorf("routing: %q is not %q or %q", c.Routing, RoutingLeader, RoutingBroker)
	}
	if c.MaxVirtualBrokers < 1 {
		return fmt.Errorf("maxVirtualBrokers: %d must be at least 1", c.MaxVirtualBrokers)
	}
	if c.StopTimeout <= 0 {
		return fmt.Errorf("stopTimeout: %v must be positive", c.StopTimeout)
	}
	if c.ProducerIDExpiry <= 0 {
		return fmt.Errorf("producerIdExpiry: %v must be positive", c.ProducerIDExpiry)
	}
	if c.MaxProducerIDs < 1 {
		return fmt.Errorf("maxProducerIds: %d must be at least 1", c.MaxProducerIDs)
	}
	if c.MaxTransactionTimeout < time.Millisecond {
		return fmt.Errorf("maxTransactionTimeout: %v must be at least 1ms", c.MaxTransactionTimeout)
	}
	if err := c.ClientAuth.validate(c.Clusters); err != nil {
		return err
	}
	if c.MaxConnections < 1 {
		return fmt.Errorf("maxConnections: %d must be at least 1", c.MaxConnections)
	}
	if c.MaxInflightPerConnection < 1 {
		return fmt.Errorf("maxInflightPerConnection: %d must be at least 1", c.MaxInflightPerConnection)
	}
	if c.IdleTimeout <= 0 {
		return fmt.Errorf("idleTimeout: %v must be positive", c.IdleTimeout)
	}
	if c.ClientIOTimeout <= 0 {
		return fmt.Errorf("clientIOTimeout: %v must be positive", c.ClientIOTimeout)
	}
	if !c.Gate.IsZero() {
		if err := c.Gate.validate(); err != nil {
			return fmt.Errorf("gate: %w", err)
		}
	}
	return nil
}

func (g Gate) validate() error {
	if g.IsZero() {
		return fmt.Errorf("%w: no API keys", ErrInvalidGate)
	}
	for _, k := range slices.Concat(g.APIKeys, g.RejectKeys) {
		if k < 0 {
			return fmt.Errorf("%w: API key %d", ErrInvalidGate, k)
		}
		if !gateable(k) {
			return fmt.Errorf("%w: API key %d (%s) cannot be answered with a retriable error; gateable keys: %s",
				ErrInvalidGate, k, apiName(k), gateableList())
		}
	}
	if len(g.APIKeys) > 0 && g.Mode != GateReject && g.Mode != GateHold {
		return fmt.Errorf("%w: mode %v", ErrInvalidGate, g.Mode)
	}
	if g.HoldBudget < 0 {
		return fmt.Errorf("%w: hold budget %v must not be negative", ErrInvalidGate, g.HoldBudget)
	}
	return nil
}

func checkHostPort(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return fmt.Errorf("%q: %w", a, err)
	}
	if host == "" {
		return fmt.Errorf("%q: empty host", a)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("%q: bad port", a)
	}
	return nil
}
