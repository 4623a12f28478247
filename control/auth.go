package control

import (
	"context"
	"crypto/subtle"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// ctxMetadata is the incoming gRPC metadata of a call (for REST calls, the
// gateway puts the HTTP headers there).
type ctxMetadata = metadata.MD

func incoming(ctx context.Context) ctxMetadata {
	md, _ := metadata.FromIncomingContext(ctx)
	return md
}

// authorizer checks bearer tokens. With no token configured, every call
// is allowed (the control plane then listens on loopback only, see
// Config.Validate).
type authorizer struct {
	token string
}

// check requires "authorization: Bearer <token>".
func (a authorizer) check(md ctxMetadata) error {
	if a.token == "" {
		return nil
	}
	vals := md.Get("authorization")
	if len(vals) == 0 {
		return status.Error(codes.Unauthenticated, "missing bearer token (authorization: Bearer <token>)")
	}
	got, ok := strings.CutPrefix(vals[0], "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(a.token)) != 1 {
		return status.Error(codes.Unauthenticated, "invalid bearer token")
	}
	return nil
}
