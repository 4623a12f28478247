package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
)

// The tests of `switchyard ctl` run it through run() against fakeControl:
// a real gRPC server on 127.0.0.1:0 implementing the generated
// ControlServiceServer, which records every request, checks the bearer
// token like the control plane does, and streams scripted states for
// WatchCutover.

const testToken = "s3cret"

// watchAttempt is what one WatchCutover stream sends: states, then err
// (nil: the stream ends), or, with hold, nothing more until the client
// goes away.
type watchAttempt struct {
	states []*switchyardv1.Cutover
	err    error
	hold   bool
}

type fakeControl struct {
	switchyardv1.UnimplementedControlServiceServer

	mu       sync.Mutex
	auth     []string // the authorization header of each call
	creates  []*switchyardv1.CreateCutoverRequest
	aborts   []*switchyardv1.AbortCutoverRequest
	declares []*switchyardv1.DeclareStateRequest
	sidecarQ []*switchyardv1.ListSidecarsRequest
	attempts map[string]int // watch streams opened, per id

	// What it answers.
	clusters   []*switchyardv1.Cluster
	sidecars   []*switchyardv1.Sidecar
	mirrors    []*switchyardv1.Mirror
	cutovers   []*switchyardv1.Cutover
	watches    map[string][]watchAttempt
	abortErr   error
	declareErr error
	holding    chan struct{} // if set, told when a watch stream holds
}

// startFakeControl serves f on 127.0.0.1:0 until the test ends and returns
// its address.
func startFakeControl(t *testing.T, f *fakeControl) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := f.authorize(ctx); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := f.authorize(ss.Context()); err != nil {
				return err
			}
			return h(srv, ss)
		}),
	)
	switchyardv1.RegisterControlServiceServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func (f *fakeControl) authorize(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	got := strings.Join(md.Get("authorization"), ",")
	f.mu.Lock()
	f.auth = append(f.auth, got)
	f.mu.Unlock()
	if got != "Bearer "+testToken {
		return status.Error(codes.Unauthenticated, "missing or invalid bearer token")
	}
	return nil
}

func (f *fakeControl) ListClusters(context.Context, *switchyardv1.ListClustersRequest) (*switchyardv1.ListClustersResponse, error) {
	return &switchyardv1.ListClustersResponse{Clusters: f.clusters}, nil
}

func (f *fakeControl) ListSidecars(_ context.Context, req *switchyardv1.ListSidecarsRequest) (*switchyardv1.ListSidecarsResponse, error) {
	f.mu.Lock()
	f.sidecarQ = append(f.sidecarQ, req)
	f.mu.Unlock()
	return &switchyardv1.ListSidecarsResponse{Sidecars: f.sidecars}, nil
}

func (f *fakeControl) ListMirrors(context.Context, *switchyardv1.ListMirrorsRequest) (*switchyardv1.ListMirrorsResponse, error) {
	return &switchyardv1.ListMirrorsResponse{Mirrors: f.mirrors}, nil
}

func (f *fakeControl) CreateCutover(_ context.Context, req *switchyardv1.CreateCutoverRequest) (*switchyardv1.CreateCutoverResponse, error) {
	f.mu.Lock()
	f.creates = append(f.creates, req)
	f.mu.Unlock()
	return &switchyardv1.CreateCutoverResponse{Cutover: &switchyardv1.Cutover{
		Id: "c-1", Spec: req.GetSpec(), Step: switchyardv1.CutoverStep_CUTOVER_STEP_PREFLIGHT, Created: at(0),
	}}, nil
}

