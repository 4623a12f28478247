package admin

import (
	"context"
	"fmt"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
	"github.com/switchyard/switchyard/proxy"
)

// Proxy is what the admin server needs from the proxy core; *proxy.Proxy
// satisfies it. Implementations must be safe for concurrent use: calls
// arrive from concurrent gRPC and HTTP handlers.
type Proxy interface {
	// Status returns a point-in-time view of the proxy.
	Status() proxy.Status
	// Switch moves the proxy to the named cluster and blocks until the
	// switch is applied, fails, or ctx ends.
	Switch(ctx context.Context, cluster string) (proxy.SwitchReport, error)
	// SetGate replaces the gate in force.
	SetGate(g proxy.Gate) error
	// ClearGate lifts the gate in force, if any.
	ClearGate()
	// Ready returns nil when the proxy is ready to serve clients, or why not.
	Ready() error
}

// service implements switchyardv1.ProxyAdminServiceServer on a Proxy. The
// same value serves gRPC and, through grpc-gateway in-process, REST, so both
// go through identical validation and error mapping.
type service struct {
	switchyardv1.UnimplementedProxyAdminServiceServer

	proxy  Proxy
	logger *zap.Logger
}

var _ switchyardv1.ProxyAdminServiceServer = (*service)(nil)

func (s *service) GetStatus(context.Context, *switchyardv1.GetStatusRequest) (*switchyardv1.GetStatusResponse, error) {
	return &switchyardv1.GetStatusResponse{Status: statusToProto(s.proxy.Status())}, nil
}

// Switch passes the caller's context to the proxy, so a caller that gives up
// (deadline, closed connection) lets the proxy stop waiting too; what that
// means for a half-drained switch is the proxy's contract, not this layer's.
//
// Mutations are logged here, success or failure, because this is where a
// remote caller's request ends in this process: the log is the sidecar's
// audit trail of who moved it where.
func (s *service) Switch(ctx context.Context, req *switchyardv1.SwitchRequest) (*switchyardv1.SwitchResponse, error) {
	cluster := req.GetCluster()
	if cluster == "" {
		// Not NotFound: an empty name is a malformed request, not a lookup miss.
		return nil, status.Error(codes.InvalidArgument, "switch: no cluster named")
	}
	rep, err := s.proxy.Switch(ctx, cluster)
	if err != nil {
		err = fmt.Errorf("switch to %q: %w", cluster, err)
		s.logger.Warn("admin: switch refused or failed", zap.String("cluster", cluster), zap.Error(err))
		return nil, toStatus(err)
	}
	s.logger.Info("admin: switch applied",
		zap.String("from", rep.From), zap.String("to", rep.To),
		zap.Duration("duration", rep.Duration()), zap.Int("drained", rep.Drained),
		zap.Int("connectionsClosed", rep.ConnectionsClosed))
	return &switchyardv1.SwitchResponse{Report: reportToProto(rep)}, nil
}

func (s *service) SetGates(_ context.Context, req *switchyardv1.SetGatesRequest) (*switchyardv1.SetGatesResponse, error) {
	g, err := gateFromProto(req)
	if err != nil {
		return nil, toStatus(fmt.Errorf("set gates: %w", err))
	}
	if err := s.proxy.SetGate(g); err != nil {
		err = fmt.Errorf("set gates: %w", err)
		s.logger.Warn("admin: gate refused", zap.Error(err))
		return nil, toStatus(err)
	}
	s.logger.Info("admin: gate set", zap.Int16s("apiKeys", g.APIKeys), zap.Stringer("mode", g.Mode), zap.Int16s("rejectApiKeys", g.RejectKeys),
		zap.Duration("holdBudget", g.HoldBudget), zap.Bool("fetchWaitsForTransactions", g.FetchWaitsForTransactions))
	return &switchyardv1.SetGatesResponse{Gate: gateToProto(g)}, nil
}

func (s *service) ClearGates(context.Context, *switchyardv1.ClearGatesRequest) (*switchyardv1.ClearGatesResponse, error) {
	s.proxy.ClearGate()
	s.logger.Info("admin: gate cleared")
	return &switchyardv1.ClearGatesResponse{}, nil
}

// gateFromProto is GateFromProto for a SetGates request.
func gateFromProto(req *switchyardv1.SetGatesRequest) (proxy.Gate, error) {
	return GateFromProto(&switchyardv1.Gate{ApiKeys: req.GetApiKeys(), Mode: req.GetMode(), HoldBudget: req.GetHoldBudget(),
		RejectApiKeys: req.GetRejectApiKeys(), FetchWaitsForTransactions: req.GetFetchWaitsForTransactions()})
}
