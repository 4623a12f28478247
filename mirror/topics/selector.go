package topics

import (
	"fmt"
	"regexp"
	"strings"
)

// Policy selects and names the topics to mirror. The zero value mirrors
// every topic that is not internal, under its own name.
type Policy struct {
	// Include lists regular expressions (RE2) a source topic name must
	// match, as a whole, to be mirrored; empty means every topic.
	Include []string `yaml:"include"`
	// Exclude lists regular expressions (whole-name) of topics never to
	// mirror; Exclude wins over Include and IncludeInternal.
	Exclude []string `yaml:"exclude"`
	// IncludeInternal opts in, by exact name, topics that Internal
	// excludes by default — for example "_schemas" (Schema Registry) or
	// "connect-configs". An opted-in topic needs no Include match. A name
	// here that is not internal is a configuration error (likely a typo).
	IncludeInternal []string `yaml:"includeInternal"`
	// Prefix is prepended to source names to form target names; "" keeps
	// names (identity). For active-active layouts, also Exclude the other
	// direction's prefix, so mirrored topics are not mirrored back.
	Prefix string `yaml:"prefix"`
}

// Selector is a compiled Policy. It is immutable and safe for concurrent
// use.
type Selector struct {
	include []*regexp.Regexp
	exclude []*regexp.Regexp
	optIn   map[string]bool
	prefix  string
}

// maxTopicLen is Kafka's limit on topic names.
const maxTopicLen = 249

var topicNamePattern = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)

// Compile checks the policy and compiles its patterns. Errors name the
// field and the offending pattern or name.
func (p Policy) Compile() (*Selector, error) {
	s := &Selector{prefix: p.Prefix, optIn: make(map[string]bool, len(p.IncludeInternal))}
	var err error
	if s.include, err = compileAll("include", p.Include); err != nil {
		return nil, err
	}
	if s.exclude, err = compileAll("exclude", p.Exclude); err != nil {
		return nil, err
	}
	for _, name := range p.IncludeInternal {
		if !Internal(name) {
			return nil, fmt.Errorf("includeInternal: %q is not an internal topic (select ordinary topics with include)", name)
		}
		s.optIn[name] = true
	}
	if p.Prefix != "" {
		if !topicNamePattern.MatchString(p.Prefix) || len(p.Prefix) >= maxTopicLen {
			return nil, fmt.Errorf("prefix: %q: want fewer than %d characters of [A-Za-z0-9._-]", p.Prefix, maxTopicLen)
		}
		if strings.HasPrefix(p.Prefix, "__") {
			return nil, fmt.Errorf("prefix: %q: names starting with __ are internal and never mirrored", p.Prefix)
		}
	}
	return s, nil
}

func compileAll(field string, patterns []string) ([]*regexp.Regexp, error) {
	out := make([]*regexp.Regexp, 0, len(patterns))
	for _, p := range patterns {
		re, err := regexp.Compile(`^(?:` + p + `)$`)
		if err != nil {
			return nil, fmt.Errorf("%s: pattern %q: %w", field, p, err)
		}
		out = append(out, re)
	}
	return out, nil
}

// Selects reports whether the source topic is mirrored: not excluded, and
// either opted in by exact name or not internal and matching Include.
func (s *Selector) Selects(topic string) bool {
	if matchAny(s.exclude, topic) {
		return false
	}
	if s.optIn[topic] {
		return true
	}
	if Internal(topic) {
		return false
	}
	return len(s.include) == 0 || matchAny(s.include, topic)
}

// TargetName returns the target topic name for a source topic.
func (s *Selector) TargetName(source string) string { return s.prefix + source }

func matchAny(res []*regexp.Regexp, topic string) bool {
	for _, re := range res {
		if re.MatchString(topic) {
			return true
		}
	}
	return false
}

// Exact names and affixes of topics that are internal to Kafka, its
// ecosystem or vendors. They hold state that belongs to one cluster's
// services, so they are not mirrored unless opted in by exact name.
var (
	internalNames = map[string]bool{
		"_schemas":        true, // Schema Registry (kafkastore.topic default)
		"connect-configs": true, // Kafka Connect distributed worker defaults
		"connect-offsets": true, // (config/offset/status.storage.topic)
		"connect-status":  true,
	}
	internalPrefixes = []string{
		"__",         // Kafka's own (__consumer_offsets, __transaction_state, ...), MSK's, and this mirror's (__switchyard*)
		"_confluent", // Confluent Platform (_confluent-metrics, _confluent-command, _confluent-ksql-*, ...)
		"_redpanda",  // Redpanda (_redpanda.audit_log, _redpanda_e2e_probe, ...)
	}
	internalSuffixes = []string{
		".internal", // MirrorMaker 2 (mm2-offset-syncs.*.internal, *.checkpoints.internal, mm2-configs.*.internal, ...)
	}
)

// Internal reports whether a topic is internal and therefore excluded by
// default: names starting with "__" (Kafka's own, the mirror's
// "__switchyard*"), "_confluent" or "_redpanda"; Schema Registry's
// "_schemas"; Kafka Connect's default "connect-configs", "connect-offsets"
// and "connect-status"; and MirrorMaker 2's "*.internal" topics.
// MirrorMaker 2's "heartbeats" is not in the list, because applications
// use that name too; Exclude it if it is MM2's.
func Internal(topic string) bool {
	if internalNames[topic] {
		return true
	}
	for _, p := range internalPrefixes {
		if strings.HasPrefix(topic, p) {
			return true
		}
	}
	for _, s := range internalSuffixes {
		if strings.HasSuffix(topic, s) {
			return true
		}
	}
	return false
}
