package clientbed

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/kafkatest"
	"github.com/twmb/franz-go/pkg/kadm"
)

// testRecords is how many records each client produces and consumes.
const testRecords = 2000

// requireClients is set by `make test` / `make test-clients`, after `make
// deps` installed every client: a missing client is then a failure.
func requireClients() bool { return os.Getenv("SWITCHYARD_REQUIRE_CLIENTS") == "1" }

func needClient(t *testing.T, c Client) {
	t.Helper()
	if err := Available(c); err != nil {
		if requireClients() {
			t.Fatalf("%v (SWITCHYARD_REQUIRE_CLIENTS=1: `make deps` should have installed it)", err)
		}
		t.Skipf("skipped: %v", err)
	}
}

// roundTrip has client c produce testRecords records to a fresh 3-partition
// topic on cluster and consume them in a group, then verifies the run.
func roundTrip(t *testing.T, cluster *kafkatest.Cluster, c Client) {
	t.Helper()
	needClient(t, c)
	topic := kafkatest.Topic(t, "clientbed-"+string(c))
	cluster.CreateTopic(t, topic, 3)
	spec := Spec{
		Bootstrap: cluster.Bootstrap,
		Topic:     topic,
		Group:     topic + "-group",
		Records:   testRecords,
		Timeout:   90 * time.Second,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := Run(ctx, c, spec)
	if err != nil {
		t.Fatalf("run %s on %s: %v", c, cluster.Name, err)
	}
	if err := res.Verify(spec); err != nil {
		t.Errorf("verify %s on %s: %v", c, cluster.Name, err)
		if res.Log != "" {
			t.Logf("%s stderr (tail):\n%s", c, res.Log)
		}
		return
	}
	t.Logf("%s (%s) on %s: %d produced in %d ms, %d consumed in %d ms, whole run %v",
		c, res.Library, cluster.Name, res.Produce.Acked, res.Produce.ElapsedMS,
		len(res.Consume.Records), res.Consume.ElapsedMS, res.Elapsed.Round(time.Millisecond))
}

// TestClientsOnKfake runs every client against an in-process three-broker
// kfake cluster, whatever SWITCHYARD_TEST_KAFKA says.
func TestClientsOnKfake(t *testing.T) {
	for _, c := range Clients() {
		t.Run(string(c), func(t *testing.T) {
			roundTrip(t, kafkatest.NewFake(t, "source", 3), c)
		})
	}
}

// TestClientsOnPair runs every client against both clusters of the backend
// chosen by SWITCHYARD_TEST_KAFKA: real Apache Kafka under `make test-real`.
// On kfake it runs against the two-broker target only: the three-broker
// source is what TestClientsOnKfake covers.
func TestClientsOnPair(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	src, dst := kafkatest.Pair(t)
	clusters := []*kafkatest.Cluster{src, dst}
	if kafkatest.Backend() == kafkatest.BackendKfake {
		clusters = []*kafkatest.Cluster{dst}
	}
	for _, cluster := range clusters {
		for _, c := range Clients() {
			t.Run(cluster.Name+"/"+string(c), func(t *testing.T) {
				roundTrip(t, cluster, c)
			})
		}
	}
}

// TestCrossClient has each client consume what the previous one produced,
// so every consumer reads another library's record batches. It runs on the
// source cluster of the SWITCHYARD_TEST_KAFKA backend.
func TestCrossClient(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	cluster, _ := kafkatest.Pair(t)
	all := Clients()
	for i, producer := range all {
		consumer := all[(i+1)%len(all)]
		t.Run(string(producer)+"->"+string(consumer), func(t *testing.T) {
			needClient(t, producer)
			needClient(t, consumer)
			topic := kafkatest.Topic(t, "clientbed-cross")
			cluster.CreateTopic(t, topic, 3)
			spec := Spec{
				Bootstrap: cluster.Bootstrap,
				Topic:     topic,
				Group:     topic + "-group",
				Records:   500,
				Timeout:   90 * time.Second,
				Prefix:    string(producer),
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			ps, cs := spec, spec
			ps.Mode, cs.Mode = ModeProduce, ModeConsume
			pres, err := Run(ctx, producer, ps)
			if err != nil {
				t.Fatalf("produce with %s: %v", producer, err)
			}
			cres, err := Run(ctx, consumer, cs)
			if err != nil {
				t.Fatalf("consume with %s: %v", consumer, err)
			}
			both := Result{Client: consumer, Produce: pres.Produce, Consume: cres.Consume, Broker: cres.Broker}
			if err := both.Verify(spec); err != nil {
				t.Errorf("%s -> %s: %v\nproducer stderr: %s\nconsumer stderr: %s", producer, consumer, err, pres.Log, cres.Log)
			}
		})
	}
}

func TestRunRejectsBadSpec(t *testing.T) {
	_, err := Run(context.Background(), FranzGo, Spec{Records: 0})
	if err == nil {
		t.Fatal("Run accepted a spec with no bootstrap, topic or records")
	}
	for _, want := range []string{"no bootstrap", "no topic", "records 0"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestAvailableUnknownClient(t *testing.T) {
	if err := Available("no-such-client"); err == nil {
		t.Fatal("Available accepted an unknown client")
	}
}

// TestVerifyCatchesDamageOnACluster damages real data between a produce and
// a consume run and checks that Verify, given the real reports, notices.
func TestVerifyCatchesDamageOnACluster(t *testing.T) {
	cluster := kafkatest.NewFake(t, "source", 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := func(t *testing.T, spec Spec) Result {
		t.Helper()
		res, err := Run(ctx, FranzGo, spec)
		if err != nil {
			t.Fatalf("%s run: %v", spec.Mode, err)
		}
		return res
	}
	newSpec := func(t *testing.T) Spec {
		topic := kafkatest.Topic(t, "clientbed-damage")
		cluster.CreateTopic(t, topic, 3)
		return Spec{Bootstrap: cluster.Bootstrap, Topic: topic, Records: 300, Timeout: 20 * time.Second}
	}
	consumeAndVerify := func(t *testing.T, spec Spec, produced Result) error {
		t.Helper()
		cs := spec
		cs.Mode = ModeConsume
		cs.Timeout = 3 * time.Second // some runs cannot reach spec.Records
		consumed := run(t, cs)
		both := Result{Client: FranzGo, Produce: produced.Produce, Consume: consumed.Consume, Broker: consumed.Broker}
		return both.Verify(spec)
	}

	t.Run("undamaged", func(t *testing.T) {
		spec := newSpec(t)
		ps := spec
		ps.Mode = ModeProduce
		if err := consumeAndVerify(t, spec, run(t, ps)); err != nil {
			t.Fatalf("undamaged topic: %v", err)
		}
	})
	t.Run("records deleted", func(t *testing.T) {
		spec := newSpec(t)
		ps := spec
		ps.Mode = ModeProduce
		produced := run(t, ps)
		adm := kadm.NewClient(cluster.Client(t))
		var del kadm.Offsets
		del.Add(kadm.Offset{Topic: spec.Topic, Partition: 0, At: 3})
		resp, err := adm.DeleteRecords(ctx, del)
		if err == nil {
			err = resp.Error()
		}
		if err != nil {
			t.Fatalf("delete records: %v", err)
		}
		err = consumeAndVerify(t, spec, produced)
		if err == nil || !strings.Contains(err.Error(), kindLost+": 3 ") {
			t.Fatalf("3 records deleted from partition 0: want %q reporting 3, got %v", kindLost, err)
		}
	})
	t.Run("records written twice", func(t *testing.T) {
		spec := newSpec(t)
		ps := spec
		ps.Mode = ModeProduce
		produced := run(t, ps)
		run(t, ps)
		// The consumer stops at 300 records: whether it got some twice or
		// left the second copies unread depends on how its fetches fell.
		err := consumeAndVerify(t, spec, produced)
		if err == nil || !strings.Contains(err.Error(), kindDuplicate+":") && !strings.Contains(err.Error(), kindUnread+":") {
			t.Fatalf("every record written twice: want %q or %q, got %v", kindDuplicate, kindUnread, err)
		}
	})
}
