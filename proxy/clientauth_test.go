package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap/zaptest"

	"github.com/switchyard/switchyard/internal/kafkatest"
)

// authProxy returns a proxy that terminates client SASL for one user,
// app / app-pw, with the default settings changed by mutate. Its
// connections are served over net.Pipe (pipeConn), so that tests run in a
// synctest bubble; they must not need a cluster.
func authProxy(t *testing.T, mutate func(*ClientAuth)) *Proxy {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Clusters = []ClusterConfig{{Name: "a", Bootstrap: []string{"127.0.0.1:9"}}}
	cfg.ClientAuth.Mode = ClientAuthTerminate
	cfg.ClientAuth.UsersFile = usersFile(t, map[string]string{"app": "app-pw"})
	if mutate != nil {
		mutate(&cfg.ClientAuth)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{cfg: cfg, log: zaptest.NewLogger(t), m: m}
	if err := p.setupClientAuth(); err != nil {
		t.Fatal(err)
	}
	return p
}

// remoteConn is a net.Conn that reports a given peer address.
type remoteConn struct {
	net.Conn
	remote net.Addr
}

func (c remoteConn) RemoteAddr() net.Addr { return c.remote }

// pipeConn serves one client connection from peer (host:port) over
// net.Pipe until the test ends, and returns the client's end and a channel
// closed when the proxy's side has ended.
func (p *Proxy) pipeConn(t *testing.T, peer string) (*wireConn, <-chan struct{}) {
	t.Helper()
	client, server := net.Pipe()
	addr, err := net.ResolveTCPAddr("tcp", peer)
	if err != nil {
		t.Fatal(err)
	}
	c := p.newClientConn(remoteConn{Conn: server, remote: addr}, -1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.serve(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		client.Close()
		<-done
	})
	return &wireConn{t: t, nc: client, f: kmsg.NewRequestFormatter(kmsg.FormatterClientID("auth-test")), corr: 1000}, done
}

// expectPipeClosed is expectClosed for a net.Pipe connection, whose
// SetReadDeadline fails once the other end has closed.
func expectPipeClosed(w *wireConn) {
	w.t.Helper()
	if err := w.nc.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil && !errors.Is(err, io.ErrClosedPipe) {
		w.t.Fatal(err)
	}
	b, err := io.ReadAll(w.nc)
	if err != nil {
		w.t.Fatalf("reading until close: %v", err)
	}
	if len(b) > 0 {
		w.t.Errorf("proxy sent %d bytes (%x) before closing", len(b), b[:min(len(b), 32)])
	}
}

func saslHandshake(mech string) *kmsg.SASLHandshakeRequest {
	req := kmsg.NewPtrSASLHandshakeRequest()
	req.Version = 1
	req.Mechanism = mech
	return req
}

func saslAuthenticate(auth string) *kmsg.SASLAuthenticateRequest {
	req := kmsg.NewPtrSASLAuthenticateRequest()
	req.Version = 2
	req.SASLAuthBytes = []byte(auth)
	return req
}

// plainLogin runs a PLAIN handshake and authentication and returns the
// authentication's error code and message.
func plainLogin(w *wireConn, user, pw string) (*kerr.Error, string) {
	w.t.Helper()
	hs := w.roundTrip(saslHandshake("PLAIN")).(*kmsg.SASLHandshakeResponse)
	if err := kerr.ErrorForCode(hs.ErrorCode); err != nil {
		w.t.Fatalf("handshake: %v", err)
	}
	resp := w.roundTrip(saslAuthenticate("\x00" + user + "\x00" + pw)).(*kmsg.SASLAuthenticateResponse)
	var msg string
	if resp.ErrorMessage != nil {
		msg = *resp.ErrorMessage
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return err.(*kerr.Error), msg
	}
	return nil, msg
}

// TestFailedAuthDelay: a failed authentication is answered, and its
// connection closed, clientAuth.failedAuthDelay after the request (as a
// broker does), not at once; a good one at once.
func TestFailedAuthDelay(t *testing.T) {
	const delay = 100 * time.Millisecond // the default, as Kafka's
	for _, tc := range []struct {
		name string
		req  kmsg.Request // sent after a PLAIN handshake; nil: the handshake is what fails
		want *kerr.Error
	}{
		{"wrong-password", saslAuthenticate("\x00app\x00nope"), kerr.SaslAuthenticationFailed},
		{"unknown-user", saslAuthenticate("\x00ghost\x00app-pw"), kerr.SaslAuthenticationFailed},
		{"malformed", saslAuthenticate("app"), kerr.SaslAuthenticationFailed},
		{"unsupported-mechanism", nil, kerr.UnsupportedSaslMechanism},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := authProxy(t, nil)
				w, _ := p.pipeConn(t, "192.0.2.1:40000")
				req := kmsg.Request(saslHandshake("GSSAPI"))
				if tc.req != nil {
					w.roundTrip(saslHandshake("PLAIN"))
					req = tc.req
				}
				start := time.Now()
				resp := w.roundTrip(req)
				if took := time.Since(start); took != delay {
					t.Errorf("answered after %v, want %v (clientAuth.failedAuthDelay)", took, delay)
				}
				var code int16
				switch r := resp.(type) {
				case *kmsg.SASLHandshakeResponse:
					code = r.ErrorCode
				case *kmsg.SASLAuthenticateResponse:
					code = r.ErrorCode
				}
				if err := kerr.ErrorForCode(code); err != tc.want {
					t.Errorf("error %v, want %v", err, tc.want)
				}
				expectPipeClosed(w)
			})
		})
	}
	t.Run("good", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			p := authProxy(t, nil)
			w, _ := p.pipeConn(t, "192.0.2.1:40000")
			start := time.Now()
			if err, msg := plainLogin(w, "app", "app-pw"); err != nil {
				t.Fatalf("login: %v %s", err, msg)
			}
			if took := time.Since(start); took != 0 {
				t.Errorf("a good login took %v", took)
			}
		})
	})
}

