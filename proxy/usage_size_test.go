package proxy_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
	"github.com/switchyard/switchyard/proxy"
	"github.com/switchyard/switchyard/proxy/admin"
)

// controlMessageBytes is the control plane's default bound of a message it
// receives (control.DefaultLimits().MessageBytes).
const controlMessageBytes = 256 << 10

// TestUsageReportSize: whatever its clients do, a sidecar's usage encodes
// within proxy.UsageMaxBytes, so its report fits the control plane's
// default message limit with room for the rest of its status: topics,
// groups (with members, instance and client ids) and transactional ids,
// with short names (the count bounds) and names of Kafka's longest length
// (the byte bound).
func TestUsageReportSize(t *testing.T) {
	for _, kind := range []string{"topics", "groups", "transactions"} {
		for _, size := range []int{8, 64, 249} {
			cfg := proxy.DefaultConfig()
			cfg.Listen = "127.0.0.1:0"
			cfg.BrokerPortBase = -1
			cfg.Clusters = []proxy.ClusterConfig{{Name: "source", Bootstrap: []string{"127.0.0.1:1"}}}
			cfg.Active = "source"
			p, err := proxy.New(cfg, zap.NewNop(), prometheus.NewRegistry())
			if err != nil {
				t.Fatal(err)
			}
			proxy.FillUsage(p, kind, size)
			st := admin.StatusToProto(p.Status())
			p.Close()
			u := st.GetUsage()
			n := proto.Size(u)
			report := proto.Size(&switchyardv1.ConnectRequest{Status: st, AppliedVersion: 1 << 40})
			t.Logf("%s of %d bytes: %d topics, %d groups, %d transactional ids, %d dropped: usage %d bytes, report %d",
				kind, size, len(u.GetTopics()), len(u.GetGroups()), len(u.GetTransactions()), u.GetDropped(), n, report)
			if n > proxy.UsageMaxBytes || report > controlMessageBytes/2+4<<10 {
				t.Errorf("%s of %d bytes: usage %d bytes (bound %d), report %d (want at most %d)",
					kind, size, n, proxy.UsageMaxBytes, report, controlMessageBytes/2+4<<10)
			}
			if n < proxy.UsageMaxBytes/2 {
				t.Errorf("%s of %d bytes: usage %d bytes: the fill stopped well short of the bound", kind, size, n)
			}
		}
	}
}