func (f *fakeControl) GetCutover(_ context.Context, req *switchyardv1.GetCutoverRequest) (*switchyardv1.GetCutoverResponse, error) {
	for _, c := range f.cutovers {
		if c.GetId() == req.GetId() {
			return &switchyardv1.GetCutoverResponse{Cutover: c}, nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "cutover %s not found", req.GetId())
}

func (f *fakeControl) ListCutovers(context.Context, *switchyardv1.ListCutoversRequest) (*switchyardv1.ListCutoversResponse, error) {
	return &switchyardv1.ListCutoversResponse{Cutovers: f.cutovers}, nil
}

func (f *fakeControl) AbortCutover(_ context.Context, req *switchyardv1.AbortCutoverRequest) (*switchyardv1.AbortCutoverResponse, error) {
	f.mu.Lock()
	f.aborts = append(f.aborts, req)
	f.mu.Unlock()
	if f.abortErr != nil {
		return nil, f.abortErr
	}
	return &switchyardv1.AbortCutoverResponse{Cutover: &switchyardv1.Cutover{
		Id: req.GetId(), Step: switchyardv1.CutoverStep_CUTOVER_STEP_ROLLING_BACK, AbortRequested: true,
	}}, nil
}

func (f *fakeControl) DeclareState(_ context.Context, req *switchyardv1.DeclareStateRequest) (*switchyardv1.DeclareStateResponse, error) {
	f.mu.Lock()
	f.declares = append(f.declares, req)
	f.mu.Unlock()
	if f.declareErr != nil {
		return nil, f.declareErr
	}
	return &switchyardv1.DeclareStateResponse{Version: 12, Sidecars: []string{"orders/orders-0", "orders/orders-1"}}, nil
}

func (f *fakeControl) WatchCutover(req *switchyardv1.WatchCutoverRequest, stream grpc.ServerStreamingServer[switchyardv1.WatchCutoverResponse]) error {
	f.mu.Lock()
	if f.attempts == nil {
		f.attempts = map[string]int{}
	}
	n := f.attempts[req.GetId()]
	f.attempts[req.GetId()]++
	f.mu.Unlock()
	script := f.watches[req.GetId()]
	if n >= len(script) {
		return status.Errorf(codes.NotFound, "cutover %s not found", req.GetId())
	}
	for _, c := range script[n].states {
		if err := stream.Send(&switchyardv1.WatchCutoverResponse{Cutover: c}); err != nil {
			return err
		}
	}
	if script[n].hold {
		if f.holding != nil {
			f.holding <- struct{}{}
		}
		<-stream.Context().Done()
		return stream.Context().Err()
	}
	return script[n].err
}

// ctlRun runs `switchyard ctl args...` through run and returns its exit
// code and output. env is the whole environment.
func ctlRun(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	code = run(ctx, append([]string{"ctl"}, args...), envOf(env), &out, &errOut)
	return code, out.String(), errOut.String()
}

// tokenEnv is an environment holding the right token.
var tokenEnv = map[string]string{envControlToken: testToken}

// t0 is when the scripted cutovers begin.
var t0 = time.Date(2026, 11, 22, 4, 15, 2, 0, time.UTC)

// at is t0 plus ms milliseconds.
func at(ms int) *timestamppb.Timestamp {
	return timestamppb.New(t0.Add(time.Duration(ms) * time.Millisecond))
}

// rec is a step record; end < 0 leaves it running.
func rec(step switchyardv1.CutoverStep, start, end int, detail, errText string) *switchyardv1.StepRecord {
	r := &switchyardv1.StepRecord{Step: step, Started: at(start), Detail: detail, Error: errText}
	if end >= 0 {
		r.Finished = at(end)
	}
	return r
}

func acks(want uint64, applied ...uint64) []*switchyardv1.SidecarAck {
	names := []string{"orders-service/orders-0", "billing/billing-0"}
	out := make([]*switchyardv1.SidecarAck, len(applied))
	for i, a := range applied {
		app, inst, _ := strings.Cut(names[i], "/")
		out[i] = &switchyardv1.SidecarAck{App: app, Instance: inst, Connected: true, WantVersion: want, AppliedVersion: a}
	}
	return out
}

const (
	stPreflight   = switchyardv1.CutoverStep_CUTOVER_STEP_PREFLIGHT
	stGate        = switchyardv1.CutoverStep_CUTOVER_STEP_GATE
	stDrain       = switchyardv1.CutoverStep_CUTOVER_STEP_DRAIN
	stSyncGroups  = switchyardv1.CutoverStep_CUTOVER_STEP_SYNC_GROUPS
	stFlip        = switchyardv1.CutoverStep_CUTOVER_STEP_FLIP
	stRelease     = switchyardv1.CutoverStep_CUTOVER_STEP_RELEASE
	stVerify      = switchyardv1.CutoverStep_CUTOVER_STEP_VERIFY
	stDone        = switchyardv1.CutoverStep_CUTOVER_STEP_DONE
	stRollingBack = switchyardv1.CutoverStep_CUTOVER_STEP_ROLLING_BACK
	stRolledBack  = switchyardv1.CutoverStep_CUTOVER_STEP_ROLLED_BACK
	stFailed      = switchyardv1.CutoverStep_CUTOVER_STEP_FAILED
)

func testSpec() *switchyardv1.CutoverSpec {
	return &switchyardv1.CutoverSpec{
		Selector: &switchyardv1.SidecarSelector{Apps: []string{"orders-service", "billing"}, Labels: map[string]string{"role": "producer"}},
		Source:   "source", Target: "target", Mirror: "orders",
		Groups: []string{"billing"},
		Policy: &switchyardv1.CutoverPolicy{},
	}
}

// doneScript is a cutover that goes all the way: the states a control
// plane streams, some of them several steps apart.
func doneScript(id string) []*switchyardv1.Cutover {
	base := func(step switchyardv1.CutoverStep, updated int, hist ...*switchyardv1.StepRecord) *switchyardv1.Cutover {
		return &switchyardv1.Cutover{Id: id, Spec: testSpec(), Step: step, History: hist, Created: at(0), Updated: at(updated), MirrorLag: 12}
	}
	preflight := rec(stPreflight, 0, 300, "2/2 sidecars connected, mirror lag 12", "")
	gate := rec(stGate, 300, 400, "2/2 sidecars acknowledged version 7", "")
	drain := rec(stDrain, 400, 1400, "in-flight produce answered; mirror caught up", "")
	sync := rec(stSyncGroups, 1400, 1500, "1 group, 3 partitions", "")
	flip := rec(stFlip, 1500, 1600, "2/2 sidecars on target", "")
	release := rec(stRelease, 1600, 1700, "gates lifted", "")
	verify := rec(stVerify, 1700, 2000, "sidecars on target, copy complete", "")

	s1 := base(stPreflight, 0, rec(stPreflight, 0, -1, "", ""))
	s1.Sidecars = acks(0, 0, 0)
	s2 := base(stGate, 300, preflight, rec(stGate, 300, -1, "", ""))
	s2.Sidecars = acks(7, 6, 6)
	s3 := base(stGate, 350, preflight, rec(stGate, 300, -1, "", ""))
	s3.Sidecars = acks(7, 7, 6)
	s4 := base(stDrain, 400, preflight, gate, rec(stDrain, 400, -1, "", ""))
	s4.Sidecars, s4.GatedAt = acks(7, 7, 7), at(400)
	s5 := base(stFlip, 1500, preflight, gate, drain, sync, rec(stFlip, 1500, -1, "", ""))
	s5.Sidecars, s5.GatedAt, s5.MirrorLag = acks(8, 7, 7), at(400), 0
	s6 := base(stVerify, 1700, preflight, gate, drain, sync, flip, release, rec(stVerify, 1700, -1, "", ""))
	s6.Sidecars, s6.GatedAt, s6.ReleasedAt, s6.BlockWindow, s6.MirrorLag = acks(9, 9, 9), at(400), at(1700), durationpb.New(1300*time.Millisecond), 0
	s7 := base(stDone, 2000, preflight, gate, drain, sync, flip, release, verify, rec(stDone, 2000, 2000, "", ""))
	s7.Sidecars, s7.GatedAt, s7.ReleasedAt, s7.BlockWindow, s7.MirrorLag = acks(9, 9, 9), at(400), at(1700), durationpb.New(1300*time.Millisecond), 0
	return []*switchyardv1.Cutover{s1, s2, s3, s4, s5, s6, s7}
}

// rolledBackScript is a cutover aborted in its drain.
func rolledBackScript(id string) []*switchyardv1.Cutover {
	base := func(step switchyardv1.CutoverStep, updated int, hist ...*switchyardv1.StepRecord) *switchyardv1.Cutover {
		return &switchyardv1.Cutover{Id: id, Spec: testSpec(), Step: step, History: hist, Created: at(0), Updated: at(updated),
			MirrorLag: 500, GatedAt: at(400), Sidecars: acks(7, 7, 7)}
	}
	preflight := rec(stPreflight, 0, 300, "2/2 sidecars connected", "")
	gate := rec(stGate, 300, 400, "2/2 sidecars acknowledged version 7", "")
	why := "aborted by operator: mirror too slow"
	s1 := base(stDrain, 400, preflight, gate, rec(stDrain, 400, -1, "", ""))
	s2 := base(stDrain, 1000, preflight, gate, rec(stDrain, 400, -1, "", ""))
	s2.AbortRequested = true
	s3 := base(stRollingBack, 1000, preflight, gate, rec(stDrain, 400, 1000, "", "aborted"), rec(stRollingBack, 1000, -1, "", ""))
	s3.AbortRequested, s3.Error, s3.Sidecars = true, why, acks(8, 7, 7)
	s4 := base(stRolledBack, 1200, preflight, gate, rec(stDrain, 400, 1000, "", "aborted"),
		rec(stRollingBack, 1000, 1200, "2/2 sidecars back on source", ""), rec(stRolledBack, 1200, 1200, "", ""))
	s4.AbortRequested, s4.Error, s4.Sidecars, s4.ReleasedAt = true, why, acks(8, 8, 8), at(1200)
	return []*switchyardv1.Cutover{s1, s2, s3, s4}
}

// TestCtlCutoverStart: every flag of `cutover start` lands in the spec the
// control plane receives; unset policy flags stay unset (server defaults);
// stdout is the new cutover's id; the token goes along as a bearer token.
func TestCtlCutoverStart(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("  "+testToken+"\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want *switchyardv1.CutoverSpec
	}{
		{
			name: "minimal",
			args: []string{"cutover", "start", "--app", "orders-service", "--from", "source", "--to", "target"},
			env:  tokenEnv,
			want: &switchyardv1.CutoverSpec{
				Selector: &switchyardv1.SidecarSelector{Apps: []string{"orders-service"}},
				Source:   "source", Target: "target",
				Policy: &switchyardv1.CutoverPolicy{},
			},
		},
		{
			name: "every flag",
			args: []string{"cutover", "start",
				"--app", "orders-service,billing", "--app", "ledger",
				"--label", "role=producer", "--label", "tier=gold,zone=a",
				"--from", "source", "--to", "target", "--mirror", "orders",
				"--topics", "orders, payments", "--groups", "billing,ledger",
				"--mode", "hold", "--drain-timeout", "45s", "--hold-budget", "1500ms", "--ack-timeout", "2m", "--max-lag", "250"},
			env: tokenEnv,
			want: &switchyardv1.CutoverSpec{
				Selector: &switchyardv1.SidecarSelector{
					Apps:   []string{"orders-service", "billing", "ledger"},
					Labels: map[string]string{"role": "producer", "tier": "gold", "zone": "a"},
				},
				Source: "source", Target: "target", Mirror: "orders",
				Topics: []string{"orders", "payments"},
				Groups: []string{"billing", "ledger"},
				Policy: &switchyardv1.CutoverPolicy{
					GateMode:        "HOLD",
					DrainTimeout:    durationpb.New(45 * time.Second),
					HoldBudget:      durationpb.New(1500 * time.Millisecond),
					AckTimeout:      durationpb.New(2 * time.Minute),
					MaxPreflightLag: 250,
				},
			},
		},
		{
			name: "outbox, global flags after the command, token file",
			args: []string{"cutover", "start", "--app=orders-service", "--from=source", "--to=target", "--outbox",
				"--drain-timeout=10s", "--token-file", tokenFile, "--timeout", "5s"},
			want: &switchyardv1.CutoverSpec{
				Selector: &switchyardv1.SidecarSelector{Apps: []string{"orders-service"}},
				Source:   "source", Target: "target",
				Policy: &switchyardv1.CutoverPolicy{GateMode: "REJECT", DrainTimeout: durationpb.New(10 * time.Second)},
			},
		},
		{
			name: "two-phase timeouts; a zero group drain is kept",
			args: []string{"cutover", "start", "--app", "a", "--from", "s", "--to", "t", "--group-drain-timeout", "0s", "--quiesce-timeout", "3s"},
			env:  tokenEnv,
			want: &switchyardv1.CutoverSpec{
				Selector: &switchyardv1.SidecarSelector{Apps: []string{"a"}},
				Source:   "s", Target: "t",
				Policy: &switchyardv1.CutoverPolicy{GroupDrainTimeout: durationpb.New(0), QuiesceTimeout: durationpb.New(3 * time.Second)},
			},
		},
		{
			name: "outbox and --mode REJECT agree",
			args: []string{"cutover", "start", "--app", "a", "--from", "s", "--to", "t", "--outbox", "--mode", "REJECT"},
			env:  tokenEnv,
			want: &switchyardv1.CutoverSpec{
				Selector: &switchyardv1.SidecarSelector{Apps: []string{"a"}},
				Source:   "s", Target: "t",
				Policy: &switchyardv1.CutoverPolicy{GateMode: "REJECT"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeControl{}
			addr := startFakeControl(t, f)
			code, stdout, stderr := ctlRun(t, tt.env, append([]string{"--server", addr}, tt.args...)...)
			if code != 0 {
				t.Fatalf("exit code %d, want 0; stderr:\n%s", code, stderr)
			}
			if stdout != "c-1\n" {
				t.Errorf("stdout %q, want the id alone: %q", stdout, "c-1\n")
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if len(f.creates) != 1 {
				t.Fatalf("%d CreateCutover calls, want 1", len(f.creates))
			}
			if got := f.creates[0].GetSpec(); !proto.Equal(got, tt.want) {
				t.Errorf("spec sent:\n%s\nwant:\n%s", prototext.Format(got), prototext.Format(tt.want))
			}
			if got := f.auth[0]; got != "Bearer "+testToken {
				t.Errorf("authorization %q, want %q", got, "Bearer "+testToken)
			}
		})
	}
}

// TestCtlUsageErrors: bad flags and arguments exit 2 with a message naming
// what is wrong, before any call.
func TestCtlUsageErrors(t *testing.T) {
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	start := []string{"cutover", "start", "--app", "a", "--from", "s", "--to", "t"}
	with := func(extra ...string) []string { return append(append([]string(nil), start...), extra...) }
	tests := []struct {
		name       string
		args       []string
		code       int
		wantStderr []string
	}{
		{name: "help", args: []string{"--help"}, code: 0, wantStderr: []string{"Usage: switchyard ctl", "cutover start", "-token-file"}},
		{name: "start help", args: []string{"cutover", "start", "--help"}, code: 0, wantStderr: []string{"--outbox is the outbox procedure", "-drain-timeout"}},
		{name: "no command", code: 2, wantStderr: []string{"no command given"}},
		{name: "unknown command", args: []string{"cutovers-please"}, code: 2, wantStderr: []string{`unknown command "cutovers-please"`}},
		{name: "cutover without a command", args: []string{"cutover"}, code: 2, wantStderr: []string{"start, watch, status, list or abort"}},
		{name: "unknown cutover command", args: []string{"cutover", "pause", "c-1"}, code: 2, wantStderr: []string{`unknown command "pause"`}},
		{name: "unknown global flag", args: []string{"--bogus", "clusters"}, code: 2, wantStderr: []string{"-bogus"}},
		{name: "bad output", args: []string{"--output", "yaml", "clusters"}, code: 2, wantStderr: []string{`--output "yaml"`}},
		{name: "zero timeout", args: []string{"clusters", "--timeout", "0s"}, code: 2, wantStderr: []string{"--timeout 0s"}},
		{name: "bad timeout", args: []string{"clusters", "--timeout", "soon"}, code: 2, wantStderr: []string{"-timeout", "soon"}},
		{name: "clusters with an argument", args: []string{"clusters", "all"}, code: 2, wantStderr: []string{`unexpected argument "all"`}},
		{name: "start without --app", args: []string{"cutover", "start", "--from", "s", "--to", "t"}, code: 2, wantStderr: []string{"--app is required"}},
		{name: "start without --from", args: []string{"cutover", "start", "--app", "a", "--to", "t"}, code: 2, wantStderr: []string{"--from is required"}},
		{name: "start without --to", args: []string{"cutover", "start", "--app", "a", "--from", "s"}, code: 2, wantStderr: []string{"--to is required"}},
		{name: "start to the same cluster", args: []string{"cutover", "start", "--app", "a", "--from", "s", "--to", "s"}, code: 2,
			wantStderr: []string{`--from and --to both name "s"`}},
		{name: "bad mode", args: with("--mode", "PARK"), code: 2, wantStderr: []string{`--mode "PARK": want HOLD or REJECT`}},
		{name: "outbox with HOLD", args: with("--outbox", "--mode", "hold"), code: 2, wantStderr: []string{"--outbox gates in REJECT mode"}},
		{name: "hold budget with REJECT", args: with("--outbox", "--hold-budget", "5s"), code: 2, wantStderr: []string{"--hold-budget applies to HOLD gates"}},
		{name: "negative drain timeout", args: with("--drain-timeout", "-1s"), code: 2, wantStderr: []string{"--drain-timeout -1s: must be positive"}},
		{name: "zero ack timeout", args: with("--ack-timeout", "0s"), code: 2, wantStderr: []string{"--ack-timeout 0s: must be positive"}},
		{name: "bad duration", args: with("--hold-budget", "10"), code: 2, wantStderr: []string{"-hold-budget", "10"}},
		{name: "zero max lag", args: with("--max-lag", "0"), code: 2, wantStderr: []string{"--max-lag 0: must be at least 1"}},
		{name: "bad label", args: with("--label", "role"), code: 2, wantStderr: []string{`label "role": want key=value`}},
		{name: "label given twice", args: with("--label", "role=a", "--label", "role=b"), code: 2, wantStderr: []string{`label "role" given twice`}},
		{name: "start with an argument", args: with("now"), code: 2, wantStderr: []string{`unexpected argument "now"`}},
		{name: "status without an id", args: []string{"cutover", "status"}, code: 2, wantStderr: []string{"missing ID"}},
		{name: "watch with two ids", args: []string{"cutover", "watch", "c-1", "c-2"}, code: 2, wantStderr: []string{`unexpected argument "c-2"`}},
		{name: "abort with an unknown flag", args: []string{"cutover", "abort", "c-1", "--why", "x"}, code: 2, wantStderr: []string{"-why"}},
		{name: "empty token file", args: []string{"--token-file", empty, "clusters"}, code: 2, wantStderr: []string{"--token-file " + empty + " is empty"}},
		{name: "missing token file", args: []string{"--token-file", empty + ".nope", "clusters"}, code: 2, wantStderr: []string{"--token-file", "no such file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Nothing listens there: none of these may get as far as a call.
			code, _, stderr := ctlRun(t, map[string]string{envControlAddr: "127.0.0.1:1"}, tt.args...)
			if code != tt.code {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, tt.code, stderr)
			}
			for _, w := range tt.wantStderr {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr does not contain %q:\n%s", w, stderr)
				}
			}
		})
	}
}

// TestCtlWatchLines follows scripted cutovers with stdout not a terminal:
// one line per change, timestamps from the control plane; exit code 0
// for DONE, 1 for ROLLED_BACK and FAILED.
func TestCtlWatchLines(t *testing.T) {
	failed := doneScript("c-3")[:5]
	last := proto.Clone(failed[4]).(*switchyardv1.Cutover)
	last.Step, last.Error = stFailed, "flip: 1/2 sidecars switched; billing/billing-0 did not acknowledge"
	last.History = append(last.History[:len(last.History)-1],
		rec(stFlip, 1500, 11500, "", "billing/billing-0 did not acknowledge version 8 within 10s"), rec(stFailed, 11500, 11500, "", ""))
	failed = append(failed, last)

	tests := []struct {
		name       string
		id         string
		script     []*switchyardv1.Cutover
		code       int
		wantStdout string
		wantStderr string
	}{
		{
			name: "done", id: "c-1", script: doneScript("c-1"), code: 0,
			wantStdout: `cutover c-1: orders-service,billing (role=producer) from source to target, gate HOLD, mirror orders
04:15:02.000Z PREFLIGHT started
04:15:02.000Z PREFLIGHT mirror lag 12 records
04:15:02.300Z PREFLIGHT done in 300ms: 2/2 sidecars connected, mirror lag 12
04:15:02.300Z GATE started
04:15:02.350Z GATE sidecars 1/2 acknowledged version 7
04:15:02.400Z GATE done in 100ms: 2/2 sidecars acknowledged version 7
04:15:02.400Z DRAIN started
04:15:02.400Z DRAIN mirror lag 12 records
04:15:03.400Z DRAIN done in 1.0s: in-flight produce answered; mirror caught up
04:15:03.400Z SYNC_GROUPS started
04:15:03.500Z SYNC_GROUPS done in 100ms: 1 group, 3 partitions
04:15:03.500Z FLIP started
04:15:03.600Z FLIP done in 100ms: 2/2 sidecars on target
04:15:03.600Z RELEASE started
04:15:03.700Z RELEASE done in 100ms: gates lifted
04:15:03.700Z VERIFY started
04:15:03.700Z VERIFY sidecars 2/2 acknowledged version 9
04:15:03.700Z gates released: block window 1.3s
04:15:04.000Z VERIFY done in 300ms: sidecars on target, copy complete
04:15:04.000Z DONE in 2.0s; block window 1.3s
`,
		},
		{
			name: "rolled back", id: "c-2", script: rolledBackScript("c-2"), code: 1,
			wantStdout: `cutover c-2: orders-service,billing (role=producer) from source to target, gate HOLD, mirror orders
04:15:02.000Z PREFLIGHT started
04:15:02.300Z PREFLIGHT done in 300ms: 2/2 sidecars connected
04:15:02.300Z GATE started
04:15:02.400Z GATE done in 100ms: 2/2 sidecars acknowledged version 7
04:15:02.400Z DRAIN started
04:15:02.400Z DRAIN mirror lag 500 records
04:15:03.000Z DRAIN abort requested
04:15:03.000Z DRAIN failed after 600ms: aborted
04:15:03.000Z ROLLING_BACK started
04:15:03.000Z ROLLING_BACK error: aborted by operator: mirror too slow
04:15:03.200Z ROLLING_BACK done in 200ms: 2/2 sidecars back on source
04:15:03.200Z ROLLED_BACK: aborted by operator: mirror too slow
`,
			wantStderr: "switchyard ctl: cutover c-2 rolled back: aborted by operator: mirror too slow; the applications run on source, as before\n",
		},
		{
			name: "failed", id: "c-3", script: failed, code: 1,
			wantStderr: "switchyard ctl: cutover c-3 FAILED after the point of no return: flip: 1/2 sidecars switched; billing/billing-0 did not acknowledge; it needs an operator\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeControl{watches: map[string][]watchAttempt{tt.id: {{states: tt.script}}}}
			addr := startFakeControl(t, f)
			code, stdout, stderr := ctlRun(t, tokenEnv, "--server", addr, "cutover", "watch", tt.id)
			if code != tt.code {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, tt.code, stderr)
			}
			if tt.wantStdout != "" && stdout != tt.wantStdout {
				t.Errorf("stdout:\n%s\nwant:\n%s", stdout, tt.wantStdout)
			}
			if stderr != tt.wantStderr {
				t.Errorf("stderr %q, want %q", stderr, tt.wantStderr)
			}
		})
	}
}

