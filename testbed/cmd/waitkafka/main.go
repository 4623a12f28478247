// Command waitkafka waits until a Kafka cluster answers Metadata with the
// expected number of brokers, for the real-Kafka test bed (testbed/kafka.sh).
// With -roundtrip it also produces one record and reads it back, which with
// -tls-ca and -sasl checks a SASL_SSL login end to end.
//
// Exit codes: 0 ready, 1 timed out, 2 usage, 3 a watched broker process
// exited, 4 authentication or TLS failure (not retried).
package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

const (
	exitTimeout = 1
	exitUsage   = 2
	exitDied    = 3
	exitAuth    = 4
)

type options struct {
	name      string
	bootstrap []string
	brokers   int
	timeout   time.Duration
	pids      []int
	caFile    string
	mechanism string
	user      string
	password  string
	roundtrip bool
	topic     string
	quiet     bool
	verbose   bool
}

func main() {
	var o options
	var bootstrap, pids string
	flag.StringVar(&o.name, "name", "cluster", "cluster name for messages")
	flag.StringVar(&bootstrap, "bootstrap", "", "comma-separated host:port seed brokers (required)")
	flag.IntVar(&o.brokers, "brokers", 1, "number of brokers Metadata must list")
	flag.DurationVar(&o.timeout, "timeout", 120*time.Second, "give up after this long")
	flag.StringVar(&pids, "pids", "", "comma-separated broker process ids: fail at once if one exits")
	flag.StringVar(&o.caFile, "tls-ca", "", "PEM CA file: connect with TLS trusting this CA")
	flag.StringVar(&o.mechanism, "sasl", "", "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
	flag.StringVar(&o.user, "user", "", "SASL user")
	flag.StringVar(&o.password, "password", "", "SASL password")
	flag.BoolVar(&o.roundtrip, "roundtrip", false, "also produce one record and consume it back")
	flag.StringVar(&o.topic, "topic", "switchyard-testbed-check", "topic for -roundtrip")
	flag.BoolVar(&o.quiet, "q", false, "print nothing on success")
	flag.BoolVar(&o.verbose, "v", false, "print every attempt")
	flag.Parse()
	for _, s := range strings.Split(bootstrap, ",") {
		if s = strings.TrimSpace(s); s != "" {
			o.bootstrap = append(o.bootstrap, s)
		}
	}
	for _, s := range strings.Split(pids, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		p, err := strconv.Atoi(s)
		if err != nil {
			fail(exitUsage, "waitkafka: bad pid %q", s)
		}
		o.pids = append(o.pids, p)
	}
	if len(o.bootstrap) == 0 || o.brokers < 1 {
		fail(exitUsage, "usage: waitkafka -bootstrap host:port[,...] [-brokers N] [-timeout D] [-pids P,...] [-tls-ca F -sasl M -user U -password P] [-roundtrip]")
	}
	os.Exit(run(o))
}

func fail(code int, format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(code)
}

func run(o options) int {
	opts := []kgo.Opt{
		kgo.SeedBrokers(o.bootstrap...),
		kgo.DialTimeout(2 * time.Second),
		kgo.RetryTimeout(2 * time.Second),
		kgo.RequestRetries(1),
		kgo.MetadataMinAge(100 * time.Millisecond),
	}
	if o.caFile != "" {
		pem, err := os.ReadFile(o.caFile)
		if err != nil {
			fmt.Fprintf(os.Stderr, "waitkafka: read CA: %v\n", err)
			return exitUsage
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			fmt.Fprintf(os.Stderr, "waitkafka: no certificate in %s\n", o.caFile)
			return exitUsage
		}
		opts = append(opts, kgo.DialTLSConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}))
	}
	if o.mechanism != "" {
		m, err := mechanism(o.mechanism, o.user, o.password)
		if err != nil {
			fmt.Fprintf(os.Stderr, "waitkafka: %v\n", err)
			return exitUsage
		}
		opts = append(opts, kgo.SASL(m))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		fmt.Fprintf(os.Stderr, "waitkafka: %v\n", err)
		return exitUsage
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)

	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	start := time.Now()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if pid, dead := deadPid(o.pids); dead {
			fmt.Fprintf(os.Stderr, "waitkafka: %s: broker process %d exited before the cluster was ready (last error: %v)\n", o.name, pid, last)
			return exitDied
		}
		tctx, tcancel := context.WithTimeout(ctx, 3*time.Second)
		md, err := brokerMetadata(tctx, cl)
		tcancel()
		if o.verbose {
			fmt.Fprintf(os.Stderr, "%s: %.1fs: brokers %v controller %d err %v\n", o.name, time.Since(start).Seconds(), md.Brokers.NodeIDs(), md.Controller, err)
		}
		switch {
		case err != nil:
			last = err
		case len(md.Brokers) < o.brokers:
			last = fmt.Errorf("metadata lists %d of %d brokers", len(md.Brokers), o.brokers)
		case md.Controller < 0:
			last = errors.New("metadata names no controller")
		default:
			if o.roundtrip {
				if err := roundtrip(ctx, opts, cl, adm, o.topic); err != nil {
					last = err
					break
				}
			}
			if !o.quiet {
				what := "ready"
				if o.roundtrip {
					what = "ready, produce/consume round trip ok"
				}
				if o.mechanism != "" {
					what += ", " + o.mechanism + " login as " + o.user
				}
				fmt.Printf("%s: %d brokers %s (cluster id %s) after %.1fs\n", o.name, len(md.Brokers), what, md.Cluster, time.Since(start).Seconds())
			}
			return 0
		}
		if authFailure(last) {
			fmt.Fprintf(os.Stderr, "waitkafka: %s: authentication failed at %s: %v\n", o.name, strings.Join(o.bootstrap, ","), last)
			return exitAuth
		}
		select {
		case <-ctx.Done():
			fmt.Fprintf(os.Stderr, "waitkafka: %s: not ready after %s at %s (last error: %v)\n", o.name, o.timeout, strings.Join(o.bootstrap, ","), last)
			return exitTimeout
		case <-tick.C:
		}
	}
}

