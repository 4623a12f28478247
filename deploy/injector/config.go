package injector

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// Config is what the injector puts into pods. Start from DefaultConfig.
type Config struct {
	// Image is the Switchyard image the sidecar runs; required.
	Image string `yaml:"image"`
	// ImagePullPolicy of the sidecar ("IfNotPresent", "Always", "Never";
	// empty leaves Kubernetes' default).
	ImagePullPolicy string `yaml:"imagePullPolicy"`
	// ContainerName of the sidecar. A pod that already has a container or
	// init container of this name is not injected again.
	ContainerName string `yaml:"containerName"`
	// NativeSidecar injects the proxy as an init container with
	// restartPolicy Always (Kubernetes 1.29+): it starts, and passes its
	// startup probe, before the application's containers start, and stops
	// after them. False appends it to the pod's containers instead.
	NativeSidecar bool `yaml:"nativeSidecar"`
	// Listen is the proxy's bootstrap listener (--listen) that the
	// application is configured with. Virtual broker N listens on the
	// following ports, so ports Listen+1... must be free in the pod.
	Listen string `yaml:"listen"`
	// AdminPort is the admin API's port, on loopback (--admin
	// 127.0.0.1:AdminPort): the API can gate and switch the application's
	// traffic, so only the pod's own containers and `kubectl port-forward`
	// reach it.
	AdminPort int `yaml:"adminPort"`
	// HealthPort is the health listener's port, on the pod's address
	// (--health-listen 0.0.0.0:HealthPort): GET /healthz, /readyz and
	// /metrics only, for kubelet probes and Prometheus. It is the one port
	// the sidecar declares (named sy-health).
	HealthPort int `yaml:"healthPort"`
	// ProxyConfigMap is the ConfigMap, in the pod's namespace, holding
	// proxy.yaml (clusters, active cluster, timeouts); the pod annotation
	// switchyard.io/proxy-config overrides it.
	ProxyConfigMap string `yaml:"proxyConfigMap"`
	// KafkaSecret, when set, is a Secret in the pod's namespace holding the
	// files proxy.yaml's cluster tls/sasl settings name (passwordFile,
	// caFile, certFile/keyFile, tokenFile); every key is mounted, read-only,
	// in the sidecar only, under /etc/switchyard/kafka (so proxy.yaml says
	// e.g. passwordFile: /etc/switchyard/kafka/password). The pod annotation
	// switchyard.io/kafka-secret overrides it.
	KafkaSecret string `yaml:"kafkaSecret"`
	// AppLabels are the pod labels the application name is read from, in
	// order; the annotation switchyard.io/app overrides them.
	AppLabels []string `yaml:"appLabels"`
	// Resources of the sidecar.
	Resources Resources `yaml:"resources"`
	// ExtraArgs are appended to the sidecar's `switchyard proxy` arguments.
	ExtraArgs []string `yaml:"extraArgs"`
	// RunAsUser and RunAsGroup of the sidecar (the image's nonroot user).
	RunAsUser  int64 `yaml:"runAsUser"`
	RunAsGroup int64 `yaml:"runAsGroup"`
	// Control connects the sidecars to a control plane; with an empty
	// Address they run on their proxy.yaml alone.
	Control Control `yaml:"control"`
}

// Control is how injected sidecars reach the control plane: the proxy's
// --control, --app, --instance and --control-token-file flags.
type Control struct {
	// Address is the control plane's host:port (its Service, e.g.
	// switchyard-control.switchyard.svc:9180).
	Address string `yaml:"address"`
	// TokenSecret is the Secret, in the pod's namespace, holding the
	// namespace's sidecar token (a token of role sidecar, scoped to the
	// namespace's applications and instances) under TokenSecretKey. It is
	// mounted into the sidecar only. Required with Address, unless
	// TLSClientCert: a control plane that listens beyond loopback always
	// requires credentials, and refuses operator tokens to sidecars.
	TokenSecret    string `yaml:"tokenSecret"`
	TokenSecretKey string `yaml:"tokenSecretKey"`
	// TLSSecret, when set, is a Secret in the pod's namespace holding the
	// CA the control plane's certificate chains to (key ca.crt, as
	// cert-manager writes it). It is mounted into the sidecar only, which
	// then connects with TLS (--control-tls-ca).
	TLSSecret string `yaml:"tlsSecret"`
	// TLSClientCert: the TLSSecret also holds a client certificate
	// (tls.crt, tls.key) the sidecar presents (mTLS; --control-tls-cert,
	// --control-tls-key). The control plane can map it to the sidecar
	// role; tokenSecret may then be empty.
	TLSClientCert bool `yaml:"tlsClientCert"`
	// AllowPlaintextToken lets sidecars send the token without TLS
	// (--control-allow-plaintext-token): for a control plane served
	// without TLS inside a network that encrypts (a service mesh). A
	// sidecar otherwise refuses to send its token in the clear beyond
	// loopback, so a tokenSecret without tlsSecret needs it.
	AllowPlaintextToken bool `yaml:"allowPlaintextToken"`
}