// TestFailedAuthDelayEndsWithConnection: a connection waiting out the
// failed-authentication delay ends at once when the proxy stops serving
// it; the delay holds no goroutine beyond the connection's life.
func TestFailedAuthDelayEndsWithConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := authProxy(t, func(ca *ClientAuth) { ca.FailedAuthDelay = time.Hour })
		client, server := net.Pipe()
		c := p.newClientConn(server, -1)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			c.serve(ctx)
		}()
		w := &wireConn{t: t, nc: client, f: kmsg.NewRequestFormatter(), corr: 1}
		w.roundTrip(saslHandshake("PLAIN"))
		w.send(saslAuthenticate("\x00app\x00nope"))
		synctest.Wait() // the proxy is waiting out the delay
		start := time.Now()
		cancel()
		synctest.Wait()
		select {
		case <-done:
		default:
			t.Fatal("the connection is still served after its context ended")
		}
		if took := time.Since(start); took != 0 {
			t.Errorf("ending the connection took %v", took)
		}
		client.Close()
	})
}

// TestFailedAuthLimit: after clientAuth.maxFailedAuths failures from one
// address (an IPv6 /64 counting as one) within clientAuth.failedAuthWindow,
// its attempts are refused, even with the right password, until the window
// ends; other addresses are served meanwhile.
func TestFailedAuthLimit(t *testing.T) {
	for _, tc := range []struct{ name, attacker, sameSource, other string }{
		{"ipv4", "192.0.2.1:1000", "192.0.2.1:2000", "192.0.2.2:1000"},
		{"ipv6-/64", "[2001:db8::1]:1000", "[2001:db8::ffff:2]:2000", "[2001:db8:0:1::1]:1000"},
		// Any local process may bind any of 127.0.0.0/8 (found by
		// review: 1,000 loopback addresses made 10,000 checks against a
		// limit of 10): all of loopback is one source.
		{"loopback", "127.0.3.7:1000", "127.0.0.1:2000", "192.0.2.2:1000"},
		{"loopback-v6", "[::1]:1000", "127.9.9.9:2000", "192.0.2.2:1000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := authProxy(t, func(ca *ClientAuth) { ca.MaxFailedAuths, ca.FailedAuthWindow = 3, time.Minute })
				login := func(peer, pw string) (*kerr.Error, string) {
					t.Helper()
					w, _ := p.pipeConn(t, peer)
					return plainLogin(w, "app", pw)
				}
				start := time.Now()
				for i := range 3 {
					if err, _ := login(tc.attacker, fmt.Sprintf("guess-%d", i)); err != kerr.SaslAuthenticationFailed {
						t.Fatalf("guess %d: %v, want SASL_AUTHENTICATION_FAILED", i, err)
					}
				}
				err, msg := login(tc.sameSource, "app-pw")
				if err != kerr.SaslAuthenticationFailed || !strings.Contains(msg, "too many failed authentications") {
					t.Fatalf("the right password from a source over the limit: %v %q, want refused as too many failures", err, msg)
				}
				if n := testutil.ToFloat64(p.m.authThrottled); n != 1 {
					t.Errorf("client_authentication_throttled_total = %v, want 1", n)
				}
				if err, msg := login(tc.other, "app-pw"); err != nil {
					t.Fatalf("another address: %v %s", err, msg)
				}
				time.Sleep(time.Minute - time.Since(start))
				if err, msg := login(tc.sameSource, "app-pw"); err != nil {
					t.Fatalf("after the window: %v %s", err, msg)
				}
			})
		})
	}
}