// TestCtlWatchStopsAtTheEnd: a watch returns once the cutover has ended,
// even if the stream stays open.
func TestCtlWatchStopsAtTheEnd(t *testing.T) {
	f := &fakeControl{watches: map[string][]watchAttempt{"c-1": {{states: doneScript("c-1"), hold: true}}}}
	addr := startFakeControl(t, f)
	code, stdout, stderr := ctlRun(t, tokenEnv, "--server", addr, "cutover", "watch", "c-1")
	if code != 0 || !strings.HasSuffix(stdout, "DONE in 2.0s; block window 1.3s\n") {
		t.Fatalf("exit code %d, stdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
}

// TestCtlWatchInterrupted: an interrupted watch (ctx, as Ctrl-C cancels
// it) says the cutover goes on without it and exits 1.
func TestCtlWatchInterrupted(t *testing.T) {
	f := &fakeControl{
		watches: map[string][]watchAttempt{"c-1": {{states: doneScript("c-1")[:2], hold: true}}},
		holding: make(chan struct{}, 1),
	}
	addr := startFakeControl(t, f)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout syncBuffer
	var stderr bytes.Buffer
	go func() {
		select {
		case <-f.holding:
		case <-time.After(30 * time.Second):
		}
		// Interrupt once both states are shown.
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
			if strings.HasSuffix(stdout.String(), "GATE started\n") {
				break
			}
		}
		cancel()
	}()
	code := run(ctx, []string{"ctl", "--server", addr, "cutover", "watch", "c-1"}, envOf(tokenEnv), &stdout, &stderr)
	want := "switchyard ctl: stopped watching cutover c-1 in step GATE; it goes on without this watch (switchyard ctl cutover watch c-1)\n"
	if code != 1 || stderr.String() != want {
		t.Errorf("exit code %d, stderr %q; want 1, %q", code, stderr.String(), want)
	}
	if !strings.HasSuffix(stdout.String(), "GATE started\n") {
		t.Errorf("stdout:\n%s", stdout.String())
	}
}

// syncBuffer is a bytes.Buffer safe to read while run writes to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestCtlWatchEndsEarly: a stream the control plane closes before the
// cutover ended is an error, not success.
func TestCtlWatchEndsEarly(t *testing.T) {
	f := &fakeControl{watches: map[string][]watchAttempt{"c-1": {{states: doneScript("c-1")[:3]}}}}
	addr := startFakeControl(t, f)
	code, _, stderr := ctlRun(t, tokenEnv, "--server", addr, "cutover", "watch", "c-1")
	if code != 1 || !strings.Contains(stderr, "ended the stream in step GATE") {
		t.Fatalf("exit code %d, stderr:\n%s", code, stderr)
	}
}

// TestCtlWatchReconnects: a stream broken by UNAVAILABLE (a control plane
// restarting) is opened again, and the display goes on from the new state.
func TestCtlWatchReconnects(t *testing.T) {
	script := doneScript("c-1")
	f := &fakeControl{watches: map[string][]watchAttempt{"c-1": {
		{states: script[:3], err: status.Error(codes.Unavailable, "control plane shutting down")},
		{states: script[3:]},
	}}}
	addr := startFakeControl(t, f)
	code, stdout, stderr := ctlRun(t, tokenEnv, "--server", addr, "cutover", "watch", "c-1")
	if code != 0 {
		t.Fatalf("exit code %d; stderr:\n%s", code, stderr)
	}
	for _, w := range []string{
		"GATE sidecars 1/2 acknowledged version 7\nconnection to " + addr + " lost (control plane shutting down); reconnecting\n04:15:02.400Z GATE done in 100ms",
		"DONE in 2.0s",
	} {
		if !strings.Contains(stdout, w) {
			t.Errorf("stdout does not contain %q:\n%s", w, stdout)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.attempts["c-1"] != 2 {
		t.Errorf("%d watch streams, want 2", f.attempts["c-1"])
	}
}

// TestCtlWatchJSON: --output json prints each state as one protojson
// object per line.
func TestCtlWatchJSON(t *testing.T) {
	script := doneScript("c-1")
	f := &fakeControl{watches: map[string][]watchAttempt{"c-1": {{states: script}}}}
	addr := startFakeControl(t, f)
	code, stdout, stderr := ctlRun(t, tokenEnv, "--server", addr, "cutover", "watch", "c-1", "--output", "json")
	if code != 0 {
		t.Fatalf("exit code %d; stderr:\n%s", code, stderr)
	}
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if len(lines) != len(script) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(script), stdout)
	}
	for i, l := range lines {
		var resp switchyardv1.WatchCutoverResponse
		if err := protojson.Unmarshal([]byte(l), &resp); err != nil {
			t.Fatalf("line %d: %v\n%s", i, err, l)
		}
		if !proto.Equal(resp.GetCutover(), script[i]) {
			t.Errorf("line %d decodes to\n%s\nwant\n%s", i, prototext.Format(resp.GetCutover()), prototext.Format(script[i]))
		}
	}
	if !strings.Contains(lines[0], `"mirrorLag":"12"`) || !strings.Contains(lines[0], `"abortRequested":false`) {
		t.Errorf("want the REST gateway's JSON (lowerCamelCase, unpopulated fields present):\n%s", lines[0])
	}
}

// TestCtlStartWatch: start --watch prints the id, then follows the new
// cutover to its end.
func TestCtlStartWatch(t *testing.T) {
	tests := []struct {
		name   string
		script []*switchyardv1.Cutover
		code   int
	}{
		{name: "done", script: doneScript("c-1"), code: 0},
		{name: "rolled back", script: rolledBackScript("c-1"), code: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeControl{watches: map[string][]watchAttempt{"c-1": {{states: tt.script}}}}
			addr := startFakeControl(t, f)
			code, stdout, stderr := ctlRun(t, tokenEnv, "--server", addr,
				"cutover", "start", "--app", "orders-service", "--from", "source", "--to", "target", "--watch")
			if code != tt.code {
				t.Fatalf("exit code %d, want %d; stderr:\n%s", code, tt.code, stderr)
			}
			if !strings.HasPrefix(stdout, "c-1\ncutover c-1: ") {
				t.Errorf("stdout does not begin with the id, then the watch:\n%s", stdout)
			}
		})
	}
}

