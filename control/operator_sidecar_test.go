package control

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
	"github.com/switchyard/switchyard/internal/tlsfiles/tlstest"
)

// TestOperatorCredentialsRefusedToSidecars: on a listener beyond
// loopback, a sidecar stream that authenticates with an operator
// credential — the legacy tokenFile token every sidecar used to hold — is
// refused, so an operator token never has to sit beside the sidecars.
// Sidecar credentials connect, and operators still operate.
// allowOperatorSidecars lets them in, each logged as a warning.
func TestOperatorCredentialsRefusedToSidecars(t *testing.T) {
	pki := newPKI(t)
	// claim opens a stream as orders/instance and returns the error of its
	// first Recv (nil: accepted), then closes it.
	claim := func(sp *securePlane, cert tlstest.Paths, token, instance string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		stream, err := switchyardv1.NewSidecarServiceClient(sp.dial(t, cert, token)).Connect(ctx)
		if err != nil {
			return err
		}
		// A refused stream may be over before this is sent: Recv tells.
		_ = stream.Send(&switchyardv1.ConnectRequest{Identity: &switchyardv1.SidecarIdentity{App: "orders", Instance: instance},
			Status: &switchyardv1.ProxyStatus{ActiveCluster: "source"}})
		_, err = stream.Recv()
		return err
	}
	none := tlstest.Paths{}

	cfg := secureConfig(pki, "")
	cfg.Listen = "0.0.0.0:9180"
	sp := startSecurePlane(t, cfg, pki)
	for _, tc := range []struct {
		name     string
		cert     tlstest.Paths
		token    string
		instance string
		want     codes.Code
	}{
		{"the legacy token", none, legacySecret, "shop/orders-2", codes.PermissionDenied},
		{"a named operator token", none, opsSecret, "shop/orders-3", codes.PermissionDenied},
		{"an operator certificate", pki.alice, "", "shop/orders-4", codes.PermissionDenied},
		{"the namespace's sidecar token", none, shopSecret, "shop/orders-5", codes.OK},
		{"a bound sidecar certificate", pki.pod1, "", "shop/orders-1", codes.OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := claim(sp, tc.cert, tc.token, tc.instance)
			if status.Code(err) != tc.want {
				t.Fatalf("sidecar stream: %v, want %v", err, tc.want)
			}
			if tc.want == codes.PermissionDenied && !strings.Contains(err.Error(), "has role operator, which sidecars may not use") {
				t.Errorf("refusal %q does not say why", err)
			}
		})
	}
	if sp.logs.FilterMessageSnippet("sidecar stream refused: an operator credential").Len() != 3 {
		t.Errorf("refusals logged: %d, want 3", sp.logs.FilterMessageSnippet("sidecar stream refused: an operator credential").Len())
	}
	// Operators still operate.
	if _, err := sp.client.ListCutovers(sp.authed(), &switchyardv1.ListCutoversRequest{}); err != nil {
		t.Errorf("operator read: %v", err)
	}

	cfg.AllowOperatorSidecars = true
	allowed := startSecurePlane(t, cfg, pki)
	if allowed.logs.FilterMessageSnippet("allowOperatorSidecars").FilterLevelExact(zapcore.WarnLevel).Len() != 1 {
		t.Errorf("no warning at start about allowOperatorSidecars")
	}
	if err := claim(allowed, none, legacySecret, "shop/orders-2"); err != nil {
		t.Fatalf("legacy token, allowOperatorSidecars: %v", err)
	}
	if allowed.logs.FilterMessageSnippet("a sidecar connects with an operator credential").FilterLevelExact(zapcore.WarnLevel).Len() != 1 {
		t.Errorf("the operator sidecar's stream was not logged as a warning")
	}
	assertNoSecrets(t, sp, pki)
	assertNoSecrets(t, allowed, pki)
}

// TestNoSidecarCredentialWarned: a control plane beyond loopback whose
// only credential is an operator token says at start that no sidecar can
// connect (an install upgraded without sidecar tokens).
func TestNoSidecarCredentialWarned(t *testing.T) {
	pki := newPKI(t)
	cfg := ServerConfig{Listen: "0.0.0.0:9180", Token: legacySecret, AllowPlaintextTokens: true}
	sp := startSecurePlane(t, cfg, pki)
	if sp.logs.FilterMessageSnippet("no sidecar can connect").FilterLevelExact(zapcore.WarnLevel).Len() != 1 {
		t.Errorf("no warning that no sidecar can connect")
	}
}
