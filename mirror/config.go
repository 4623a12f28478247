package mirror

import (
	"errors"
	"fmt"
	"net"
	"os"
	"regexp"
	"time"

	"github.com/switchyard/switchyard/mirror/topics"

	"github.com/switchyard/switchyard/kafkasec"
)

// Config configures a Mirror. Start from DefaultConfig.
type Config struct {
	// Name identifies the mirror: its transactional id, its internal
	// checkpoint topic on the target (__switchyard_mirror_<name>) and its
	// metrics label. Restarting with the same name resumes.
	Name string `yaml:"name"`
	// SourceBootstrap and TargetBootstrap list host:port seed brokers.
	SourceBootstrap []string `yaml:"sourceBootstrap"`
	TargetBootstrap []string `yaml:"targetBootstrap"`
	// Source and Target say how to connect to each cluster: TLS and SASL
	// (zero: PLAINTEXT). YAML: `sourceSecurity: {tls: {...}, sasl: {...}}`.
	Source kafkasec.Config `yaml:"sourceSecurity"`
	Target kafkasec.Config `yaml:"targetSecurity"`
	// Topics selects and names the topics to mirror.
	Topics topics.Policy `yaml:"topics"`
	// Groups are regexps (whole-name) of the consumer groups whose offsets
	// are synced periodically; empty means none (SyncGroups still works for
	// any group on demand).
	Groups []string `yaml:"groups"`
	// TxnMaxRecords and TxnMaxInterval bound one target transaction: the
	// unit of crash-safe progress. Larger transactions mean fewer commit
	// markers and offset-map ranges; smaller ones, less to redo after a crash.
	TxnMaxRecords  int           `yaml:"txnMaxRecords"`
	TxnMaxInterval time.Duration `yaml:"txnMaxInterval"`
	// TxnMaxBytes bounds the record batch bytes of one transaction (a
	// batch is never split, so one larger batch still goes alone).
	TxnMaxBytes int `yaml:"txnMaxBytes"`
	// TopicSyncInterval is how often topics, partitions and configs are
	// re-synced (new topics, partition increases, config changes).
	TopicSyncInterval time.Duration `yaml:"topicSyncInterval"`
	// TopicPollInterval is how often the source's topic list is looked at
	// (one Metadata request): a new selected topic, or a partition
	// increase, is synced at once instead of at the next TopicSyncInterval.
	TopicPollInterval time.Duration `yaml:"topicPollInterval"`
	// GroupSyncInterval is how often the selected groups' offsets are synced.
	GroupSyncInterval time.Duration `yaml:"groupSyncInterval"`
	// ACLs turns on ACL sync: the source's topic and group ACLs for the
	// selected topics and groups are created on the target (never
	// deleted), every TopicSyncInterval. ACLWildcards also copies ACLs on
	// the "*" resource.
	ACLs         bool `yaml:"acls"`
	ACLWildcards bool `yaml:"aclWildcards"`
	// ScaleOut lets several processes with the same Name share the
	// partitions, through the consumer group switchyard-mirror-<name> on
	// the target. Off, a second process with the same name fences the
	// first, which stops.
	ScaleOut bool `yaml:"scaleOut"`
	// Instance names this process among those of a scaled-out mirror (its
	// transactional id is switchyard-mirror-<name>-<instance>). Keep it
	// stable across restarts — a restarted instance then settles its own
	// unfinished transaction at once instead of after the transaction
	// timeout. Default: the host name.
	Instance string `yaml:"instance"`
	// TxnTimeout is the target transaction timeout: after it the broker
	// aborts a transaction its mirror left open (killed). Until then that
	// transaction holds back the checkpoint topic, so a scaled-out mirror
	// taking over a dead process's partitions waits up to this long.
	TxnTimeout time.Duration `yaml:"txnTimeout"`
	// GroupSessionTimeout is how long a scaled-out process may be silent
	// before the group gives its partitions to the others.
	GroupSessionTimeout time.Duration `yaml:"groupSessionTimeout"`
	// RetryBackoff and RetryBackoffMax bound the wait after a failed
	// transaction before it is retried.
	RetryBackoff    time.Duration `yaml:"retryBackoff"`
	RetryBackoffMax time.Duration `yaml:"retryBackoffMax"`
	// Gaps says what to do when the source deletes records (retention,
	// DeleteRecords) before the mirror copied them.
	Gaps GapPolicy `yaml:"gaps"`
}

// Gap policies.
const (
	// GapStop: the partition stops and reports the offsets lost, retrying
	// with backoff, until the policy of its topic changes.
	GapStop = "stop"
	// GapContinue: the offset map records the lost offsets and the copy
	// goes on from the source's log start.
	GapContinue = "continue"
)

// GapPolicy chooses, per source topic, what the mirror does when the
// source's log start passes the mirror's position in a partition it has
// begun to copy, or has read without committing: a gap of records the
// mirror never copied. (A partition neither begun nor read yet simply
// begins at the log start.)
type GapPolicy struct {
	// Default is the policy of topics neither list names: GapStop or
	// GapContinue.
	Default string `yaml:"default"`
	// Continue and Stop are whole-name regexps of source topics with that
	// policy; a topic both name stops. Kafka Streams deletes the records
	// of its repartition topics once consumed, by design: the default
	// Continue is [".*-repartition"].
	Continue []string `yaml:"continue"`
	Stop     []string `yaml:"stop"`
}