// TestCtlAuth: the bearer token comes from --token-file or
// SWITCHYARD_CONTROL_TOKEN; a refused or missing token is an error that
// says how to give one.
func TestCtlAuth(t *testing.T) {
	dir := t.TempDir()
	wrongFile := filepath.Join(dir, "wrong")
	if err := os.WriteFile(wrongFile, []byte("nope\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rightFile := filepath.Join(dir, "right")
	if err := os.WriteFile(rightFile, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		args       []string
		env        map[string]string
		code       int
		wantAuth   string
		wantStderr []string
	}{
		{name: "token from the environment", env: tokenEnv, code: 0, wantAuth: "Bearer " + testToken},
		{name: "token file wins over the environment", args: []string{"--token-file", rightFile},
			env: map[string]string{envControlToken: "nope"}, code: 0, wantAuth: "Bearer " + testToken},
		{name: "wrong token in the environment", env: map[string]string{envControlToken: "nope"}, code: 1, wantAuth: "Bearer nope",
			wantStderr: []string{"switchyard ctl: clusters: UNAUTHENTICATED: missing or invalid bearer token (the token from SWITCHYARD_CONTROL_TOKEN was refused: check --token-file"}},
		{name: "wrong token file", args: []string{"--token-file", wrongFile}, code: 1, wantAuth: "Bearer nope",
			wantStderr: []string{"UNAUTHENTICATED", "the token from --token-file " + wrongFile + " was refused"}},
		{name: "no token", code: 1, wantAuth: "",
			wantStderr: []string{"UNAUTHENTICATED", "no token was sent: give the control plane's token with --token-file PATH or SWITCHYARD_CONTROL_TOKEN"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeControl{clusters: []*switchyardv1.Cluster{{Name: "source", Bootstrap: []string{"kafka-1:9092"}}}}
			addr := startFakeControl(t, f)
			code, _, stderr := ctlRun(t, tt.env, append([]string{"--server", addr, "clusters"}, tt.args...)...)
			if code != tt.code {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, tt.code, stderr)
			}
			for _, w := range tt.wantStderr {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr does not contain %q:\n%s", w, stderr)
				}
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if len(f.auth) != 1 || f.auth[0] != tt.wantAuth {
				t.Errorf("authorization headers %q, want [%q]", f.auth, tt.wantAuth)
			}
		})
	}
}

// TestCtlAbort: the id and reason reach the control plane; a refusal is
// printed as code and message.
func TestCtlAbort(t *testing.T) {
	f := &fakeControl{}
	addr := startFakeControl(t, f)
	code, stdout, stderr := ctlRun(t, tokenEnv, "--server", addr, "cutover", "abort", "c-7", "--reason", "mirror too slow")
	if code != 0 {
		t.Fatalf("exit code %d; stderr:\n%s", code, stderr)
	}
	if want := "cutover c-7: abort requested in step ROLLING_BACK; it rolls back (switchyard ctl cutover watch c-7)\n"; stdout != want {
		t.Errorf("stdout %q, want %q", stdout, want)
	}
	f.mu.Lock()
	got := f.aborts[0]
	f.mu.Unlock()
	if want := (&switchyardv1.AbortCutoverRequest{Id: "c-7", Reason: "mirror too slow"}); !proto.Equal(got, want) {
		t.Errorf("abort request %v, want %v", got, want)
	}

	f = &fakeControl{abortErr: status.Error(codes.FailedPrecondition, "the gates are released; the cutover can no longer roll back")}
	addr = startFakeControl(t, f)
	code, _, stderr = ctlRun(t, tokenEnv, "--server", addr, "cutover", "abort", "c-7")
	if code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if want := "switchyard ctl: cutover abort: FAILED_PRECONDITION: the gates are released; the cutover can no longer roll back\n"; stderr != want {
		t.Errorf("stderr %q, want %q", stderr, want)
	}
}

// TestCtlSidecarsDeclare: `sidecars declare` sends the selector and the
// cluster, prints what was declared, and reports a refusal.
func TestCtlSidecarsDeclare(t *testing.T) {
	f := &fakeControl{}
	addr := startFakeControl(t, f)
	code, stdout, stderr := ctlRun(t, tokenEnv, "--server", addr, "sidecars", "declare", "--app", "orders,billing", "--label", "role=producer", "--active", "target")
	if code != 0 {
		t.Fatalf("exit code %d; stderr:\n%s", code, stderr)
	}
	if want := "declared orders,billing on target, no gate, as version 12; 2 connected sidecars covered\n"; stdout != want {
		t.Errorf("stdout %q, want %q", stdout, want)
	}
	f.mu.Lock()
	got := f.declares[0]
	f.mu.Unlock()
	want := &switchyardv1.DeclareStateRequest{Selector: &switchyardv1.SidecarSelector{Apps: []string{"orders", "billing"},
		Labels: map[string]string{"role": "producer"}}, ActiveCluster: "target"}
	if !proto.Equal(got, want) {
		t.Errorf("declare request %v, want %v", got, want)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"sidecars", "declare", "--active", "target"}, "--app is required"},
		{[]string{"sidecars", "declare", "--app", "orders"}, "--active is required"},
		{[]string{"sidecars", "declare", "--app", "orders", "--active", "target", "extra"}, `unexpected argument "extra"`},
	} {
		if code, _, stderr := ctlRun(t, tokenEnv, append([]string{"--server", addr}, tc.args...)...); code != 2 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%q: exit code %d, stderr %q; want 2 and %q", tc.args, code, stderr, tc.want)
		}
	}

	f = &fakeControl{declareErr: status.Error(codes.FailedPrecondition, `sidecar orders/orders-0 runs on cluster "source", not "target"`)}
	addr = startFakeControl(t, f)
	code, _, stderr = ctlRun(t, tokenEnv, "--server", addr, "sidecars", "declare", "--app", "orders", "--active", "target")
	if want := "switchyard ctl: sidecars declare: FAILED_PRECONDITION: sidecar orders/orders-0 runs on cluster \"source\", not \"target\"\n"; code != 1 || stderr != want {
		t.Errorf("refused: exit code %d, stderr %q; want 1, %q", code, stderr, want)
	}
}