// TestAuthLimiter: checks under way count against the limit (parallel
// attempts from one address cannot overshoot it), a good check gives its
// reservation back, and the table of addresses stays bounded.
func TestAuthLimiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newAuthLimiter(2, time.Minute)
		e1, _, ok1 := l.begin("a")
		_, _, ok2 := l.begin("a")
		if !ok1 || !ok2 {
			t.Fatal("first two checks refused")
		}
		if _, _, ok := l.begin("a"); ok {
			t.Fatal("a third check in parallel allowed with max 2")
		}
		e1(false) // the first was good
		e3, _, ok := l.begin("a")
		if !ok {
			t.Fatal("a check refused after a good one gave its reservation back")
		}
		e3(true)
		time.Sleep(30 * time.Second)
		_, retryIn, ok := l.begin("a")
		if ok || retryIn != 30*time.Second {
			t.Errorf("over the limit: ok %v, retry in %v, want refused for 30s", ok, retryIn)
		}

		l.size = 8
		for i := range 100 {
			end, _, ok := l.begin(fmt.Sprintf("10.0.0.%d", i))
			if !ok {
				t.Fatalf("source %d refused", i)
			}
			end(true)
			time.Sleep(time.Millisecond)
		}
		if n := l.tracked(); n > 8 {
			t.Errorf("%d sources tracked, bound 8", n)
		}
		// The newest sources are kept (one failure so far: one more
		// check, then refused), the oldest were evicted.
		if _, _, ok := l.begin("10.0.0.99"); !ok {
			t.Error("10.0.0.99 refused after one failure")
		}
		if _, _, ok := l.begin("10.0.0.99"); ok {
			t.Error("10.0.0.99 was evicted: its failure was forgotten")
		}
		if _, _, ok := l.begin("a"); !ok {
			t.Error("the oldest source is still tracked")
		}
		// A good check leaves nothing behind.
		n := l.tracked()
		end, _, _ := l.begin("10.1.0.1")
		end(false)
		if l.tracked() > n {
			t.Error("a good check left an entry")
		}
	})
}

