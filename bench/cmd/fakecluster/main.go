// Command fakecluster runs an in-memory kfake Kafka cluster on loopback in a
// process of its own, so a benchmark can tell its CPU apart from the
// proxy's. It prints one JSON line with the brokers' addresses and runs until
// it is signalled or its standard input closes (its parent died).
//
//	fakecluster -brokers 3            # free ports
//	fakecluster -ports 9092,9093,9094 # fixed ports
//	fakecluster -max-versions 0=12    # answer as a broker without Produce v13
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kversion"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "fakecluster:", err)
		os.Exit(1)
	}
}

func run() error {
	brokers := flag.Int("brokers", 3, "number of brokers (free 127.0.0.1 ports)")
	ports := flag.String("ports", "", "comma-separated fixed ports (overrides -brokers)")
	clusterID := flag.String("cluster-id", "fakecluster", "cluster id")
	maxVersions := flag.String("max-versions", "", "comma-separated key=version caps on the advertised API versions, e.g. 0=12 (Produce up to v12)")
	watchStdin := flag.Bool("exit-on-stdin-eof", false, "exit when standard input closes (for a parent that holds a pipe to it)")
	flag.Parse()

	opts := []kfake.Opt{kfake.NumBrokers(*brokers), kfake.ClusterID(*clusterID)}
	if *ports != "" {
		var ps []int
		for _, s := range strings.Split(*ports, ",") {
			p, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || p <= 0 || p > 65535 {
				return fmt.Errorf("-ports: bad port %q", s)
			}
			ps = append(ps, p)
		}
		opts = append(opts, kfake.Ports(ps...))
	}
	if *maxVersions != "" {
		vs := kversion.Tip()
		for _, kv := range strings.Split(*maxVersions, ",") {
			k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
			key, err1 := strconv.ParseInt(k, 10, 16)
			ver, err2 := strconv.ParseInt(v, 10, 16)
			if !ok || err1 != nil || err2 != nil || key < 0 || ver < 0 {
				return fmt.Errorf("-max-versions: bad key=version %q", kv)
			}
			vs.SetMaxKeyVersion(int16(key), int16(ver))
		}
		opts = append(opts, kfake.MaxVersions(vs))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return err
	}
	defer c.Close()

	addrs := c.ListenAddrs()
	line, _ := json.Marshal(struct {
		Bootstrap string   `json:"bootstrap"`
		Brokers   []string `json:"brokers"`
		PID       int      `json:"pid"`
	}{strings.Join(addrs, ","), addrs, os.Getpid()})
	fmt.Println(string(line))

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	eof := make(chan struct{})
	if *watchStdin {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			close(eof)
		}()
	}
	select {
	case <-sig:
	case <-eof:
	}
	return nil
}