// TestCtlErrors: an unreachable control plane and an unknown cutover.
func TestCtlErrors(t *testing.T) {
	code, _, stderr := ctlRun(t, map[string]string{envControlAddr: freeAddr(t)}, "cutover", "list")
	if code != 1 || !strings.Contains(stderr, "cutover list: UNAVAILABLE") || !strings.Contains(stderr, "is the control plane listening on 127.0.0.1:") {
		t.Errorf("nothing listening: exit code %d, stderr:\n%s", code, stderr)
	}
	addr := startFakeControl(t, &fakeControl{})
	for _, cmd := range []string{"status", "watch"} {
		code, _, stderr = ctlRun(t, tokenEnv, "--server", addr, "cutover", cmd, "c-9")
		if want := "switchyard ctl: cutover " + cmd + ": NOT_FOUND: cutover c-9 not found\n"; code != 1 || stderr != want {
			t.Errorf("%s: exit code %d, stderr %q; want 1, %q", cmd, code, stderr, want)
		}
	}
}

// TestCtlTables: the text output of the listing commands, column by
// column.
func TestCtlTables(t *testing.T) {
	done := doneScript("c-20261122-041502-3f9a")[6]
	rolled := rolledBackScript("c-20261122-035900-77aa")[3]
	rolled.Spec.Policy.GateMode = "REJECT"
	f := &fakeControl{
		clusters: []*switchyardv1.Cluster{
			{Name: "source", Bootstrap: []string{"kafka-1:9092", "kafka-2:9092"}},
			{Name: "target", Bootstrap: []string{"b-1.msk.example:9092"}},
		},
		mirrors: []*switchyardv1.Mirror{{
			Name: "orders", Source: "source", Target: "target", Ready: true,
			Partitions: []*switchyardv1.MirrorPartition{
				{Topic: "orders", Partition: 0, LagRecords: 40, LagSeconds: 1.5},
				{Topic: "orders", Partition: 1, LagRecords: 2, LagSeconds: 0.2, Failing: true, LastError: "MESSAGE_TOO_LARGE"},
				{Topic: "app-store-repartition", Partition: 0, LostOffsets: 120},
				{Topic: "app-store-repartition", Partition: 1, LostOffsets: 30},
			},
			TopicErrors: map[string]string{"payments": "target has 6 partitions, source 3"},
		}},
		sidecars: []*switchyardv1.Sidecar{
			{
				Identity:  &switchyardv1.SidecarIdentity{App: "orders-service", Instance: "orders-0", Labels: map[string]string{"role": "producer", "zone": "a"}},
				Connected: true, AppliedVersion: 7,
				Desired: &switchyardv1.DesiredState{Version: 8, ActiveCluster: "target"},
				Status:  &switchyardv1.ProxyStatus{ActiveCluster: "source", Gate: &switchyardv1.Gate{ApiKeys: []int32{0, 1}, Mode: "HOLD"}},
			},
			{
				Identity:       &switchyardv1.SidecarIdentity{App: "orders-service", Instance: "orders-1"},
				AppliedVersion: 3, ApplyError: "unknown cluster \"target\"",
				Desired: &switchyardv1.DesiredState{Version: 3, ActiveCluster: "source"},
				Status:  &switchyardv1.ProxyStatus{ActiveCluster: "source"},
			},
			{
				Identity:  &switchyardv1.SidecarIdentity{App: "orders-service", Instance: "orders-2"},
				Connected: true, AppliedVersion: 9, ApplyError: "desired version 0: older than the applied version 9; keeping it",
				Desired: &switchyardv1.DesiredState{},
				Status:  &switchyardv1.ProxyStatus{ActiveCluster: "target"},
			},
		},
		cutovers: []*switchyardv1.Cutover{done, rolled},
	}
	addr := startFakeControl(t, f)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "clusters", args: []string{"clusters"}, want: `NAME    BOOTSTRAP
source  kafka-1:9092,kafka-2:9092
target  b-1.msk.example:9092
`},
		{name: "mirrors", args: []string{"mirrors"}, want: `NAME    SOURCE  TARGET  READY  PARTITIONS  LAG RECORDS  MAX LAG  FAILING  ERROR
orders  source  target  yes    4           42           1.5s     1        -

mirror orders: topic payments not mirrored: target has 6 partitions, source 3
mirror orders: 150 source offsets of 2 partitions were deleted on the source before they were mirrored (skipped: gap policy continue)
`},
		{name: "sidecars", args: []string{"sidecars", "--app", "orders-service"}, want: `APP             INSTANCE  LABELS                CONNECTED  CLUSTER  WANTED  GATE                VERSION  LAST SEEN  ERROR
orders-service  orders-0  role=producer,zone=a  yes        source   target  HOLD Produce,Fetch  7/8      -          -
orders-service  orders-1  -                     no         source   source  -                   3/3      -          unknown cluster "target"
orders-service  orders-2  -                     yes        target   -       -                   9/0      -          diverged: runs a version this control plane did not issue it (sidecars declare)
`},
		{name: "cutover list", args: []string{"cutover", "list"}, want: `ID                      APPS                                    FROM    TO      MODE    STEP         CREATED               TOOK  BLOCK WINDOW  ERROR
c-20261122-041502-3f9a  orders-service,billing (role=producer)  source  target  HOLD    DONE         2026-11-22T04:15:02Z  2.0s  1.3s          -
c-20261122-035900-77aa  orders-service,billing (role=producer)  source  target  REJECT  ROLLED_BACK  2026-11-22T04:15:02Z  1.2s  800ms         aborted by operator: mirror too slow
`},
		{name: "cutover status", args: []string{"cutover", "status", "c-20261122-041502-3f9a"}, want: `cutover c-20261122-041502-3f9a  DONE  2.0s
  orders-service,billing (role=producer)  source → target  gate HOLD  mirror orders

  ✓ PREFLIGHT    300ms  2/2 sidecars connected, mirror lag 12
  ✓ GATE         100ms  2/2 sidecars acknowledged version 7
  ✓ DRAIN        1.0s   in-flight produce answered; mirror caught up
  ✓ SYNC_GROUPS  100ms  1 group, 3 partitions
  ✓ FLIP         100ms  2/2 sidecars on target
  ✓ RELEASE      100ms  gates lifted
  ✓ VERIFY       300ms  sidecars on target, copy complete
  ✓ DONE

  sidecars  2/2 applied
    orders-service/orders-0  connected  applied 9/9  ✓
    billing/billing-0        connected  applied 9/9  ✓

  mirror lag    0 records
  block window  1.3s (gated 04:15:02.400Z, released 04:15:03.700Z)
`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := ctlRun(t, tokenEnv, append([]string{"--server", addr}, tt.args...)...)
			if code != 0 {
				t.Fatalf("exit code %d; stderr:\n%s", code, stderr)
			}
			if stdout != tt.want {
				t.Errorf("stdout:\n%s\nwant:\n%s", stdout, tt.want)
			}
		})
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.sidecarQ) != 1 || f.sidecarQ[0].GetApp() != "orders-service" {
		t.Errorf("ListSidecars requests %v, want one for orders-service", f.sidecarQ)
	}
}