// compile returns the policy as a function of the source topic.
func (g GapPolicy) compile() (func(topic string) string, error) {
	if g.Default != GapStop && g.Default != GapContinue {
		return nil, fmt.Errorf("gaps.default: %q: want %q or %q", g.Default, GapStop, GapContinue)
	}
	compile := func(field string, patterns []string) ([]*regexp.Regexp, error) {
		var out []*regexp.Regexp
		for _, p := range patterns {
			re, err := regexp.Compile("^(?:" + p + ")$")
			if err != nil {
				return nil, fmt.Errorf("gaps.%s: %q: %w", field, p, err)
			}
			out = append(out, re)
		}
		return out, nil
	}
	cont, err := compile("continue", g.Continue)
	if err != nil {
		return nil, err
	}
	stop, err := compile("stop", g.Stop)
	if err != nil {
		return nil, err
	}
	matches := func(res []*regexp.Regexp, topic string) bool {
		for _, re := range res {
			if re.MatchString(topic) {
				return true
			}
		}
		return false
	}
	def := g.Default
	return func(topic string) string {
		switch {
		case matches(stop, topic):
			return GapStop
		case matches(cont, topic):
			return GapContinue
		}
		return def
	}, nil
}

// DefaultConfig returns the defaults: transactions of up to 100,000
// records, 16 MiB or 500 ms, topic sync every 30 s, group sync every 5 s;
// a gap stops its partition, except on Kafka Streams repartition topics.
func DefaultConfig() Config {
	return Config{
		TxnMaxRecords:       100000,
		TxnMaxBytes:         16 << 20,
		TxnMaxInterval:      500 * time.Millisecond,
		TopicSyncInterval:   30 * time.Second,
		TopicPollInterval:   2 * time.Second,
		GroupSyncInterval:   5 * time.Second,
		RetryBackoff:        200 * time.Millisecond,
		RetryBackoffMax:     10 * time.Second,
		Instance:            defaultInstance(),
		TxnTimeout:          15 * time.Second,
		GroupSessionTimeout: 10 * time.Second,
		Gaps:                GapPolicy{Default: GapStop, Continue: []string{".*-repartition"}},
	}
}

// defaultInstance is the host name with characters outside [A-Za-z0-9._-]
// replaced, or "instance" when there is none.
func defaultInstance() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "instance"
	}
	h = regexp.MustCompile(`[^A-Za-z0-9._-]`).ReplaceAllString(h, "-")
	return h[:min(len(h), 100)]
}

var namePattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)

// Validate reports the first configuration error, naming the field.
func (c *Config) Validate() error {
	if !namePattern.MatchString(c.Name) {
		return fmt.Errorf("name: %q: want 1-100 characters of [A-Za-z0-9._-]", c.Name)
	}
	for field, addrs := range map[string][]string{"sourceBootstrap": c.SourceBootstrap, "targetBootstrap": c.TargetBootstrap} {
		if len(addrs) == 0 {
			return fmt.Errorf("%s: at least one host:port is required", field)
		}
		for _, a := range addrs {
			if _, _, err := net.SplitHostPort(a); err != nil {
				return fmt.Errorf("%s: %q: %w", field, a, err)
			}
		}
	}
	if err := c.Source.Validate("source"); err != nil {
		return err
	}
	if err := c.Target.Validate("target"); err != nil {
		return err
	}
	if _, err := c.Topics.Compile(); err != nil {
		return fmt.Errorf("topics: %w", err)
	}
	for _, g := range c.Groups {
		if _, err := regexp.Compile("^(?:" + g + ")$"); err != nil {
			return fmt.Errorf("groups: %q: %w", g, err)
		}
	}
	if _, err := c.Gaps.compile(); err != nil {
		return err
	}
	if c.ScaleOut && !namePattern.MatchString(c.Instance) {
		return fmt.Errorf("instance: %q: want 1-100 characters of [A-Za-z0-9._-] (the default is the host name)", c.Instance)
	}
	if c.TxnMaxRecords <= 0 {
		return errors.New("txnMaxRecords: must be positive")
	}
	if c.TxnMaxBytes <= 0 {
		return errors.New("txnMaxBytes: must be positive")
	}
	for field, d := range map[string]time.Duration{"txnMaxInterval": c.TxnMaxInterval, "topicSyncInterval": c.TopicSyncInterval, "topicPollInterval": c.TopicPollInterval,
		"groupSyncInterval": c.GroupSyncInterval, "retryBackoff": c.RetryBackoff, "retryBackoffMax": c.RetryBackoffMax,
		"txnTimeout": c.TxnTimeout, "groupSessionTimeout": c.GroupSessionTimeout} {
		if d <= 0 {
			return fmt.Errorf("%s: %v must be positive", field, d)
		}
	}
	if c.TxnTimeout <= c.TxnMaxInterval {
		return fmt.Errorf("txnTimeout: %v must exceed txnMaxInterval (%v): a transaction lasts at least that long", c.TxnTimeout, c.TxnMaxInterval)
	}
	return nil
}

// checkpointTopic is the mirror's internal topic on the target.
func (c *Config) checkpointTopic() string { return "__switchyard_mirror_" + c.Name }

// transactionalID is the target producer's transactional id. Two mirrors
// with the same name fence each other: only one copies at a time — unless
// they scale out, with an id per instance.
func (c *Config) transactionalID() string {
	if c.ScaleOut {
		return "switchyard-mirror-" + c.Name + "-" + c.Instance
	}
	return "switchyard-mirror-" + c.Name
}
