package clientbed

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// observe reads, with an admin client of its own, the topic's start and end
// offsets and (when the run consumed) the group's committed offsets: the
// cluster's side of the story, which Verify holds the client's report to.
func observe(ctx context.Context, spec Spec) (*BrokerState, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(spec.Bootstrap...), kgo.ClientID("clientbed-observer"))
	if err != nil {
		return nil, fmt.Errorf("admin client: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)

	bs := &BrokerState{Start: map[int32]int64{}, End: map[int32]int64{}}
	for _, x := range []struct {
		name string
		list func(context.Context, ...string) (kadm.ListedOffsets, error)
		into map[int32]int64
	}{
		{"start", adm.ListStartOffsets, bs.Start},
		{"end", adm.ListEndOffsets, bs.End},
	} {
		listed, err := x.list(ctx, spec.Topic)
		if err == nil {
			err = listed.Error()
		}
		if err != nil {
			return nil, fmt.Errorf("list %s offsets of %s: %w", x.name, spec.Topic, err)
		}
		listed.Each(func(o kadm.ListedOffset) { x.into[o.Partition] = o.Offset })
	}
	if spec.Mode.Consumes() {
		resp, err := adm.FetchOffsets(ctx, spec.Group)
		if err == nil {
			err = resp.Error()
		}
		if err != nil {
			return nil, fmt.Errorf("fetch committed offsets of group %s: %w", spec.Group, err)
		}
		bs.Committed = map[int32]int64{}
		for p, o := range resp[spec.Topic] {
			if o.At >= 0 {
				bs.Committed[p] = o.At
			}
		}
	}
	return bs, nil
}
