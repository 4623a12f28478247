package proxy

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/switchyard/switchyard/internal/kafkatest"
	"github.com/switchyard/switchyard/internal/tlsfiles"
	"github.com/switchyard/switchyard/internal/tlsfiles/tlstest"
	"github.com/switchyard/switchyard/kafkasec"
)

// secureProxy starts a proxy whose clusters carry the given clusters'
// security settings.
func secureProxy(t *testing.T, source, target *kafkatest.Cluster, mutate ...func(*Config)) *testProxy {
	t.Helper()
	return startProxy(t, source, target, append([]func(*Config){func(c *Config) {
		c.Clusters[0].Config = source.Security
		if target != nil {
			c.Clusters[1].Config = target.Security
		}
	}}, mutate...)...)
}

// produceSeq produces records seq from..to-1 (keyed) and fails on error.
func produceSeq(ctx context.Context, t *testing.T, cl *kgo.Client, topic string, from, to int) {
	t.Helper()
	var rs []*kgo.Record
	for i := from; i < to; i++ {
		rs = append(rs, &kgo.Record{Topic: topic, Key: []byte(fmt.Sprintf("k-%d", i%8)), Value: []byte(fmt.Sprint(i))})
	}
	if err := cl.ProduceSync(ctx, rs...).FirstErr(); err != nil {
		t.Fatalf("produce %d..%d: %v", from, to, err)
	}
}

// TestProxyToSASLSSLCluster: a plaintext client on loopback reaches a
// SASL_SSL cluster through the proxy, which does TLS and SASL for it,
// with every mechanism.
func TestProxyToSASLSSLCluster(t *testing.T) {
	for _, mech := range []string{kafkasec.MechPlain, kafkasec.MechScramSHA256, kafkasec.MechScramSHA512} {
		t.Run(mech, func(t *testing.T) {
			target := kafkatest.Secure(t, "target", kafkatest.SecureOptions{Mechanism: mech})
			topic := kafkatest.Topic(t, "secure")
			target.CreateTopic(t, topic, 3)
			tp := secureProxy(t, target, nil)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			produceSeq(ctx, t, tp.client(t), topic, 0, 300)
			got := consumeN(ctx, t, tp.client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())), 300)
			checkRecords(t, got, 0, 300)
			// And the records are really on the secure cluster.
			direct := consumeN(ctx, t, target.Client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())), 300)
			checkRecords(t, direct, 0, 300)
		})
	}
}