// brokerMetadata asks a broker for Metadata with no topics. It does not use
// kadm.BrokerMetadata: that answers from the client's metadata cache, which
// for a request naming no topics is never refreshed, so a client that first
// saw a half-started cluster would see it half-started forever.
func brokerMetadata(ctx context.Context, cl *kgo.Client) (kadm.Metadata, error) {
	req := kmsg.NewPtrMetadataRequest()
	req.Topics = []kmsg.MetadataRequestTopic{}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return kadm.Metadata{}, err
	}
	md := kadm.Metadata{Controller: resp.ControllerID}
	if resp.ClusterID != nil {
		md.Cluster = *resp.ClusterID
	}
	for _, b := range resp.Brokers {
		md.Brokers = append(md.Brokers, kadm.BrokerDetail{NodeID: b.NodeID, Host: b.Host, Port: b.Port, Rack: b.Rack})
	}
	return md, nil
}

func mechanism(name, user, password string) (sasl.Mechanism, error) {
	switch strings.ToUpper(name) {
	case "PLAIN":
		return plain.Auth{User: user, Pass: password}.AsMechanism(), nil
	case "SCRAM-SHA-256":
		return scram.Auth{User: user, Pass: password}.AsSha256Mechanism(), nil
	case "SCRAM-SHA-512":
		return scram.Auth{User: user, Pass: password}.AsSha512Mechanism(), nil
	}
	return nil, fmt.Errorf("unknown SASL mechanism %q (want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)", name)
}

func authFailure(err error) bool {
	if err == nil {
		return false
	}
	var certErr *tls.CertificateVerificationError
	var unknownAuth x509.UnknownAuthorityError
	return errors.Is(err, kerr.SaslAuthenticationFailed) ||
		errors.Is(err, kerr.IllegalSaslState) ||
		errors.Is(err, kerr.UnsupportedSaslMechanism) ||
		errors.As(err, &certErr) || errors.As(err, &unknownAuth)
}

// deadPid reports the first watched process that no longer exists (or is a
// zombie waiting to be reaped).
func deadPid(pids []int) (int, bool) {
	for _, p := range pids {
		if err := syscall.Kill(p, 0); err != nil && errors.Is(err, syscall.ESRCH) {
			return p, true
		}
		if b, err := os.ReadFile("/proc/" + strconv.Itoa(p) + "/stat"); err == nil {
			// Field 3, after the parenthesised command name, is the state.
			s := string(b)
			if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) && s[i+2] == 'Z' {
				return p, true
			}
		}
	}
	return 0, false
}

// roundtrip produces one unique record and reads the partition back until it
// appears.
func roundtrip(ctx context.Context, base []kgo.Opt, cl *kgo.Client, adm *kadm.Client, topic string) error {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return err
	}
	want := hex.EncodeToString(b[:])
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := adm.CreateTopic(rctx, 1, 1, nil, topic); err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	res := cl.ProduceSync(rctx, &kgo.Record{Topic: topic, Partition: 0, Value: []byte(want)})
	r, err := res.First()
	if err != nil {
		return fmt.Errorf("produce to %s: %w", topic, err)
	}
	cons, err := kgo.NewClient(append(append([]kgo.Opt(nil), base...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {r.Partition: kgo.NewOffset().At(r.Offset)}}),
	)...)
	if err != nil {
		return err
	}
	defer cons.Close()
	for {
		fs := cons.PollFetches(rctx)
		if err := rctx.Err(); err != nil {
			return fmt.Errorf("consume %s: record %s not read back: %w", topic, want, err)
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = err })
		if ferr != nil {
			return fmt.Errorf("consume %s: %w", topic, ferr)
		}
		found := false
		fs.EachRecord(func(rec *kgo.Record) { found = found || string(rec.Value) == want })
		if found {
			return nil
		}
	}
}