// DefaultConfig returns the defaults: a native sidecar named
// switchyard-proxy on 127.0.0.1:9092 with its admin API on 127.0.0.1:9190
// and its health listener on port 9191,
// proxy.yaml from the ConfigMap switchyard-proxy, the application name from
// app.kubernetes.io/name or app, and requests sized from measurements (see
// deploy/kubernetes/base/example-app.yaml).
func DefaultConfig() Config {
	return Config{
		ImagePullPolicy: "IfNotPresent",
		ContainerName:   "switchyard-proxy",
		NativeSidecar:   true,
		Listen:          "127.0.0.1:9092",
		AdminPort:       9190,
		HealthPort:      9191,
		ProxyConfigMap:  "switchyard-proxy",
		AppLabels:       []string{"app.kubernetes.io/name", "app"},
		Resources: Resources{
			Requests: map[string]string{"cpu": "50m", "memory": "64Mi"},
			Limits:   map[string]string{"memory": "256Mi"},
		},
		RunAsUser:  65532,
		RunAsGroup: 65532,
		Control:    Control{TokenSecret: "switchyard-sidecar-token", TokenSecretKey: "token"},
	}
}

// Validate reports the first invalid field.
func (c Config) Validate() error {
	if c.Image == "" {
		return errors.New("image: required")
	}
	if c.ContainerName == "" {
		return errors.New("containerName: required")
	}
	switch c.ImagePullPolicy {
	case "", "IfNotPresent", "Always", "Never":
	default:
		return fmt.Errorf("imagePullPolicy: %q: want IfNotPresent, Always or Never", c.ImagePullPolicy)
	}
	host, port, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("listen: %q: the application talks to the sidecar over loopback; want a 127.0.0.0/8 address", c.Listen)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("listen: port %q out of range", port)
	}
	if c.AdminPort < 1 || c.AdminPort > 65535 {
		return fmt.Errorf("adminPort: %d out of range", c.AdminPort)
	}
	if c.HealthPort < 1 || c.HealthPort > 65535 {
		return fmt.Errorf("healthPort: %d out of range", c.HealthPort)
	}
	if c.HealthPort == c.AdminPort {
		return fmt.Errorf("healthPort: %d is also adminPort", c.HealthPort)
	}
	if c.ProxyConfigMap == "" {
		return errors.New("proxyConfigMap: required")
	}
	if len(c.AppLabels) == 0 {
		return errors.New("appLabels: at least one label is required")
	}
	if c.KafkaSecret != "" && !validDNSLabel(c.KafkaSecret) {
		return fmt.Errorf("kafkaSecret: %q is not a Secret name", c.KafkaSecret)
	}
	owned := []string{"--listen", "--admin", "--health-listen", "--config"}
	if c.Control.Address != "" {
		owned = append(owned, controlFlags...)
	}
	for _, a := range c.ExtraArgs {
		for _, o := range owned {
			// The proxy's flag package takes -flag and --flag alike.
			if f, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "="); strings.HasPrefix(a, "-") && "--"+f == o {
				return fmt.Errorf("extraArgs: %s is set by the injector", o)
			}
		}
	}
	if err := c.Control.validate(); err != nil {
		return fmt.Errorf("control.%w", err)
	}
	if c.RunAsUser <= 0 {
		return fmt.Errorf("runAsUser: %d: the sidecar runs as a non-root user", c.RunAsUser)
	}
	return nil
}

// controlFlags are the proxy flags the injector sets when a control plane
// is configured.
var controlFlags = []string{"--control", "--app", "--instance", "--control-token-file",
	"--control-tls-ca", "--control-tls-cert", "--control-tls-key", "--control-allow-plaintext-token"}

func (c Control) validate() error {
	if c.Address == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(c.Address)
	if err != nil {
		return fmt.Errorf("address: %w", err)
	}
	if n, err := strconv.Atoi(port); host == "" || err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("address: %q: want host:port", c.Address)
	}
	if c.TLSSecret != "" && !validDNSLabel(c.TLSSecret) {
		return fmt.Errorf("tlsSecret: %q is not a Secret name", c.TLSSecret)
	}
	if c.TLSClientCert && c.TLSSecret == "" {
		return errors.New("tlsClientCert: needs tlsSecret")
	}
	if c.TokenSecret == "" {
		if c.TLSClientCert {
			return nil // the client certificate authenticates the sidecar
		}
		return errors.New("tokenSecret: required with address unless tlsClientCert (the control plane requires credentials when it listens beyond loopback)")
	}
	if !validDNSLabel(c.TokenSecret) {
		return fmt.Errorf("tokenSecret: %q is not a Secret name", c.TokenSecret)
	}
	if c.TokenSecretKey == "" {
		return errors.New("tokenSecretKey: required with tokenSecret")
	}
	if c.TLSSecret == "" && !c.AllowPlaintextToken {
		return errors.New("tokenSecret without tlsSecret: the sidecars would send the token in the clear and refuse to start; set tlsSecret (TLS to the control plane), or allowPlaintextToken: true where the network encrypts")
	}
	return nil
}