// TestPreAuthFrameLimit: with client SASL terminated, a frame larger than
// clientAuth.maxPreAuthFrameBytes (512 KiB) before authentication closes
// the connection unread, whatever the request; the same frame after
// authentication is served.
func TestPreAuthFrameLimit(t *testing.T) {
	source := kafkatest.NewFake(t, "source", 1)
	topic := kafkatest.Topic(t, "preauth")
	source.CreateTopic(t, topic, 1)
	tp := startProxy(t, source, nil, func(c *Config) {
		c.ClientAuth.Mode = ClientAuthTerminate
		c.ClientAuth.UsersFile = usersFile(t, map[string]string{"app": "app-pw"})
	})
	big := strings.Repeat("x", 600<<10)
	bigAPIVersions := func() kmsg.Request {
		req := kmsg.NewPtrApiVersionsRequest()
		req.Version = 3
		req.ClientSoftwareName, req.ClientSoftwareVersion = big, "1.0"
		return req
	}
	for _, tc := range []struct {
		name   string
		before []kmsg.Request
		big    kmsg.Request
	}{
		{"apiversions-first", nil, bigAPIVersions()},
		{"authenticate", []kmsg.Request{saslHandshake("PLAIN")}, saslAuthenticate("\x00app\x00" + big)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := connErrorsByReason(t, tp.reg)
			w := dialWire(t, tp.Addr().String(), "preauth")
			for _, r := range tc.before {
				w.roundTrip(r)
			}
			w.corr++
			// The proxy may close before the frame is all written.
			w.nc.Write(w.f.AppendRequest(nil, tc.big, w.corr))
			w.expectClosed()
			waitOneConnError(t, tp.reg, before, "preauth_frame_too_large")
		})
	}
	t.Run("after-authentication", func(t *testing.T) {
		before := connErrorsByReason(t, tp.reg)
		w := dialWire(t, tp.Addr().String(), "authed")
		if err, msg := plainLogin(w, "app", "app-pw"); err != nil {
			t.Fatalf("login: %v %s", err, msg)
		}
		if r := w.roundTrip(bigAPIVersions()).(*kmsg.ApiVersionsResponse); r.ErrorCode != 0 || len(r.ApiKeys) == 0 {
			t.Fatalf("600 KiB ApiVersions after authentication: error %d, %d keys", r.ErrorCode, len(r.ApiKeys))
		}
		resp := w.roundTrip(rawProduce(9, -1, topic, [16]byte{}, big)).(*kmsg.ProduceResponse)
		if code := resp.Topics[0].Partitions[0].ErrorCode; code != 0 {
			t.Fatalf("600 KiB Produce after authentication: %v", kerr.ErrorForCode(code))
		}
		assertNoConnErrorsSince(t, tp.reg, before)
	})
}

// TestAuthLimiterGlobalCap: all sources together may fail at most
// globalAuthFactor times the per-source limit in a window, so a guesser
// with more addresses than the limiter tracks gains nothing by evicting
// old windows; good logins do not count.
func TestAuthLimiterGlobalCap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newAuthLimiter(2, time.Minute)
		limit := 2 * globalAuthFactor
		for i := range limit {
			end, _, ok := l.begin(fmt.Sprintf("10.%d.%d.1", i/256, i%256))
			if !ok {
				t.Fatalf("failure %d of %d refused", i, limit)
			}
			end(true)
		}
		if _, retryIn, ok := l.begin("10.200.0.1"); ok || retryIn != time.Minute {
			t.Fatalf("a new source past the global cap: ok %v, retry in %v; want refused for the window", ok, retryIn)
		}
		time.Sleep(time.Minute)
		end, _, ok := l.begin("10.200.0.1")
		if !ok {
			t.Fatal("refused after the window")
		}
		end(false)
		for i := range limit {
			end, _, ok := l.begin(fmt.Sprintf("10.100.%d.%d", i/256, i%256))
			if !ok {
				t.Fatalf("good login %d refused", i)
			}
			end(false)
		}
	})
}
