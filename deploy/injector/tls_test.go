package injector

import (
	"slices"
	"strings"
	"testing"
)

// TestInjectControlTLS: with tlsSecret the sidecar mounts the control
// plane's CA and connects with TLS; with tlsClientCert it also presents
// the Secret's certificate, and may go without a token.
func TestInjectControlTLS(t *testing.T) {
	pod := &Pod{Metadata: ObjectMeta{Annotations: map[string]string{AnnotationInject: "true"}, Labels: map[string]string{"app": "orders"}},
		Spec: PodSpec{Containers: []NamedObject{{Name: "app"}}}}
	for _, tc := range []struct {
		name       string
		control    Control
		wantArgs   []string // after --instance
		wantVols   []string
		wantMounts []string
		wantItems  []string // keys of the TLS Secret mounted
	}{
		{name: "token only, in the clear", control: Control{Address: testControlAddress, TokenSecret: "tok", TokenSecretKey: "token", AllowPlaintextToken: true},
			wantArgs:   []string{"--control-token-file", "/var/run/secrets/switchyard/token", "--control-allow-plaintext-token"},
			wantVols:   []string{"switchyard-proxy-config", "switchyard-control-token"},
			wantMounts: []string{"/etc/switchyard", "/var/run/secrets/switchyard"}},
		{name: "token over TLS", control: Control{Address: testControlAddress, TokenSecret: "tok", TokenSecretKey: "token", TLSSecret: "control-tls", AllowPlaintextToken: true},
			wantArgs:   []string{"--control-token-file", "/var/run/secrets/switchyard/token", "--control-tls-ca", "/var/run/secrets/switchyard-control-tls/ca.crt"},
			wantVols:   []string{"switchyard-proxy-config", "switchyard-control-token", "switchyard-control-tls"},
			wantMounts: []string{"/etc/switchyard", "/var/run/secrets/switchyard", "/var/run/secrets/switchyard-control-tls"},
			wantItems:  []string{"ca.crt"}},
		{name: "mTLS without a token", control: Control{Address: testControlAddress, TLSSecret: "sidecar-tls", TLSClientCert: true},
			wantArgs: []string{"--control-tls-ca", "/var/run/secrets/switchyard-control-tls/ca.crt",
				"--control-tls-cert", "/var/run/secrets/switchyard-control-tls/tls.crt", "--control-tls-key", "/var/run/secrets/switchyard-control-tls/tls.key"},
			wantVols:   []string{"switchyard-proxy-config", "switchyard-control-tls"},
			wantMounts: []string{"/etc/switchyard", "/var/run/secrets/switchyard-control-tls"},
			wantItems:  []string{"ca.crt", "tls.crt", "tls.key"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Control = tc.control
			if err := cfg.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			patch, err := Inject(pod, "shop", cfg)
			if err != nil {
				t.Fatal(err)
			}
			var (
				c     Container
				vols  []string
				items []string
			)
			for _, op := range patch {
				switch v := op.Value.(type) {
				case []Container:
					c = v[0]
				case Container:
					c = v
				case []Volume:
					for _, vol := range v {
						vols = append(vols, vol.Name)
					}
				case Volume:
					vols = append(vols, v.Name)
					if v.Name == controlTLSVolume {
						for _, it := range v.Secret.Items {
							items = append(items, it.Key)
						}
						if v.Secret.SecretName != tc.control.TLSSecret {
							t.Errorf("TLS volume from Secret %q, want %q", v.Secret.SecretName, tc.control.TLSSecret)
						}
					}
				}
			}
			i := slices.Index(c.Args, "--instance")
			if i < 0 || !slices.Equal(c.Args[i+2:], tc.wantArgs) {
				t.Errorf("args %q, want %q after --instance", c.Args, tc.wantArgs)
			}
			if !slices.Equal(vols, tc.wantVols) {
				t.Errorf("volumes %q, want %q", vols, tc.wantVols)
			}
			var mounts []string
			for _, m := range c.VolumeMounts {
				mounts = append(mounts, m.MountPath)
				if !m.ReadOnly {
					t.Errorf("mount %s is writable", m.MountPath)
				}
			}
			if !slices.Equal(mounts, tc.wantMounts) {
				t.Errorf("mounts %q, want %q", mounts, tc.wantMounts)
			}
			if !slices.Equal(items, tc.wantItems) {
				t.Errorf("TLS Secret keys %q, want %q", items, tc.wantItems)
			}
		})
	}
}

func TestConfigValidateControlTLS(t *testing.T) {
	for _, tc := range []struct {
		name      string
		control   Control
		extraArgs []string
		err       string
	}{
		{"client cert needs the secret", Control{Address: testControlAddress, TLSClientCert: true}, nil, "control.tlsClientCert: needs tlsSecret"},
		{"bad secret name", Control{Address: testControlAddress, TokenSecret: "t", TokenSecretKey: "k", TLSSecret: "Bad_Name"}, nil, "control.tlsSecret"},
		{"CA only still needs a token", Control{Address: testControlAddress, TLSSecret: "control-tls"}, nil,
			"control.tokenSecret: required with address unless tlsClientCert"},
		{"a token in the clear needs allowPlaintextToken", Control{Address: testControlAddress, TokenSecret: "t", TokenSecretKey: "k"}, nil,
			"control.tokenSecret without tlsSecret: the sidecars would send the token in the clear and refuse to start"},
		{"owned plaintext flag", Control{Address: testControlAddress, TokenSecret: "t", TokenSecretKey: "k", AllowPlaintextToken: true}, []string{"--control-allow-plaintext-token"},
			"extraArgs: --control-allow-plaintext-token is set by the injector"},
		{"owned TLS flag", Control{Address: testControlAddress, TLSSecret: "control-tls", TLSClientCert: true}, []string{"--control-tls-ca=/x"},
			"extraArgs: --control-tls-ca is set by the injector"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Control = tc.control
			cfg.ExtraArgs = tc.extraArgs
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("Validate() = %v, want %q", err, tc.err)
			}
		})
	}
}
