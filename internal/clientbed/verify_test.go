package clientbed

import (
	"slices"
	"strings"
	"testing"
)

// perfect builds the Result of a flawless run of spec: key k-i lives in
// partition i mod 3, records are consumed partition by partition in offset
// order, and the broker state agrees.
func perfect(spec Spec) Result {
	spec = spec.withDefaults("franz-go")
	res := Result{
		Client:  "franz-go",
		Produce: &ProduceResult{Prefix: spec.Prefix, Acked: spec.Records},
		Consume: &ConsumeResult{Committed: true},
		Broker:  &BrokerState{Start: map[int32]int64{}, End: map[int32]int64{}, Committed: map[int32]int64{}},
	}
	byPart := map[int32][]Record{}
	for seq := range spec.Records {
		part := int32((seq % spec.Keys) % 3)
		off := int64(len(byPart[part]))
		key, value := spec.key(seq), spec.value(seq)
		byPart[part] = append(byPart[part], Record{Partition: part, Offset: off, Key: &key, Value: &value, Headers: spec.headers(seq)})
		res.Produce.Acks = append(res.Produce.Acks, Ack{Seq: seq, Partition: part, Offset: off})
	}
	for part := range int32(3) {
		res.Consume.Records = append(res.Consume.Records, byPart[part]...)
		res.Broker.Start[part] = 0
		res.Broker.End[part] = int64(len(byPart[part]))
		res.Broker.Committed[part] = int64(len(byPart[part]))
	}
	return res
}

// find returns the index of the consumed record with value v.
func find(t *testing.T, res Result, v string) int {
	t.Helper()
	i := slices.IndexFunc(res.Consume.Records, func(r Record) bool { return *r.Value == v })
	if i < 0 {
		t.Fatalf("no record %q", v)
	}
	return i
}

func strPtr(s string) *string { return &s }

func TestVerify(t *testing.T) {
	spec := Spec{Records: 30, Keys: 5}
	cases := []struct {
		name   string
		mutate func(t *testing.T, r *Result)
		want   []string // problem kinds the error must name; none: must pass
	}{
		{name: "perfect", mutate: func(*testing.T, *Result) {}},
		{
			name: "lost record",
			mutate: func(t *testing.T, r *Result) {
				// seq 29 is the last record of its partition: the log really
				// lost it (end offset and ack agree), the consumer did not.
				i := find(t, *r, "franz-go-29")
				rec := r.Consume.Records[i]
				r.Consume.Records = slices.Delete(r.Consume.Records, i, i+1)
				r.Broker.End[rec.Partition]--
				r.Broker.Committed[rec.Partition]--
			},
			want: []string{kindLost},
		},
		{
			name: "record left unread",
			mutate: func(t *testing.T, r *Result) {
				i := find(t, *r, "franz-go-29")
				r.Consume.Records = slices.Delete(r.Consume.Records, i, i+1)
			},
			want: []string{kindLost, kindUnread, kindCommitted},
		},
		{
			name: "duplicate written by the producer",
			mutate: func(t *testing.T, r *Result) {
				// seq 3 written a second time at the end of its partition.
				dup := r.Consume.Records[find(t, *r, "franz-go-3")]
				dup.Offset = r.Broker.End[dup.Partition]
				r.Broker.End[dup.Partition]++
				r.Broker.Committed[dup.Partition]++
				last := slices.IndexFunc(r.Consume.Records, func(x Record) bool { return x.Partition == dup.Partition+1 })
				r.Consume.Records = slices.Insert(r.Consume.Records, last, dup)
			},
			want: []string{kindDuplicate, kindReordered, kindMisplaced},
		},
		{
			name: "offset delivered twice",
			mutate: func(t *testing.T, r *Result) {
				r.Consume.Records = append(r.Consume.Records, r.Consume.Records[find(t, *r, "franz-go-7")])
			},
			want: []string{kindDuplicate, kindRedelivered, kindReordered},
		},
		{
			name: "reordered in the log",
			mutate: func(t *testing.T, r *Result) {
				// seq 5 and 10 share key k-0 and partition 0: swap their
				// payloads, as if the batches had been written out of order.
				i, j := find(t, *r, "franz-go-5"), find(t, *r, "franz-go-10")
				a, b := &r.Consume.Records[i], &r.Consume.Records[j]
				a.Value, b.Value = b.Value, a.Value
				a.Headers, b.Headers = b.Headers, a.Headers
			},
			want: []string{kindReordered, kindMisplaced},
		},
		{
			name: "reordered by the consumer",
			mutate: func(t *testing.T, r *Result) {
				i, j := find(t, *r, "franz-go-5"), find(t, *r, "franz-go-10")
				r.Consume.Records[i], r.Consume.Records[j] = r.Consume.Records[j], r.Consume.Records[i]
			},
			want: []string{kindReordered},
		},
		{
			name: "key moved to another partition",
			mutate: func(t *testing.T, r *Result) {
				// seq 25 (key k-0) acked and stored in partition 1.
				i := find(t, *r, "franz-go-25")
				rec := r.Consume.Records[i]
				r.Consume.Records = slices.Delete(r.Consume.Records, i, i+1)
				r.Broker.End[0]--
				r.Broker.Committed[0]--
				rec.Partition, rec.Offset = 1, r.Broker.End[1]
				r.Broker.End[1]++
				r.Broker.Committed[1]++
				r.Produce.Acks[25] = Ack{Seq: 25, Partition: 1, Offset: rec.Offset}
				end1 := slices.IndexFunc(r.Consume.Records, func(x Record) bool { return x.Partition == 2 })
				r.Consume.Records = slices.Insert(r.Consume.Records, end1, rec)
			},
			want: []string{kindKeySplit},
		},
		{
			name: "corrupt header",
			mutate: func(t *testing.T, r *Result) {
				rec := &r.Consume.Records[find(t, *r, "franz-go-4")]
				rec.Headers = []Header{{Key: "seq", Value: "5"}, {Key: "client", Value: "franz-go"}}
			},
			want: []string{kindHeaders},
		},
		{
			name: "header lost",
			mutate: func(t *testing.T, r *Result) {
				rec := &r.Consume.Records[find(t, *r, "franz-go-4")]
				rec.Headers = rec.Headers[:1]
			},
			want: []string{kindHeaders},
		},
		{
			name: "wrong key",
			mutate: func(t *testing.T, r *Result) {
				r.Consume.Records[find(t, *r, "franz-go-4")].Key = strPtr("k-3")
			},
			want: []string{kindKey},
		},
		{
			name: "null key",
			mutate: func(t *testing.T, r *Result) {
				r.Consume.Records[find(t, *r, "franz-go-4")].Key = nil
			},
			want: []string{kindKey},
		},
		{
			name: "corrupt value",
			mutate: func(t *testing.T, r *Result) {
				r.Consume.Records[find(t, *r, "franz-go-4")].Value = strPtr("franz-go-4x")
			},
			want: []string{kindForeign, kindLost},
		},
		{
			name: "delivery error",
			mutate: func(t *testing.T, r *Result) {
				r.Produce.Errors = append(r.Produce.Errors, "seq 30: delivery failed: NOT_LEADER_FOR_PARTITION")
			},
			want: []string{kindDelivery},
		},
		{
			name: "ack missing",
			mutate: func(t *testing.T, r *Result) {
				r.Produce.Acked--
				r.Produce.Acks = r.Produce.Acks[1:]
			},
			want: []string{kindAckCount},
		},
		{
			name: "two acks at one offset",
			mutate: func(t *testing.T, r *Result) {
				r.Produce.Acks[1].Partition, r.Produce.Acks[1].Offset = r.Produce.Acks[0].Partition, r.Produce.Acks[0].Offset
			},
			want: []string{kindAck, kindMisplaced},
		},
		{
			name:   "consumer error",
			mutate: func(_ *testing.T, r *Result) { r.Consume.Errors = []string{"fetch: UNKNOWN_TOPIC_ID"} },
			want:   []string{kindConsumer},
		},
		{
			name:   "consumer timed out",
			mutate: func(_ *testing.T, r *Result) { r.Consume.TimedOut = true },
			want:   []string{kindTimedOut},
		},
		{
			name:   "no commit",
			mutate: func(_ *testing.T, r *Result) { r.Consume.Committed = false },
			want:   []string{kindNotCommitted},
		},
		{
			name:   "committed offset behind",
			mutate: func(_ *testing.T, r *Result) { r.Broker.Committed[2]-- },
			want:   []string{kindCommitted},
		},
		{
			name:   "no committed offset",
			mutate: func(_ *testing.T, r *Result) { delete(r.Broker.Committed, 1) },
			want:   []string{kindCommitted},
		},
		{
			name: "cluster state unreadable",
			mutate: func(_ *testing.T, r *Result) {
				r.Broker, r.BrokerError = nil, "list end offsets: connection refused"
			},
			want: []string{kindBroker},
		},
		{
			name:   "no produce report",
			mutate: func(_ *testing.T, r *Result) { r.Produce = nil },
			want:   []string{kindNoReport},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := perfect(spec)
			tc.mutate(t, &res)
			err := res.Verify(spec)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Verify failed a flawless run: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Verify passed; want problems %q", tc.want)
			}
			for _, kind := range tc.want {
				if !strings.Contains(err.Error(), kind+":") {
					t.Errorf("error does not report %q:\n%v", kind, err)
				}
			}
		})
	}
}

