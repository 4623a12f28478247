// Command clientbed runs one or all of the client bed's Kafka clients against
// a bootstrap address (a cluster or a proxy), verifies what they report and
// prints one JSON line per client on stdout:
//
//	go run ./internal/clientbed/cmd/clientbed -bootstrap 127.0.0.1:9092 -client all -records 2000
//
// With -client all, each client gets its own topic, "<topic>-<client>". The
// topics should be fresh (Verify expects them to hold only this run's
// records); they are created with -partitions partitions (replication factor:
// the broker's default) unless they exist. Exit status 1 if any run fails or
// does not verify.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/switchyard/switchyard/internal/clientbed"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

type line struct {
	clientbed.Result
	ElapsedMS int64  `json:"elapsed_ms"`
	Consumed  int    `json:"consumed"`
	Verified  bool   `json:"verified"`
	Error     string `json:"error,omitempty"`
}

func main() {
	var (
		bootstrap = flag.String("bootstrap", "127.0.0.1:9092", "comma-separated host:port seed addresses")
		client    = flag.String("client", "all", "client to run, or all: "+fmt.Sprint(clientbed.Clients()))
		topic     = flag.String("topic", fmt.Sprintf("clientbed-%d", time.Now().Unix()), "topic (suffixed with -<client> for -client all)")
		group     = flag.String("group", "", "consumer group (default clientbed-<topic>-<client>)")
		records   = flag.Int("records", 1000, "records to produce and consume")
		keys      = flag.Int("keys", clientbed.DefaultKeys, "distinct keys")
		mode      = flag.String("mode", "both", "produce, consume or both")
		timeout   = flag.Duration("timeout", clientbed.DefaultTimeout, "budget of each client run")
		prefix    = flag.String("prefix", "", "value prefix (default: the client's name)")
		parts     = flag.Int("partitions", 3, "create each topic with this many partitions first (0: do not create)")
		full      = flag.Bool("full", false, "include every ack and consumed record in the output")
	)
	flag.Parse()

	clients := clientbed.Clients()
	if *client != "all" {
		clients = []clientbed.Client{clientbed.Client(*client)}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	failed := false
	enc := json.NewEncoder(os.Stdout)
	for _, c := range clients {
		spec := clientbed.Spec{
			Bootstrap: strings.Split(*bootstrap, ","),
			Topic:     *topic,
			Group:     *group,
			Records:   *records,
			Keys:      *keys,
			Mode:      clientbed.Mode(*mode),
			Timeout:   *timeout,
			Prefix:    *prefix,
		}
		if len(clients) > 1 {
			spec.Topic += "-" + string(c)
		}
		if *parts > 0 && spec.Mode.Produces() {
			if err := createTopic(ctx, spec.Bootstrap, spec.Topic, int32(*parts)); err != nil {
				fmt.Fprintf(os.Stderr, "%s: %v\n", c, err)
				os.Exit(2)
			}
		}
		res, err := clientbed.Run(ctx, c, spec)
		out := line{Result: res, ElapsedMS: res.Elapsed.Milliseconds()}
		if res.Consume != nil {
			out.Consumed = len(res.Consume.Records)
		}
		if err == nil {
			err = res.Verify(spec)
			out.Verified = err == nil
		}
		if err != nil {
			failed = true
			out.Error = err.Error()
			fmt.Fprintf(os.Stderr, "%s: %v\n", c, err)
			if res.Log != "" {
				fmt.Fprintf(os.Stderr, "%s stderr (tail):\n%s\n", c, res.Log)
			}
		}
		if !*full && out.Consume != nil {
			consume := *out.Consume
			consume.Records = nil
			out.Consume = &consume
		}
		if !*full && out.Produce != nil {
			produce := *out.Produce
			produce.Acks = nil
			out.Produce = &produce
		}
		if err := enc.Encode(out); err != nil {
			fmt.Fprintf(os.Stderr, "write result: %v\n", err)
			os.Exit(2)
		}
	}
	if failed {
		os.Exit(1)
	}
}

// createTopic creates topic unless it exists.
func createTopic(ctx context.Context, bootstrap []string, topic string, partitions int32) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(bootstrap...))
	if err != nil {
		return fmt.Errorf("admin client: %w", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := kadm.NewClient(cl).CreateTopic(ctx, partitions, -1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	return nil
}
