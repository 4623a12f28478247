package verify

import (
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/switchyard/switchyard/mirror"

	"github.com/switchyard/switchyard/kafkasec"
)

// Config configures a verification. Start from DefaultConfig.
type Config struct {
	// SourceBootstrap and TargetBootstrap list host:port seed brokers.
	SourceBootstrap []string
	TargetBootstrap []string
	// Source and Target say how to connect (TLS, SASL); zero: PLAINTEXT.
	Source, Target kafkasec.Config
	// Mirror is the name of the mirror whose offset maps (on the target)
	// say what was copied where.
	Mirror string
	// Topics, if not empty, is a regular expression (RE2) that a source
	// topic name must match as a whole to be verified.
	Topics string
	// TargetPrefix is the prefix the mirror put before source topic names
	// on the target (its topics.Policy.Prefix); "" for identical names.
	TargetPrefix string
	// PartitionTimeout bounds the verification of one partition (both
	// reads and the comparison).
	PartitionTimeout time.Duration
	// Parallel is how many partitions are verified at once.
	Parallel int
}

// DefaultConfig returns the defaults: 5 minutes per partition, 4
// partitions at once.
func DefaultConfig() Config {
	return Config{PartitionTimeout: 5 * time.Minute, Parallel: 4}
}

// Validate reports the first configuration error, naming the field.
func (c *Config) Validate() error {
	// The mirror's own rules for names and addresses.
	mc := mirror.DefaultConfig()
	mc.Name, mc.SourceBootstrap, mc.TargetBootstrap = c.Mirror, c.SourceBootstrap, c.TargetBootstrap
	mc.Topics.Prefix = c.TargetPrefix
	mc.Source, mc.Target = c.Source, c.Target
	if err := mc.Validate(); err != nil {
		if c.Mirror == "" {
			return errors.New("mirror: the mirror's name is required")
		}
		return err
	}
	if _, err := c.topicFilter(); err != nil {
		return fmt.Errorf("topics: %w", err)
	}
	if c.PartitionTimeout <= 0 {
		return fmt.Errorf("partitionTimeout: %v must be positive", c.PartitionTimeout)
	}
	if c.Parallel <= 0 {
		return fmt.Errorf("parallel: %d must be positive", c.Parallel)
	}
	return nil
}

// topicFilter compiles Topics; nil matches every topic.
func (c *Config) topicFilter() (*regexp.Regexp, error) {
	if c.Topics == "" {
		return nil, nil
	}
	return regexp.Compile("^(?:" + c.Topics + ")$")
}
