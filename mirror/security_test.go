package mirror

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/kafkatest"
	"github.com/switchyard/switchyard/kafkasec"
	"github.com/switchyard/switchyard/mirror/topics"
)

// TestMirrorToSASLSSLTarget mirrors from a PLAINTEXT cluster to a SASL_SSL
// one (self-managed Kafka to MSK with SCRAM): records, their order and the
// offset map are exact, and the persisted map is readable with the
// target's security.
func TestMirrorToSASLSSLTarget(t *testing.T) {
	source, target := kafkatest.PlainToSecure(t, kafkasec.MechScramSHA512)
	topic := kafkatest.Topic(t, "mirror-secure")
	source.CreateTopic(t, topic, 3)
	produceRecords(t, source, topic, 0, 1000)
	rm := startMirror(t, kafkatest.Topic(t, "m"), source, target, []string{topic})
	rm.waitCaughtUp(t, source, topic)
	compareCopies(t, rm, readAll(t, source, topic), readAll(t, target, topic), topic)

	sec, err := kafkasec.New(context.Background(), "target", target.Security)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	persisted, err := ReadOffsetMaps(ctx, target.Bootstrap, rm.cfg.Name, sec.KgoOpts(0)...)
	if err != nil {
		t.Fatalf("read offset maps: %v", err)
	}
	if m := persisted[TopicPartition{topic, 0}]; m == nil || m.Next() != rm.OffsetMap(topic, 0).Next() {
		t.Errorf("persisted map of partition 0: %+v", m)
	}
}

// TestMirrorConfigValidatesSecurity: security errors name the side.
func TestMirrorConfigValidatesSecurity(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Name = "m"
	cfg.SourceBootstrap, cfg.TargetBootstrap = []string{"a:9092"}, []string{"b:9092"}
	cfg.Topics = topics.Policy{Include: []string{"x"}}
	cfg.Target.SASL = kafkasec.SASL{Mechanism: "AWS_MSK_IAM"}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "target.sasl.mechanism: AWS_MSK_IAM requires tls.enabled") {
		t.Errorf("err = %v", err)
	}
	cfg.Target = kafkasec.Config{}
	cfg.Source.SASL = kafkasec.SASL{Mechanism: "PLAIN", Username: "u", Password: "p"}
	if err := cfg.Validate(); err != nil {
		t.Errorf("valid source security: %v", err)
	}
}