// TestCtlJSON: --output json prints the response as protojson, wherever
// the flag stands; it decodes to what the control plane sent.
func TestCtlJSON(t *testing.T) {
	cut := doneScript("c-1")[6]
	f := &fakeControl{
		clusters: []*switchyardv1.Cluster{{Name: "source", Bootstrap: []string{"kafka-1:9092"}}},
		cutovers: []*switchyardv1.Cutover{cut},
	}
	addr := startFakeControl(t, f)
	tests := []struct {
		name string
		args []string
		got  proto.Message
		want proto.Message
	}{
		{name: "clusters", args: []string{"--output", "json", "clusters"},
			got: &switchyardv1.ListClustersResponse{}, want: &switchyardv1.ListClustersResponse{Clusters: f.clusters}},
		{name: "cutover list", args: []string{"cutover", "list", "--output=json"},
			got: &switchyardv1.ListCutoversResponse{}, want: &switchyardv1.ListCutoversResponse{Cutovers: f.cutovers}},
		{name: "cutover status", args: []string{"cutover", "status", "--output", "json", "c-1"},
			got: &switchyardv1.GetCutoverResponse{}, want: &switchyardv1.GetCutoverResponse{Cutover: cut}},
		{name: "cutover start", args: []string{"cutover", "start", "--app", "a", "--from", "s", "--to", "t", "--output", "json"},
			got: &switchyardv1.CreateCutoverResponse{}, want: &switchyardv1.CreateCutoverResponse{Cutover: &switchyardv1.Cutover{
				Id: "c-1", Step: stPreflight, Created: at(0),
				Spec: &switchyardv1.CutoverSpec{Selector: &switchyardv1.SidecarSelector{Apps: []string{"a"}}, Source: "s", Target: "t", Policy: &switchyardv1.CutoverPolicy{}},
			}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := ctlRun(t, tokenEnv, append([]string{"--server", addr}, tt.args...)...)
			if code != 0 {
				t.Fatalf("exit code %d; stderr:\n%s", code, stderr)
			}
			if strings.Count(stdout, "\n") != 1 {
				t.Errorf("want one line:\n%s", stdout)
			}
			if err := protojson.Unmarshal([]byte(stdout), tt.got); err != nil {
				t.Fatalf("%v:\n%s", err, stdout)
			}
			if !proto.Equal(tt.got, tt.want) {
				t.Errorf("decoded\n%s\nwant\n%s", prototext.Format(tt.got), prototext.Format(tt.want))
			}
		})
	}
}