// TestProxyUpstreamAuthFailure: wrong credentials for the upstream fail
// the client's connections with an error naming the cluster and the
// cause in the proxy's log and status — and never the password.
func TestProxyUpstreamAuthFailure(t *testing.T) {
	target := kafkatest.Secure(t, "target", kafkatest.SecureOptions{Mechanism: kafkasec.MechScramSHA512})
	wrong := filepath.Join(t.TempDir(), "wrong")
	if err := os.WriteFile(wrong, []byte("wrong-password-xyz\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.BrokerPortBase = -1
	cfg.Clusters = []ClusterConfig{{Name: "msk", Bootstrap: target.Bootstrap, Config: target.Security}}
	cfg.Clusters[0].SASL.PasswordFile = wrong
	cfg.DialTimeout = 3 * time.Second
	core, logs := observer.New(zapcore.DebugLevel)
	p, err := New(cfg, zap.New(core), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() { cancel(); <-done }()

	eventually(t, 20*time.Second, "status names the failure", func() error {
		for _, c := range p.Status().Clusters {
			if c.Name == "msk" && strings.Contains(c.LastError, "SASL") {
				return nil
			}
		}
		return fmt.Errorf("status: %+v", p.Status().Clusters)
	})
	for _, c := range p.Status().Clusters {
		if !strings.Contains(c.LastError, "msk") {
			t.Errorf("status error %q does not name the cluster", c.LastError)
		}
	}
	cancel()
	<-done
	done <- nil
	for _, e := range logs.All() {
		line := e.Message + " " + fmt.Sprint(e.ContextMap())
		if strings.Contains(line, "wrong-password-xyz") || strings.Contains(line, "alice-secret") {
			t.Errorf("log line contains a password: %s", line)
		}
	}
}

// TestSwitchPlaintextToSASLSSL: a live idempotent producer moves from a
// PLAINTEXT cluster to a SASL_SSL one without changing anything; every
// acknowledged record is on one of the two, once, in order.
func TestSwitchPlaintextToSASLSSL(t *testing.T) {
	source, target := kafkatest.PlainToSecure(t, kafkasec.MechScramSHA512)
	topic := kafkatest.Topic(t, "tosecure")
	source.CreateTopic(t, topic, 3)
	target.CreateTopic(t, topic, 3)
	tp := secureProxy(t, source, target)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	producer := tp.client(t)
	var (
		acked   atomic.Int64
		prodErr error
		stop    = make(chan struct{})
		wg      sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			r := &kgo.Record{Topic: topic, Key: []byte(fmt.Sprintf("k-%d", i%8)), Value: []byte(fmt.Sprint(i))}
			if err := producer.ProduceSync(ctx, r).FirstErr(); err != nil {
				prodErr = err
				return
			}
			acked.Add(1)
		}
	}()
	waitAcked := func(n int64) {
		eventually(t, 40*time.Second, fmt.Sprintf("%d records acked", n), func() error {
			if a := acked.Load(); a < n {
				return fmt.Errorf("%d acked", a)
			}
			return nil
		})
	}
	waitAcked(200)
	if err := tp.SetGate(Gate{APIKeys: []int16{0}, Mode: GateHold}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "produce drained", func() error {
		if n := tp.Status().InFlightByAPI[0]; n != 0 {
			return fmt.Errorf("%d in flight", n)
		}
		return nil
	})
	if _, err := tp.Switch(ctx, "target"); err != nil {
		t.Fatalf("switch: %v", err)
	}
	tp.ClearGate()
	before := acked.Load()
	waitAcked(before + 200)
	close(stop)
	wg.Wait()
	if prodErr != nil {
		t.Fatalf("producer error: %v", prodErr)
	}
	total := int(acked.Load())
	onSource := consumeAll(ctx, t, source, topic)
	onTarget := consumeAll(ctx, t, target, topic)
	if len(onSource)+len(onTarget) != total {
		t.Errorf("source %d + target %d records, %d acked", len(onSource), len(onTarget), total)
	}
	checkRecords(t, append(onSource, onTarget...), 0, total)
	maxSource := -1
	for _, s := range onSource {
		maxSource = max(maxSource, s.seq)
	}
	for _, s := range onTarget {
		if s.seq <= maxSource {
			t.Errorf("target record %d precedes the source's last %d: the switch reordered", s.seq, maxSource)
		}
	}
	if len(onTarget) < 200 {
		t.Errorf("only %d records reached the SASL_SSL cluster", len(onTarget))
	}
}

// consumeAll reads a topic from the start to its current end, directly.
func consumeAll(ctx context.Context, t *testing.T, c *kafkatest.Cluster, topic string) []seen {
	t.Helper()
	var n int64
	c.SettledEnds(ctx, t, topic).Each(func(o kadm.ListedOffset) { n += o.Offset })
	if n == 0 {
		return nil
	}
	return consumeN(ctx, t, c.Client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())), int(n))
}

// TestUpstreamReauthentication: when the broker limits SASL sessions
// (KIP-368), the proxy renews them in place on long-lived connections; a
// client producing and consuming across several renewals sees no error
// and no lost record.
func TestUpstreamReauthentication(t *testing.T) {
	o := kafkatest.SecureOptions{Mechanism: kafkasec.MechScramSHA256, ReauthMs: 1500}
	target := kafkatest.Secure(t, "target", o)
	if kafkatest.ReauthInterval(o) == 0 {
		t.Skip("the test bed's SASL sessions do not expire")
	}
	topic := kafkatest.Topic(t, "reauth")
	target.CreateTopic(t, topic, 1)
	tp := secureProxy(t, target, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cl := tp.client(t)
	renewals := func() float64 { return testutil.ToFloat64(tp.m.reauths) }
	seq := 0
	// Produce ten records every 20 ms (pacing, not synchronization) over
	// more than two session lifetimes: without renewals the broker closes
	// the connections (KIP-368) and the proxy with them.
	life := kafkatest.ReauthInterval(o)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for start := time.Now(); time.Since(start) < 2*life+life/2; {
		select {
		case <-ctx.Done():
			t.Fatalf("deadline after %d records", seq)
		case <-tick.C:
		}
		produceSeq(ctx, t, cl, topic, seq, seq+10)
		seq += 10
	}
	for _, reason := range []string{"upstream_closed", "upstream_reauth", "upstream_write"} {
		if n := testutil.ToFloat64(tp.m.connClosed.WithLabelValues(reason)); n != 0 {
			t.Errorf("%v connections closed: %s", n, reason)
		}
	}
	if renewals() < 2 {
		t.Errorf("%v renewals over 2.5 session lifetimes, want ≥ 2", renewals())
	}
	got := consumeN(ctx, t, tp.client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())), seq)
	checkRecords(t, got, 0, seq)
	t.Logf("%d records over %v renewals", seq, renewals())
}