func TestVerifyHalves(t *testing.T) {
	spec := Spec{Records: 12, Keys: 4}
	produceOnly := perfect(spec)
	produceOnly.Consume = nil
	if err := produceOnly.Verify(Spec{Records: 12, Keys: 4, Mode: ModeProduce}); err != nil {
		t.Errorf("produce-only run: %v", err)
	}
	if err := produceOnly.Verify(spec); err == nil || !strings.Contains(err.Error(), "no consume report") {
		t.Errorf("a produce-only result passed a produce+consume spec (err %v)", err)
	}
	consumeOnly := perfect(spec)
	consumeOnly.Produce = nil
	if err := consumeOnly.Verify(Spec{Records: 12, Keys: 4, Mode: ModeConsume}); err != nil {
		t.Errorf("consume-only run: %v", err)
	}
	// Records consumed by one client, produced by another: the prefix is
	// the producer's.
	other := perfect(Spec{Records: 12, Keys: 4, Prefix: "kafkajs"})
	other.Client = Java
	if err := other.Verify(Spec{Records: 12, Keys: 4, Prefix: "kafkajs"}); err != nil {
		t.Errorf("cross-client run: %v", err)
	}
	if err := other.Verify(Spec{Records: 12, Keys: 4}); err == nil {
		t.Error("records with another client's prefix passed")
	}
}

func TestVerifyCapsExamples(t *testing.T) {
	spec := Spec{Records: 100}
	res := perfect(spec)
	res.Consume.Records = nil
	err := res.Verify(spec)
	if err == nil {
		t.Fatal("Verify passed a run that consumed nothing")
	}
	if !strings.Contains(err.Error(), "lost records: 100 (") || !strings.Contains(err.Error(), "and 95 more") {
		t.Errorf("want 100 lost records, 5 shown and 95 more counted; got:\n%v", err)
	}
}
