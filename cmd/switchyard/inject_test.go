package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestRunInjectServesReviews runs `switchyard inject` on loopback with a
// self-signed certificate and posts a recorded AdmissionReview to it.
func TestRunInjectServesReviews(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := writeSelfSigned(t, dir)
	cfgFile := filepath.Join(dir, "injector.yaml")
	if err := os.WriteFile(cfgFile, []byte("image: registry.example.com/switchyard:0.1.0\nresources:\n  requests: {cpu: 20m}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	exited := make(chan error, 1)
	go func() {
		exited <- runInject(ctx, []string{"--listen", "127.0.0.1:0", "--config", cfgFile, "--log-level", "info"},
			envOf(map[string]string{"SWITCHYARD_TLS_CERT": certFile, "SWITCHYARD_TLS_KEY": keyFile, "SWITCHYARD_LOG_LEVEL": "error"}), &stderr)
	}()

	addrRE := regexp.MustCompile(`"msg":"injector listening","addr":"([^"]+)"`)
	var addr string
	for deadline := time.Now().Add(10 * time.Second); addr == ""; {
		select {
		case err := <-exited:
			t.Fatalf("runInject returned %v before listening; stderr:\n%s", err, stderr.String())
		default:
		}
		if m := addrRE.FindStringSubmatch(stderr.String()); m != nil {
			addr = m[1]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no listening line within 10s; stderr:\n%s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The listening line is at info: --log-level won over SWITCHYARD_LOG_LEVEL.

	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	review, err := os.ReadFile("../../deploy/injector/testdata/annotated.json")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Post("https://"+addr+"/mutate?timeout=10s", "application/json", bytes.NewReader(review))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /mutate: %d %s", resp.StatusCode, body)
	}
	var out struct {
		Response struct {
			Allowed bool   `json:"allowed"`
			Patch   []byte `json:"patch"`
		} `json:"response"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatal(err)
	}
	if !out.Response.Allowed || !bytes.Contains(out.Response.Patch, []byte(`"image":"registry.example.com/switchyard:0.1.0"`)) ||
		!bytes.Contains(out.Response.Patch, []byte(`"resources":{"requests":{"cpu":"20m"}}`)) {
		t.Fatalf("response %s (patch %s)", body, out.Response.Patch)
	}

	for path, want := range map[string]string{"/healthz": "ok", "/metrics": `switchyard_injector_admissions_total{result="injected"} 1`} {
		resp, err := client.Get("https://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), want) {
			t.Errorf("GET %s: %d, want 200 containing %q:\n%s", path, resp.StatusCode, want, b)
		}
	}
	// Plain HTTP is refused: the API server only speaks HTTPS to webhooks.
	if resp, err := http.Post("http://"+addr+"/mutate", "application/json", bytes.NewReader(review)); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("plain HTTP answered 200: %s", b)
		}
	}

	cancel()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("runInject after cancel: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("runInject did not return within 15s of cancel")
	}
}

func TestRunInjectUsageErrors(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, _ := writeSelfSigned(t, dir)
	badCfg := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(badCfg, []byte("image: x\nlisten: 0.0.0.0:9092\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	unknownCfg := filepath.Join(dir, "unknown.yaml")
	if err := os.WriteFile(unknownCfg, []byte("image: x\nsidecarImage: y\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tls := []string{"--tls-cert", certFile, "--tls-key", keyFile}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string // in the error; empty for --help
	}{
		{name: "help", args: []string{"--help"}},
		{name: "no TLS", args: []string{"--image", "x"}, want: "--tls-cert and --tls-key are required"},
		{name: "no image", args: tls, want: "injector config: image: required"},
		{name: "bad config", args: append([]string{"--config", badCfg}, tls...), want: "config file " + badCfg + ": listen: \"0.0.0.0:9092\""},
		{name: "unknown field", args: append([]string{"--config", unknownCfg}, tls...), want: "field sidecarImage not found"},
		{name: "missing key file", args: []string{"--image", "x", "--tls-cert", certFile, "--tls-key", filepath.Join(dir, "nope.key")}, want: "tls key pair"},
		{name: "bad log format", args: append([]string{"--image", "x", "--log-format", "xml"}, tls...), want: "log-format"},
		{name: "argument", args: []string{"extra"}, want: `unexpected argument "extra"`},
		{name: "env image", args: tls, env: map[string]string{"SWITCHYARD_IMAGE": "x", "SWITCHYARD_LISTEN": "not-an-address"}, want: "listen not-an-address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel() // a run that gets as far as serving stops at once
			err := runInject(ctx, tt.args, envOf(tt.env), io.Discard)
			if tt.want == "" {
				if !errors.Is(err, flag.ErrHelp) {
					t.Fatalf("err %v, want flag.ErrHelp", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// writeSelfSigned writes a certificate for 127.0.0.1 and its key into dir.
func writeSelfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "switchyard-injector.test"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}
