package deploy

import (
	"slices"
	"testing"

	"go.yaml.in/yaml/v3"
)

// tlsProbes is the part of a Deployment's pod spec that tells how the
// probes connect.
type tlsProbes struct {
	Template struct {
		Spec struct {
			Containers []struct {
				Args           []string  `yaml:"args"`
				StartupProbe   *tlsProbe `yaml:"startupProbe"`
				ReadinessProbe *tlsProbe `yaml:"readinessProbe"`
				LivenessProbe  *tlsProbe `yaml:"livenessProbe"`
			} `yaml:"containers"`
		} `yaml:"spec"`
	} `yaml:"template"`
}

type tlsProbe struct {
	HTTPGet *struct {
		Scheme string `yaml:"scheme"`
	} `yaml:"httpGet"`
	TCPSocket *struct {
		Port string `yaml:"port"`
	} `yaml:"tcpSocket"`
}

// probeKinds returns how each probe of the control plane connects:
// "HTTP", "HTTPS" or "TCP".
func probeKinds(t *testing.T, cp controlPlane) []string {
	t.Helper()
	s := spec[tlsProbes](t, cp.deploy)
	var out []string
	for _, c := range s.Template.Spec.Containers {
		if len(c.Args) == 0 || c.Args[0] != "control" {
			continue
		}
		for _, p := range []*tlsProbe{c.StartupProbe, c.ReadinessProbe, c.LivenessProbe} {
			switch {
			case p == nil:
				out = append(out, "none")
			case p.TCPSocket != nil:
				out = append(out, "TCP")
			case p.HTTPGet != nil && p.HTTPGet.Scheme != "":
				out = append(out, p.HTTPGet.Scheme)
			default:
				out = append(out, "HTTP")
			}
		}
	}
	return out
}

func appProtocol(t *testing.T, cp controlPlane) string {
	t.Helper()
	var s struct {
		Ports []struct {
			AppProtocol string `yaml:"appProtocol"`
		} `yaml:"ports"`
	}
	if err := cp.service.Spec.Decode(&s); err != nil {
		t.Fatal(err)
	}
	return s.Ports[0].AppProtocol
}

// TestHelmControlPlaneTLS renders the chart with the control plane's TLS
// on: its control.yaml names files that are keys of the TLS Secret's
// volume, the probes speak HTTPS (or only open the port when every client
// must present a certificate), the Service no longer claims h2c, and
// injected sidecars get the CA from their own Secret. Off by default.
func TestHelmControlPlaneTLS(t *testing.T) {
	base := []string{"-n", "switchyard", "-f", "helm/switchyard/ci/control-plane-values.yaml"}
	objs := helmTemplate(t, append(slices.Clone(base),
		"--set", "controlPlane.tls.enabled=true", "--set", "controlPlane.tls.clientCA=true",
		"--set", "controlPlane.auditFile=/var/lib/switchyard/audit.jsonl",
		"--set", "injector.sidecar.control.tlsSecret=switchyard-control-ca")...)
	checkPods(t, objs)
	cp := findControlPlane(t, objs)
	var cfg struct {
		TLS struct {
			CertFile           string `yaml:"certFile"`
			KeyFile            string `yaml:"keyFile"`
			CAFile             string `yaml:"caFile"`
			ClientCertOptional bool   `yaml:"clientCertOptional"`
		} `yaml:"tls"`
		AuditFile string `yaml:"auditFile"`
	}
	if err := yaml.Unmarshal([]byte(cp.config), &cfg); err != nil {
		t.Fatalf("control.yaml: %v", err)
	}
	ps := cp.spec.Template.Spec
	for field, file := range map[string]string{"certFile": cfg.TLS.CertFile, "keyFile": cfg.TLS.KeyFile, "caFile": cfg.TLS.CAFile} {
		if _, v, ok := ps.mountOf(cp.container, file); file == "" || !ok || v.Secret == nil || v.Secret.SecretName != "switchyard-control-tls" {
			t.Errorf("control plane: tls.%s %q is not on the TLS Secret's volume", field, file)
		}
	}
	if !cfg.TLS.ClientCertOptional {
		t.Error("control plane: tls.clientCertOptional should default to true (token-only sidecars, kubelet probes)")
	}
	if _, v, ok := ps.mountOf(cp.container, cfg.AuditFile); !ok || v.PersistentVolumeClaim == nil {
		t.Errorf("control plane: auditFile %q is not on the store's volume", cfg.AuditFile)
	}
	if got := probeKinds(t, cp); !slices.Equal(got, []string{"HTTPS", "HTTPS", "HTTPS"}) {
		t.Errorf("control plane probes %v, want HTTPS", got)
	}
	if got := appProtocol(t, cp); got != "" {
		t.Errorf("control plane Service appProtocol %q over TLS, want none", got)
	}
	pod, icfg := injectedPod(t, objs)
	caFile, _ := flag(pod.sidecar.Args, "--control-tls-ca")
	if mount, v, ok := pod.spec.mountOf(pod.sidecar, caFile); !ok || v.Secret == nil || v.Secret.SecretName != "switchyard-control-ca" ||
		len(v.Secret.Items) == 0 || mount+"/"+v.Secret.Items[0].Path != caFile || v.Secret.Items[0].Key != "ca.crt" {
		t.Errorf("sidecar: --control-tls-ca %q is not key ca.crt of Secret switchyard-control-ca (injector config %+v)", caFile, icfg.Control)
	}

	// Every client must present a certificate: the kubelet cannot, so the
	// probes only open the port.
	objs = helmTemplate(t, append(slices.Clone(base), "--set", "controlPlane.tls.enabled=true", "--set", "controlPlane.tls.clientCA=true",
		"--set", "controlPlane.tls.clientCertOptional=false")...)
	cp = findControlPlaneProbesAside(t, objs)
	if got := probeKinds(t, cp); !slices.Equal(got, []string{"TCP", "TCP", "TCP"}) {
		t.Errorf("control plane probes with client certificates required %v, want TCP", got)
	}

	// Off by default.
	cp = findControlPlane(t, helmTemplate(t, base...))
	if got := probeKinds(t, cp); !slices.Equal(got, []string{"HTTP", "HTTP", "HTTP"}) || appProtocol(t, cp) != "kubernetes.io/h2c" {
		t.Errorf("default: probes %v, appProtocol %q; want plain HTTP and h2c", got, appProtocol(t, cp))
	}
	var def map[string]any
	if err := yaml.Unmarshal([]byte(cp.config), &def); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"tls", "clientCertificates", "auditFile"} {
		if _, ok := def[key]; ok {
			t.Errorf("default control.yaml sets %s", key)
		}
	}
}

// findControlPlaneProbesAside finds the control plane's Deployment without
// findControlPlane's probe check (which wants HTTP GETs).
func findControlPlaneProbesAside(t *testing.T, objs []object) controlPlane {
	t.Helper()
	for _, o := range objs {
		if o.Kind != "Deployment" {
			continue
		}
		s := spec[deploymentSpec](t, o)
		for _, c := range s.Template.Spec.Containers {
			if len(c.Args) > 0 && c.Args[0] == "control" {
				return controlPlane{deploy: o, spec: s, container: c}
			}
		}
	}
	t.Fatal("no control plane Deployment")
	return controlPlane{}
}
