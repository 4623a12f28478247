package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/switchyard/switchyard/internal/kafkatest"
	"github.com/switchyard/switchyard/mirror"
	"github.com/switchyard/switchyard/mirror/topics"
)

// verifyExitCode runs `switchyard verify` and returns the exit code run
// gives its error: 0 for nil and --help, 2 for a usageError, 1 otherwise.
func verifyExitCode(t *testing.T, args []string, env map[string]string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	err := runVerify(ctx, args, envOf(env), &out, &errOut)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		code = 0
	case errors.As(err, new(usageError)):
		code = 2
	default:
		code = 1
	}
	if err != nil {
		fmt.Fprintf(&errOut, "switchyard verify: %v\n", err)
	}
	return code, out.String(), errOut.String()
}

func TestRunVerifyUsageErrors(t *testing.T) {
	ok := []string{"--source", "127.0.0.1:1", "--target", "127.0.0.1:2", "--mirror", "m"}
	tests := []struct {
		name       string
		args       []string
		env        map[string]string
		code       int
		wantStderr []string
	}{
		{name: "help", args: []string{"--help"}, code: 0, wantStderr: []string{"Usage: switchyard verify", "-mirror"}},
		{name: "no flags", code: 2, wantStderr: []string{"--source is required"}},
		{name: "no target", args: []string{"--source", "127.0.0.1:1", "--mirror", "m"}, code: 2, wantStderr: []string{"--target is required"}},
		{name: "empty mirror name", args: []string{"--source", "127.0.0.1:1", "--target", "127.0.0.1:2", "--mirror", ""}, code: 2,
			wantStderr: []string{"--mirror is required"}},
		{name: "bad mirror name", args: []string{"--source", "127.0.0.1:1", "--target", "127.0.0.1:2", "--mirror", "a b"}, code: 2,
			wantStderr: []string{`"a b"`}},
		{name: "address without a port", args: []string{"--source", "kafka", "--target", "127.0.0.1:2", "--mirror", "m"}, code: 2,
			wantStderr: []string{"sourceBootstrap", "kafka"}},
		{name: "bad topics regexp", args: append(ok, "--topics", "orders("), code: 2, wantStderr: []string{"topics", "missing closing )"}},
		{name: "bad timeout", args: append(ok, "--timeout", "soon"), code: 2, wantStderr: []string{"-timeout", "soon"}},
		{name: "zero timeout", args: append(ok, "--timeout", "0s"), code: 2, wantStderr: []string{"partitionTimeout"}},
		{name: "bad timeout in env", args: ok, env: map[string]string{"SWITCHYARD_VERIFY_TIMEOUT": "5"}, code: 2,
			wantStderr: []string{"SWITCHYARD_VERIFY_TIMEOUT"}},
		{name: "mirror from env", args: []string{"--source", "127.0.0.1:1", "--target", "127.0.0.1:2"},
			env: map[string]string{"SWITCHYARD_VERIFY_MIRROR": "a b"}, code: 2, wantStderr: []string{`"a b"`}},
		{name: "unknown flag", args: []string{"--bogus"}, code: 2, wantStderr: []string{"-bogus"}},
		{name: "extra argument", args: append(ok, "now"), code: 2, wantStderr: []string{`unexpected argument "now"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := verifyExitCode(t, tt.args, tt.env)
			if code != tt.code {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, tt.code, stderr)
			}
			for _, w := range tt.wantStderr {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr does not contain %q:\n%s", w, stderr)
				}
			}
		})
	}
}

// TestRunVerifyExitCodes verifies a real mirror's copy on kfake: 0 while it
// is faithful, 1 once a record is written to the target behind the
// mirror's back, 1 for a mirror that does not exist.
func TestRunVerifyExitCodes(t *testing.T) {
	source, target := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "cmdverify")
	source.CreateTopic(t, topic, 2)
	name := kafkatest.Topic(t, "m")
	cfg := mirror.DefaultConfig()
	cfg.Name = name
	cfg.SourceBootstrap, cfg.TargetBootstrap = source.Bootstrap, target.Bootstrap
	cfg.Topics = topics.Policy{Include: []string{topic}}
	cfg.TxnMaxInterval = 50 * time.Millisecond
	cfg.TopicSyncInterval = 200 * time.Millisecond
	mr, err := mirror.New(cfg, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mr.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("mirror run: %v", err)
		}
	}()

	produceTo := func(c *kafkatest.Cluster, recs ...*kgo.Record) {
		t.Helper()
		pctx, pcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer pcancel()
		if err := c.Client(t).ProduceSync(pctx, recs...).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	batch := func(from, n int) []*kgo.Record {
		var rs []*kgo.Record
		for i := from; i < from+n; i++ {
			rs = append(rs, &kgo.Record{Topic: topic, Key: []byte(fmt.Sprint("k", i%7)), Value: []byte(fmt.Sprint("v", i)),
				Headers: []kgo.RecordHeader{{Key: "i", Value: []byte(fmt.Sprint(i))}}})
		}
		return rs
	}
	caughtUp := func() {
		t.Helper()
		wctx, wcancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer wcancel()
		for {
			// Caught up in memory and in the committed checkpoint topic,
			// which verify reads (a broker answers EndTxn before it writes
			// the markers that make the last delta readable).
			ok, _, err := mr.CaughtUp(wctx, topic)
			if ok && err == nil {
				ends := source.SettledEnds(wctx, t, topic)
				maps, merr := mirror.ReadOffsetMaps(wctx, target.Bootstrap, name)
				persisted := merr == nil
				ends.Each(func(o kadm.ListedOffset) {
					if m := maps[mirror.TopicPartition{Topic: topic, Partition: o.Partition}]; m == nil || m.Next() < o.Offset {
						persisted = false
					}
				})
				if persisted {
					return
				}
			}
			select {
			case <-wctx.Done():
				t.Fatalf("mirror not caught up within 60s: %v %+v", err, mr.Status())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	produceTo(source, batch(0, 300)...)
	caughtUp()

	args := []string{"--source", strings.Join(source.Bootstrap, ","), "--target", strings.Join(target.Bootstrap, ","),
		"--mirror", name, "--timeout", "30s"}
	code, stdout, stderr := verifyExitCode(t, args, nil)
	if code != 0 {
		t.Fatalf("verify of a faithful copy: exit code %d\n%s%s", code, stdout, stderr)
	}
	for _, w := range []string{"TOPIC", "SOURCE RANGE", topic, "equal", "ok", "mirror " + name + ": OK: 2 partitions: 2 match"} {
		if !strings.Contains(stdout, w) {
			t.Errorf("stdout does not contain %q:\n%s", w, stdout)
		}
	}
	t.Logf("a faithful copy:\n%s", stdout)

	// A record written straight to the target, then more copied after it.
	intruder := &kgo.Record{Topic: topic, Partition: 1, Value: []byte("not from the source")}
	produceTo(target, intruder)
	produceTo(source, batch(300, 100)...)
	caughtUp()
	code, stdout, stderr = verifyExitCode(t, append(args, "--topics", "cmdverify-.*"), nil)
	if code != 1 {
		t.Fatalf("verify with a record written to the target: exit code %d\n%s%s", code, stdout, stderr)
	}
	for _, w := range []string{"MISMATCH (1)", fmt.Sprintf("target %d: the target holds a record that is not a copy", intruder.Offset),
		"1 match, 0 match after cleanup, 1 mismatch", "FAILED"} {
		if !strings.Contains(stdout, w) {
			t.Errorf("stdout does not contain %q:\n%s", w, stdout)
		}
	}
	if !strings.Contains(stderr, "1 of 2 partitions do not match") {
		t.Errorf("stderr: %s", stderr)
	}
	t.Logf("with a record written to the target:\n%s", stdout)

	code, _, stderr = verifyExitCode(t, []string{"--source", args[1], "--target", args[3], "--mirror", "no-such-mirror", "--timeout", "10s"}, nil)
	if code != 1 || !strings.Contains(stderr, "not found") {
		t.Errorf("verify of a mirror that does not exist: exit code %d, stderr %s", code, stderr)
	}
}
