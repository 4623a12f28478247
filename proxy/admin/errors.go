package admin

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/switchyard/switchyard/proxy"
)

// toStatus turns an error from the proxy (possibly wrapped) into a gRPC
// status error. It is the one place that decides codes, and through
// grpc-gateway's default mapping the HTTP status too: NotFound 404,
// InvalidArgument 400, Aborted 409, Unavailable 503, DeadlineExceeded 504,
// Canceled 499, Internal 500. The message is the full error text, so the
// caller sees which step failed.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	return status.Error(codeOf(err), err.Error())
}

func codeOf(err error) codes.Code {
	switch {
	case errors.Is(err, proxy.ErrUnknownCluster):
		return codes.NotFound
	case errors.Is(err, proxy.ErrInvalidGate):
		return codes.InvalidArgument
	case errors.Is(err, proxy.ErrSwitchInProgress):
		// Aborted, not FailedPrecondition: the conflict is with a concurrent
		// operation, and retrying once it has finished is the right move.
		return codes.Aborted
	case errors.Is(err, proxy.ErrClosed):
		return codes.Unavailable
	case errors.Is(err, proxy.ErrUnreachable):
		// The target cluster did not answer: the request was sound and may
		// succeed later, which is what Unavailable tells a caller.
		return codes.Unavailable
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	}
	// An error that already carries a code (from a layer below that speaks
	// gRPC) keeps it.
	if s, ok := status.FromError(err); ok && s.Code() != codes.Unknown {
		return s.Code()
	}
	return codes.Internal
}
