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
	// AdminPort is the admin API's port (--admin 0.0.0.0:AdminPort). It
	// listens on the pod's address because kubelet probes and Prometheus
	// reach it there; restrict it with a NetworkPolicy (the API is
	// unauthenticated and can switch clusters).
	AdminPort int `yaml:"adminPort"`
	// ProxyConfigMap is the ConfigMap, in the pod's namespace, holding
	// proxy.yaml (clusters, active cluster, timeouts); the pod annotation
	// switchyard.io/proxy-config overrides it.
	ProxyConfigMap string `yaml:"proxyConfigMap"`
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
}

// DefaultConfig returns the defaults: a native sidecar named
// switchyard-proxy on 127.0.0.1:9092 with its admin API on port 9190,
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
		ProxyConfigMap:  "switchyard-proxy",
		AppLabels:       []string{"app.kubernetes.io/name", "app"},
		Resources: Resources{
			Requests: map[string]string{"cpu": "50m", "memory": "64Mi"},
			Limits:   map[string]string{"memory": "256Mi"},
		},
		RunAsUser:  65532,
		RunAsGroup: 65532,
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
	if c.ProxyConfigMap == "" {
		return errors.New("proxyConfigMap: required")
	}
	if len(c.AppLabels) == 0 {
		return errors.New("appLabels: at least one label is required")
	}
	for _, a := range c.ExtraArgs {
		for _, owned := range []string{"--listen", "--admin", "--config"} {
			if a == owned || strings.HasPrefix(a, owned+"=") {
				return fmt.Errorf("extraArgs: %s is set by the injector", owned)
			}
		}
	}
	if c.RunAsUser <= 0 {
		return fmt.Errorf("runAsUser: %d: the sidecar runs as a non-root user", c.RunAsUser)
	}
	return nil
}