// usersFile writes a clientAuth users file.
func usersFile(t *testing.T, users map[string]string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("users:\n")
	for u, p := range users {
		fmt.Fprintf(&b, "  %s: %q\n", u, p)
	}
	path := filepath.Join(t.TempDir(), "users.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestClientSASLTerminate: clients authenticate to the proxy with local
// credentials (every mechanism), the proxy to the cluster with its own;
// wrong passwords and unauthenticated requests are refused.
func TestClientSASLTerminate(t *testing.T) {
	target := kafkatest.Secure(t, "target", kafkatest.SecureOptions{Mechanism: kafkasec.MechPlain})
	topic := kafkatest.Topic(t, "terminate")
	target.CreateTopic(t, topic, 2)
	users := usersFile(t, map[string]string{"app": "local-pw-1"})
	tp := secureProxy(t, target, nil, func(c *Config) {
		c.ClientAuth.Mode, c.ClientAuth.UsersFile = ClientAuthTerminate, users
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	seq := 0
	for _, m := range []kgo.Opt{
		kgo.SASL(plain.Auth{User: "app", Pass: "local-pw-1"}.AsMechanism()),
		kgo.SASL(scram.Auth{User: "app", Pass: "local-pw-1"}.AsSha256Mechanism()),
		kgo.SASL(scram.Auth{User: "app", Pass: "local-pw-1"}.AsSha512Mechanism()),
	} {
		produceSeq(ctx, t, tp.client(t, m), topic, seq, seq+50)
		seq += 50
	}
	got := consumeN(ctx, t, tp.client(t, kgo.SASL(plain.Auth{User: "app", Pass: "local-pw-1"}.AsMechanism()),
		kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())), seq)
	checkRecords(t, got, 0, seq)

	for name, opt := range map[string]kgo.Opt{
		"wrong-password": kgo.SASL(scram.Auth{User: "app", Pass: "nope"}.AsSha512Mechanism()),
		"unknown-user":   kgo.SASL(plain.Auth{User: "eve", Pass: "local-pw-1"}.AsMechanism()),
	} {
		t.Run(name, func(t *testing.T) {
			cl := tp.client(t, opt, kgo.RequestRetries(0), kgo.RetryTimeout(time.Second))
			err := cl.Ping(ctx)
			if !errors.Is(err, kerr.SaslAuthenticationFailed) {
				t.Fatalf("ping: %v, want SASL_AUTHENTICATION_FAILED", err)
			}
		})
	}
	t.Run("no-sasl", func(t *testing.T) {
		before := testutil.ToFloat64(tp.m.connClosed.WithLabelValues("unauthenticated"))
		cl := tp.client(t, kgo.RequestRetries(0), kgo.RetryTimeout(time.Second))
		if err := cl.Ping(ctx); err == nil {
			t.Fatal("a client without SASL was served")
		}
		// Counted once the proxy's side of the connection has ended, which
		// may be just after the client saw it close.
		eventually(t, 10*time.Second, "the unauthenticated connection counted", func() error {
			if after := testutil.ToFloat64(tp.m.connClosed.WithLabelValues("unauthenticated")); after <= before {
				return errNotYet
			}
			return nil
		})
	})
	if n := testutil.ToFloat64(tp.m.clientAuthFails); n < 2 {
		t.Errorf("client_authentication_failures_total = %v, want ≥ 2", n)
	}
}

// TestClientSASLNoneRefusesClientHandshake: with upstream SASL and client
// mode none, a client trying SASL is told no mechanism is enabled.
func TestClientSASLNoneRefusesClientHandshake(t *testing.T) {
	target := kafkatest.Secure(t, "target", kafkatest.SecureOptions{Mechanism: kafkasec.MechPlain})
	tp := secureProxy(t, target, nil)
	if tp.cfg.ClientAuth.Mode != ClientAuthNone {
		t.Fatalf("default mode with upstream SASL = %q, want none", tp.cfg.ClientAuth.Mode)
	}
	cl := tp.client(t, kgo.SASL(plain.Auth{User: "app", Pass: "x"}.AsMechanism()), kgo.RequestRetries(0))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := cl.Ping(ctx); !errors.Is(err, kerr.UnsupportedSaslMechanism) {
		t.Fatalf("ping: %v, want UNSUPPORTED_SASL_MECHANISM", err)
	}
}

// TestClientSASLPassthroughAcrossSwitch: a client authenticating with its
// own credentials (valid on both clusters) keeps working across a switch:
// its connections are closed at the first request after the switch and it
// authenticates again, on the new cluster.
func TestClientSASLPassthroughAcrossSwitch(t *testing.T) {
	o := kafkatest.SecureOptions{Mechanism: kafkasec.MechScramSHA256}
	source, target := kafkatest.Secure(t, "source", o), kafkatest.Secure(t, "target", o)
	pw, err := os.ReadFile(source.Security.SASL.PasswordFile)
	if err != nil {
		t.Fatal(err)
	}
	// The client's own credentials, valid on both clusters.
	auth := kgo.SASL(scram.Auth{User: source.Security.SASL.Username, Pass: strings.TrimSpace(string(pw))}.AsSha256Mechanism())
	topic := kafkatest.Topic(t, "passthrough")
	source.CreateTopic(t, topic, 2)
	target.CreateTopic(t, topic, 2)
	// The proxy's own requests (metadata) use its credentials; the
	// client's connections are left to the client to authenticate.
	tp := secureProxy(t, source, target, func(c *Config) { c.ClientAuth.Mode = ClientAuthPassthrough })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := tp.client(t, auth)
	produceSeq(ctx, t, cl, topic, 0, 100)
	if _, err := tp.Switch(ctx, "target"); err != nil {
		t.Fatal(err)
	}
	produceSeq(ctx, t, cl, topic, 100, 200)
	if n := testutil.ToFloat64(tp.m.connClosed.WithLabelValues("sasl_passthrough_switch")); n == 0 {
		t.Error("no connection was closed for re-authentication")
	}
	onTarget := consumeN(ctx, t, target.Client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())), 100)
	checkRecords(t, onTarget, 100, 200)
}

// TestClientTLSListener: clients reach the proxy over TLS (with a client
// certificate when a CA is configured); a client without TLS is refused.
func TestClientTLSListener(t *testing.T) {
	source, _ := kafkatest.Pair(t)
	topic := kafkatest.Topic(t, "clienttls")
	source.CreateTopic(t, topic, 1)
	ca := tlstest.NewCA(t, "clients")
	dir := t.TempDir()
	srv := tlstest.Write(t, dir, ca, ca.Localhost(t))
	tp := startProxy(t, source, nil, func(c *Config) {
		c.ClientAuth.TLS = tlsfiles.Files{CertFile: srv.Cert, KeyFile: srv.Key, CAFile: srv.CA}
	})
	clientCert := tlstest.Write(t, t.TempDir(), ca, ca.Issue(t, tlstest.Leaf{CommonName: "app", Client: true}))
	cfg, err := tlsfiles.ClientConfig(tlsfiles.Files{CAFile: srv.CA, CertFile: clientCert.Cert, KeyFile: clientCert.Key, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := tp.client(t, kgo.DialTLSConfig(cfg))
	produceSeq(ctx, t, cl, topic, 0, 20)
	got := consumeN(ctx, t, tp.client(t, kgo.DialTLSConfig(cfg), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())), 20)
	checkRecords(t, got, 0, 20)

	noCert, _ := tlsfiles.ClientConfig(tlsfiles.Files{CAFile: srv.CA, ServerName: "127.0.0.1"})
	for name, opt := range map[string]kgo.Opt{
		"plaintext":      kgo.DialTimeout(2 * time.Second),
		"no-client-cert": kgo.DialTLSConfig(noCert),
		"untrusted-cert": kgo.DialTLSConfig(&tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{selfSigned(t)}}),
	} {
		t.Run(name, func(t *testing.T) {
			pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
			defer pcancel()
			if err := tp.client(t, opt, kgo.RequestRetries(0)).Ping(pctx); err == nil {
				t.Fatal("served")
			}
		})
	}
}

func selfSigned(t *testing.T) tls.Certificate {
	other := tlstest.NewCA(t, "other")
	is := other.Issue(t, tlstest.Leaf{CommonName: "mallory", Client: true})
	c, err := tls.X509KeyPair(is.CertPEM, is.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestClientAuthValidate(t *testing.T) {
	users := usersFile(t, map[string]string{"app": "pw"})
	saslCluster := []ClusterConfig{{Name: "msk", Config: kafkasec.Config{SASL: kafkasec.SASL{Mechanism: "PLAIN"}}}}
	plainCluster := []ClusterConfig{{Name: "a"}}
	terminate := func(mutate func(*ClientAuth)) ClientAuth {
		ca := DefaultConfig().ClientAuth
		ca.Mode, ca.UsersFile = ClientAuthTerminate, users
		mutate(&ca)
		return ca
	}
	for _, tc := range []struct {
		ca       ClientAuth
		clusters []ClusterConfig
		want     string
	}{
		{ClientAuth{}, plainCluster, ""},
		{ClientAuth{}, saslCluster, ""},
		{ClientAuth{Mode: "passthrough"}, saslCluster, ""},
		{ClientAuth{Mode: "terminate"}, plainCluster, "clientAuth.usersFile: required"},
		{ClientAuth{Mode: "terminate", UsersFile: users, Mechanisms: []string{"GSSAPI"}}, plainCluster, "clientAuth.mechanisms[0]"},
		{ClientAuth{Mode: "terminate", UsersFile: users + ".missing"}, plainCluster, "clientAuth.usersFile: open"},
		{ClientAuth{Mode: "bogus"}, plainCluster, "clientAuth.mode: \"bogus\""},
		{ClientAuth{UsersFile: users}, plainCluster, "apply to mode terminate only"},
		{ClientAuth{TLS: tlsfiles.Files{CAFile: users}}, plainCluster, "clientAuth.tls: certFile and keyFile"},
		{terminate(func(*ClientAuth) {}), plainCluster, ""},
		{terminate(func(ca *ClientAuth) { ca.MaxFailedAuths, ca.FailedAuthWindow, ca.FailedAuthDelay = 0, 0, 0 }), plainCluster, ""},
		{terminate(func(ca *ClientAuth) { ca.MaxPreAuthFrameBytes = 100 }), plainCluster, "clientAuth.maxPreAuthFrameBytes: 100 is below"},
		{terminate(func(ca *ClientAuth) { ca.FailedAuthDelay = -time.Second }), plainCluster, "clientAuth.failedAuthDelay: -1s"},
		{terminate(func(ca *ClientAuth) { ca.MaxFailedAuths = -1 }), plainCluster, "clientAuth.maxFailedAuths: -1"},
		{terminate(func(ca *ClientAuth) { ca.FailedAuthWindow = 0 }), plainCluster, "clientAuth.failedAuthWindow: 0s must be positive"},
	} {
		ca := tc.ca
		err := ca.validate(tc.clusters)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v", tc.ca, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%+v: err = %v, want %q", tc.ca, err, tc.want)
		}
	}
}

// unsecuredJWT is a token Kafka's default OAUTHBEARER validator accepts
// (alg "none"; the test bed enables it on its SASL_SSL listener).
func unsecuredJWT(sub string, exp time.Time) string {
	enc := base64.RawURLEncoding.EncodeToString
	now := time.Now().Unix()
	return enc([]byte(`{"alg":"none"}`)) + "." +
		enc([]byte(fmt.Sprintf(`{"sub":%q,"iat":%d,"exp":%d}`, sub, now, exp.Unix()))) + "."
}

// TestProxyOAuthBearer: the proxy authenticates with OAUTHBEARER, the
// token from a file or from a command; a failing command is a clear error
// naming the cluster.
func TestProxyOAuthBearer(t *testing.T) {
	if kafkatest.Backend() != kafkatest.BackendReal || !strings.Contains(kafkatest.Env("SWITCHYARD_TEST_SASL_MECHANISMS"), "OAUTHBEARER") {
		t.Skip("OAUTHBEARER needs the real test bed's SASL_SSL listener (kfake has no OAUTHBEARER)")
	}
	target := kafkatest.Secure(t, "target", kafkatest.SecureOptions{Mechanism: kafkasec.MechPlain})
	topic := kafkatest.Topic(t, "oauth")
	target.CreateTopic(t, topic, 1)
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(unsecuredJWT("alice", time.Now().Add(time.Hour))+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, sasl := range map[string]kafkasec.SASL{
		"tokenFile":    {Mechanism: kafkasec.MechOAuthBearer, TokenFile: tokenFile},
		"tokenCommand": {Mechanism: kafkasec.MechOAuthBearer, TokenCommand: []string{"cat", tokenFile}},
	} {
		t.Run(name, func(t *testing.T) {
			tp := startProxy(t, target, nil, func(c *Config) {
				c.Clusters[0].Config = kafkasec.Config{TLS: target.Security.TLS, SASL: sasl}
			})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			produceSeq(ctx, t, tp.client(t), topic, 0, 20)
		})
	}
	t.Run("expired-token", func(t *testing.T) {
		expired := filepath.Join(dir, "expired")
		if err := os.WriteFile(expired, []byte(unsecuredJWT("alice", time.Now().Add(-time.Hour))), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := DefaultConfig()
		cfg.Listen = "127.0.0.1:0"
		cfg.BrokerPortBase = -1
		cfg.DialTimeout = 5 * time.Second
		cfg.Clusters = []ClusterConfig{{Name: "stale", Bootstrap: target.Bootstrap, Config: kafkasec.Config{TLS: target.Security.TLS,
			SASL: kafkasec.SASL{Mechanism: kafkasec.MechOAuthBearer, TokenFile: expired}}}}
		p := runProxy(t, cfg, prometheus.NewRegistry(), zap.ErrorLevel)
		eventually(t, 30*time.Second, "the status names the refused token", func() error {
			c := p.Status().Clusters[0]
			if strings.Contains(c.LastError, "stale") && strings.Contains(c.LastError, "SASL OAUTHBEARER") {
				return nil
			}
			return fmt.Errorf("last error %q", c.LastError)
		})
	})
	t.Run("failing-command", func(t *testing.T) {
		cfg := DefaultConfig()
		cfg.Listen = "127.0.0.1:0"
		cfg.BrokerPortBase = -1
		cfg.DialTimeout = 5 * time.Second
		cfg.Clusters = []ClusterConfig{{Name: "idp-down", Bootstrap: target.Bootstrap, Config: kafkasec.Config{TLS: target.Security.TLS,
			SASL: kafkasec.SASL{Mechanism: kafkasec.MechOAuthBearer, TokenCommand: []string{"sh", "-c", "echo 'token endpoint unreachable' >&2; exit 7"}}}}}
		p := runProxy(t, cfg, prometheus.NewRegistry(), zap.ErrorLevel)
		eventually(t, 30*time.Second, "the status names the failing command", func() error {
			c := p.Status().Clusters[0]
			if strings.Contains(c.LastError, "idp-down") && strings.Contains(c.LastError, "token endpoint unreachable") {
				return nil
			}
			return fmt.Errorf("last error %q", c.LastError)
		})
	})
}

// TestUpstreamTLSFilesReloaded: the cluster's certificate is re-issued by
// a new CA and the proxy's CA file replaced; new connections through the
// running proxy verify against the new CA, without a restart.
func TestUpstreamTLSFilesReloaded(t *testing.T) {
	if kafkatest.Backend() != kafkatest.BackendKfake {
		t.Skip("re-issues the broker's certificate: kfake only")
	}
	brokerDir, proxyDir := t.TempDir(), t.TempDir()
	ca1, ca2 := tlstest.NewCA(t, "ca-1"), tlstest.NewCA(t, "ca-2")
	served := tlstest.Write(t, brokerDir, ca1, ca1.Localhost(t))
	srv, err := tlsfiles.ServerConfig(tlsfiles.Files{CertFile: served.Cert, KeyFile: served.Key}, false)
	if err != nil {
		t.Fatal(err)
	}
	target := kafkatest.NewFake(t, "target", 1, kfake.TLS(srv))
	caFile := filepath.Join(proxyDir, "ca.pem")
	tlstest.Replace(t, caFile, ca1.PEM)
	target.Security = kafkasec.Config{TLS: kafkasec.TLS{Enabled: true, CAFile: caFile}}
	topic := kafkatest.Topic(t, "rotate")
	target.CreateTopic(t, topic, 1)
	tp := secureProxy(t, target, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	produceSeq(ctx, t, tp.client(t), topic, 0, 10)

	// Rotate: the broker serves a certificate from CA 2, the proxy trusts CA 2.
	leaf2 := ca2.Localhost(t)
	tlstest.Replace(t, served.Cert, leaf2.CertPEM)
	tlstest.Replace(t, served.Key, leaf2.KeyPEM)
	tlstest.Replace(t, caFile, ca2.PEM)
	produceSeq(ctx, t, tp.client(t), topic, 10, 20)
	got := consumeN(ctx, t, tp.client(t, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())), 20)
	checkRecords(t, got, 0, 20)
}
