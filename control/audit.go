package control

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// AuditEntry is one line of the audit log: who made a mutating call, what
// it asked, when, and how it ended. It never holds a credential: Who is a
// token's configured name or a certificate identity.
type AuditEntry struct {
	Time time.Time `json:"time"`
	// Who: "token <name>", "certificate <identity>" or "anonymous".
	Who  string `json:"who"`
	Role string `json:"role"`
	// Remote is the caller's address.
	Remote string `json:"remote,omitempty"`
	// Method is the ControlService method, e.g. "CreateCutover".
	Method string `json:"method"`
	// Request summarises the request (the cutover spec; the id and reason
	// of an abort).
	Request json.RawMessage `json:"request,omitempty"`
	// Outcome is the gRPC code: "OK", "PermissionDenied", ...
	Outcome string `json:"outcome"`
	Error   string `json:"error,omitempty"`
	// Cutover is the id of the cutover created or aborted.
	Cutover string `json:"cutover,omitempty"`
}

// auditLog writes AuditEntries as JSON lines to a file (when configured)
// and to the zap log. record is safe for concurrent use.
type auditLog struct {
	log *zap.Logger

	mu sync.Mutex
	f  *os.File
}

// openAudit opens (creating, appending) path; "" logs through zap only.
func openAudit(path string, log *zap.Logger) (*auditLog, error) {
	a := &auditLog{log: log}
	if path == "" {
		return a, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("auditFile: %w", err)
	}
	a.f = f
	return a, nil
}

// record writes one entry for a call that ended with err. A failed write
// to the file is logged; the call it describes has already happened.
func (a *auditLog) record(ctx context.Context, who principal, method string, request any, cutover string, err error) {
	e := AuditEntry{Time: time.Now().UTC(), Who: who.String(), Role: who.role.String(), Method: method,
		Outcome: status.Code(err).String(), Cutover: cutover}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		e.Remote = p.Addr.String()
	}
	if err != nil {
		e.Error = status.Convert(err).Message()
	}
	if request != nil {
		if b, merr := marshalRequest(request); merr == nil {
			e.Request = b
		}
	}
	line, merr := json.Marshal(e)
	if merr != nil {
		a.log.Error("audit: encode entry", zap.Error(merr))
		return
	}
	fields := []zap.Field{zap.String("who", e.Who), zap.String("role", e.Role), zap.String("method", method),
		zap.String("remote", e.Remote), zap.String("outcome", e.Outcome), zap.String("cutover", cutover)}
	if len(e.Request) > 0 {
		fields = append(fields, zap.String("request", string(e.Request)))
	}
	if e.Error != "" {
		fields = append(fields, zap.String("error", e.Error))
	}
	if status.Code(err) == codes.OK {
		a.log.Info("audit", fields...)
	} else {
		a.log.Warn("audit", fields...)
	}
	if a.f == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, werr := a.f.Write(append(line, '\n')); werr != nil {
		a.log.Error("audit: write audit file", zap.String("file", a.f.Name()), zap.Error(werr))
	}
}

// marshalRequest encodes a proto message as protojson, anything else as JSON.
func marshalRequest(v any) (json.RawMessage, error) {
	if m, ok := v.(proto.Message); ok {
		return protojson.Marshal(m)
	}
	return json.Marshal(v)
}

// Close closes the file.
func (a *auditLog) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.f == nil {
		return nil
	}
	err := a.f.Close()
	a.f = nil
	return err
}