// TestGateString: the GATE column names each key's mode, reject keys apart.
func TestGateString(t *testing.T) {
	for _, tt := range []struct {
		g    *switchyardv1.Gate
		want string
	}{
		{nil, "-"},
		{&switchyardv1.Gate{}, "-"},
		{&switchyardv1.Gate{ApiKeys: []int32{0, 1}, Mode: "HOLD"}, "HOLD Produce,Fetch"},
		{&switchyardv1.Gate{ApiKeys: []int32{0}, Mode: "HOLD", RejectApiKeys: []int32{1}}, "HOLD Produce; REJECT Fetch"},
		{&switchyardv1.Gate{RejectApiKeys: []int32{1, 8}}, "REJECT Fetch,OffsetCommit"},
		{&switchyardv1.Gate{ApiKeys: []int32{30000}, Mode: "REJECT"}, "REJECT 30000"},
	} {
		if got := gateString(tt.g); got != tt.want {
			t.Errorf("gateString(%v) = %q, want %q", tt.g, got, tt.want)
		}
	}
}

// TestPrintCoverage: the units table shows each unit's phase, role, apps,
// sidecar count, writes and groups, and the warnings follow it.
func TestPrintCoverage(t *testing.T) {
	var b strings.Builder
	printCoverage(&b, &switchyardv1.CutoverCoverage{
		Units: []*switchyardv1.CutoverUnit{
			{Id: "u1", Phase: 1, Role: "producer", Apps: []string{"orders"}, Sidecars: []string{"orders/0", "orders/1"}, Writes: []string{"orders"}},
			{Id: "u2", Phase: 2, Role: "pipeline", Apps: []string{"wc"}, Sidecars: []string{"wc/0"}, Writes: []string{"out", "wc-repartition"}, Groups: []string{"wc"}, Outcome: "target"},
		},
		Warnings: []string{"r read [t] without a consumer group"},
	})
	got := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	want := [][]string{
		{"UNIT", "PHASE", "ROLE", "APPS", "SIDECARS", "WRITES", "GROUPS", "OUTCOME"},
		{"u1", "1", "producer", "orders", "2", "orders", "-", "-"},
		{"u2", "2", "pipeline", "wc", "1", "out,wc-repartition", "wc", "target"},
	}
	if len(got) != 4 {
		t.Fatalf("got %d lines:\n%s", len(got), b.String())
	}
	for i, w := range want {
		if f := strings.Fields(got[i]); !slices.Equal(f, w) {
			t.Errorf("line %d: %q, want fields %q", i, got[i], w)
		}
	}
	if got[3] != "warning: r read [t] without a consumer group" {
		t.Errorf("warning line %q", got[3])
	}
	b.Reset()
	printCoverage(&b, nil)
	if b.Len() != 0 {
		t.Errorf("no coverage printed %q", b.String())
	}
}
