package injector

import (
	"fmt"
	"strconv"
	"strings"
)

// proxyConfigVolume is the name of the volume holding proxy.yaml.
const proxyConfigVolume = "switchyard-proxy-config"

// proxyConfigDir is where proxy.yaml is mounted in the sidecar.
const proxyConfigDir = "/etc/switchyard"

// controlTokenVolume is the name of the volume holding the control plane's
// token, and controlTokenDir where it is mounted in the sidecar (as file
// "token").
const (
	controlTokenVolume = "switchyard-control-token"
	controlTokenDir    = "/var/run/secrets/switchyard"
)

// kafkaSecretVolume holds the cluster credentials (KafkaSecret), mounted in
// the sidecar at KafkaSecretDir.
const (
	kafkaSecretVolume = "switchyard-kafka"
	// KafkaSecretDir is where proxy.yaml finds the KafkaSecret's files.
	KafkaSecretDir = "/etc/switchyard/kafka"
)

// HealthPortName names the sidecar's health port (Config.HealthPort), the
// port probes and a PodMonitor refer to.
const HealthPortName = "sy-health"

// controlTLSVolume holds the control plane's CA (and the sidecar's client
// certificate, for mTLS), mounted in the sidecar at controlTLSDir.
const (
	controlTLSVolume = "switchyard-control-tls"
	controlTLSDir    = "/var/run/secrets/switchyard-control-tls"
)

// Inject returns the JSON patch that adds the proxy sidecar to pod, or a
// nil patch if pod is not annotated switchyard.io/inject: "true" or already
// has a container named cfg.ContainerName. namespace is the namespace the
// pod is created in (pod.Metadata.Namespace is often empty at admission).
// cfg must be valid (Config.Validate). Inject does not modify pod.
func Inject(pod *Pod, namespace string, cfg Config) (Patch, error) {
	want, err := wanted(pod)
	if err != nil || !want {
		return nil, err
	}
	for _, c := range append(append([]NamedObject(nil), pod.Spec.Containers...), pod.Spec.InitContainers...) {
		if c.Name == cfg.ContainerName {
			return nil, nil
		}
	}
	app := appName(pod, cfg)
	if app == "" {
		return nil, fmt.Errorf("%w: pod %s is annotated %s=true but has none of the labels %s and no %s annotation",
			ErrNoAppName, podName(pod, namespace), AnnotationInject, strings.Join(cfg.AppLabels, ", "), AnnotationApp)
	}
	if v := pod.Metadata.Annotations[AnnotationApp]; v != "" && !validLabelValue(v) {
		// It becomes the pod's switchyard.io/app label (and --app): the API
		// server would refuse the patched pod with a less helpful message.
		return nil, fmt.Errorf("%w: %s: %q is not a label value (at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)",
			ErrBadAnnotation, AnnotationApp, v)
	}
	configMap := cfg.ProxyConfigMap
	if v, ok := pod.Metadata.Annotations[AnnotationProxyConfig]; ok {
		if !validDNSLabel(v) {
			return nil, fmt.Errorf("%w: %s: %q is not a ConfigMap name", ErrBadAnnotation, AnnotationProxyConfig, v)
		}
		configMap = v
	}
	kafkaSecret := cfg.KafkaSecret
	if v, ok := pod.Metadata.Annotations[AnnotationKafkaSecret]; ok {
		if !validDNSLabel(v) {
			return nil, fmt.Errorf("%w: %s: %q is not a Secret name", ErrBadAnnotation, AnnotationKafkaSecret, v)
		}
		kafkaSecret = v
	}

	var patch Patch
	c := sidecar(cfg, app)
	if kafkaSecret != "" {
		c.VolumeMounts = append(c.VolumeMounts, VolumeMount{Name: kafkaSecretVolume, MountPath: KafkaSecretDir, ReadOnly: true})
	}
	switch {
	case cfg.NativeSidecar && len(pod.Spec.InitContainers) == 0:
		patch = append(patch, Operation{Op: "add", Path: "/spec/initContainers", Value: []Container{c}})
	case cfg.NativeSidecar:
		// First, so that init containers that need Kafka can use it.
		patch = append(patch, Operation{Op: "add", Path: "/spec/initContainers/0", Value: c})
	default:
		patch = append(patch, Operation{Op: "add", Path: "/spec/containers/-", Value: c})
	}
	vols := []Volume{{Name: proxyConfigVolume, ConfigMap: &ConfigMapVolumeSource{Name: configMap}}}
	// 0444: the sidecar's user does not own the files, and the pod may
	// have no fsGroup. Only the sidecar mounts these volumes.
	mode := int32(0o444)
	if kafkaSecret != "" {
		vols = append(vols, Volume{Name: kafkaSecretVolume, Secret: &SecretVolumeSource{SecretName: kafkaSecret, DefaultMode: &mode}})
	}
	if cfg.Control.Address != "" && cfg.Control.TokenSecret != "" {
		vols = append(vols, Volume{Name: controlTokenVolume, Secret: &SecretVolumeSource{
			SecretName:  cfg.Control.TokenSecret,
			Items:       []KeyToPath{{Key: cfg.Control.TokenSecretKey, Path: "token"}},
			DefaultMode: &mode,
		}})
	}
	if cfg.Control.Address != "" && cfg.Control.TLSSecret != "" {
		items := []KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}
		if cfg.Control.TLSClientCert {
			items = append(items, KeyToPath{Key: "tls.crt", Path: "tls.crt"}, KeyToPath{Key: "tls.key", Path: "tls.key"})
		}
		vols = append(vols, Volume{Name: controlTLSVolume, Secret: &SecretVolumeSource{
			SecretName: cfg.Control.TLSSecret, Items: items, DefaultMode: &mode,
		}})
	}
	for i, vol := range vols {
		if i == 0 && len(pod.Spec.Volumes) == 0 {
			patch = append(patch, Operation{Op: "add", Path: "/spec/volumes", Value: []Volume{vol}})
		} else {
			patch = append(patch, Operation{Op: "add", Path: "/spec/volumes/-", Value: vol})
		}
	}
	// The inject annotation is there, so annotations exist.
	patch = append(patch, Operation{Op: "add", Path: "/metadata/annotations/" + escape(AnnotationStatus), Value: "injected"})
	// Prometheus discovery by annotation finds the sidecar's metrics on its
	// health listener, unless the pod already says what to scrape.
	if !hasAnyAnnotation(pod, AnnotationPrometheusScrape, AnnotationPrometheusPort, AnnotationPrometheusPath) {
		for _, a := range [][2]string{
			{AnnotationPrometheusScrape, "true"},
			{AnnotationPrometheusPort, strconv.Itoa(cfg.HealthPort)},
			{AnnotationPrometheusPath, "/metrics"},
		} {
			patch = append(patch, Operation{Op: "add", Path: "/metadata/annotations/" + escape(a[0]), Value: a[1]})
		}
	}
	if len(pod.Metadata.Labels) == 0 {
		patch = append(patch, Operation{Op: "add", Path: "/metadata/labels", Value: map[string]string{LabelApp: app}})
	} else {
		patch = append(patch, Operation{Op: "add", Path: "/metadata/labels/" + escape(LabelApp), Value: app})
	}
	return patch, nil
}

// hasAnyAnnotation reports whether pod has one of the annotations.
func hasAnyAnnotation(pod *Pod, keys ...string) bool {
	for _, k := range keys {
		if _, ok := pod.Metadata.Annotations[k]; ok {
			return true
		}
	}
	return false
}

// wanted reports whether pod asks for injection.
func wanted(pod *Pod) (bool, error) {
	v, ok := pod.Metadata.Annotations[AnnotationInject]
	if !ok {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%w: %s: %q: want \"true\" or \"false\"", ErrBadAnnotation, AnnotationInject, v)
	}
	return b, nil
}

// appName is the application name: the annotation, else the first
// configured label present.
func appName(pod *Pod, cfg Config) string {
	if v := pod.Metadata.Annotations[AnnotationApp]; v != "" {
		return v
	}
	for _, l := range cfg.AppLabels {
		if v := pod.Metadata.Labels[l]; v != "" {
			return v
		}
	}
	return ""
}

// sidecar is the proxy container for application app.
func sidecar(cfg Config, app string) Container {
	// The admin API (switch, gates) stays on loopback: no other pod can
	// reach it, and the proxy refuses a non-loopback --admin without
	// credentials. Probes and Prometheus use the read-only health listener.
	args := []string{
		"proxy",
		"--config", proxyConfigDir + "/proxy.yaml",
		"--listen", cfg.Listen,
		"--admin", "127.0.0.1:" + strconv.Itoa(cfg.AdminPort),
		"--health-listen", "0.0.0.0:" + strconv.Itoa(cfg.HealthPort),
	}
	if cfg.Control.Address != "" {
		// The application is resolved here, at admission; the instance is
		// namespace/pod, expanded by the kubelet from the downward-API
		// variables below (the proxy's own default, made explicit).
		args = append(args,
			"--control", cfg.Control.Address,
			"--app", app,
			"--instance", "$(SWITCHYARD_POD_NAMESPACE)/$(SWITCHYARD_POD_NAME)",
		)
		if cfg.Control.TokenSecret != "" {
			args = append(args, "--control-token-file", controlTokenDir+"/token")
			if cfg.Control.TLSSecret == "" && cfg.Control.AllowPlaintextToken {
				args = append(args, "--control-allow-plaintext-token")
			}
		}
		if cfg.Control.TLSSecret != "" {
			args = append(args, "--control-tls-ca", controlTLSDir+"/ca.crt")
		}
		if cfg.Control.TLSClientCert {
			args = append(args, "--control-tls-cert", controlTLSDir+"/tls.crt", "--control-tls-key", controlTLSDir+"/tls.key")
		}
	}
	args = append(args, cfg.ExtraArgs...)
	c := Container{
		Name:            cfg.ContainerName,
		Image:           cfg.Image,
		ImagePullPolicy: cfg.ImagePullPolicy,
		Args:            args,
		Env: []EnvVar{
			// Identity for the control plane's sidecar registry: --app and
			// --instance when a control plane is configured (the proxy
			// reads SWITCHYARD_APP as --app, too).
			{Name: "SWITCHYARD_APP", Value: app},
			{Name: "SWITCHYARD_POD_NAME", ValueFrom: &EnvVarSource{FieldRef: &ObjectFieldSelector{FieldPath: "metadata.name"}}},
			{Name: "SWITCHYARD_POD_NAMESPACE", ValueFrom: &EnvVarSource{FieldRef: &ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
			// The proxy needs little CPU (see the measurements in
			// deploy/kubernetes/base/example-app.yaml) and has no CPU
			// limit, so Go would otherwise size its scheduler to the node.
			{Name: "GOMAXPROCS", Value: "2"},
		},
		// Only the health port is declared: the Kafka listeners and the
		// admin API are on loopback, reachable from the pod's own
		// containers only.
		Ports:     []ContainerPort{{Name: HealthPortName, ContainerPort: int32(cfg.HealthPort), Protocol: "TCP"}},
		Resources: cfg.Resources,
		// Startup: the listeners are bound (New binds them before the admin
		// server starts), so the application may start. Readiness: the
		// active cluster has answered. Liveness: the process serves HTTP.
		StartupProbe:   &Probe{HTTPGet: HTTPGetAction{Path: "/healthz", Port: HealthPortName}, PeriodSeconds: 1, FailureThreshold: 30},
		ReadinessProbe: &Probe{HTTPGet: HTTPGetAction{Path: "/readyz", Port: HealthPortName}, PeriodSeconds: 5, TimeoutSeconds: 2, FailureThreshold: 2},
		LivenessProbe:  &Probe{HTTPGet: HTTPGetAction{Path: "/healthz", Port: HealthPortName}, PeriodSeconds: 10, TimeoutSeconds: 2, FailureThreshold: 3},
		VolumeMounts:   []VolumeMount{{Name: proxyConfigVolume, MountPath: proxyConfigDir, ReadOnly: true}},
		SecurityContext: &SecurityContext{
			RunAsNonRoot:             true,
			RunAsUser:                cfg.RunAsUser,
			RunAsGroup:               cfg.RunAsGroup,
			ReadOnlyRootFilesystem:   true,
			AllowPrivilegeEscalation: false,
			Capabilities:             Capabilities{Drop: []string{"ALL"}},
			SeccompProfile:           &SeccompProfile{Type: "RuntimeDefault"},
		},
	}
	if cfg.Control.Address != "" && cfg.Control.TokenSecret != "" {
		c.VolumeMounts = append(c.VolumeMounts, VolumeMount{Name: controlTokenVolume, MountPath: controlTokenDir, ReadOnly: true})
	}
	if cfg.Control.Address != "" && cfg.Control.TLSSecret != "" {
		c.VolumeMounts = append(c.VolumeMounts, VolumeMount{Name: controlTLSVolume, MountPath: controlTLSDir, ReadOnly: true})
	}
	if cfg.NativeSidecar {
		c.RestartPolicy = "Always"
	}
	return c
}

// escape escapes a key for a JSON Pointer (RFC 6901).
func escape(s string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(s)
}

// podName names a pod in messages; at admission it often has only a
// generateName.
func podName(pod *Pod, namespace string) string {
	name := pod.Metadata.Name
	if name == "" {
		name = pod.Metadata.GenerateName + "*"
	}
	return namespace + "/" + name
}

// validDNSLabel reports whether s is an RFC 1123 DNS label-ish resource
// name (lower-case alphanumerics, '-' and '.', at most 253 characters).
func validDNSLabel(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for i, r := range s {
		alnum := r >= 'a' && r <= 'z' || r >= '0' && r <= '9'
		if !alnum && (r != '-' && r != '.' || i == 0 || i == len(s)-1) {
			return false
		}
	}
	return true
}

// validLabelValue reports whether s is a Kubernetes label value that is
// not empty.
func validLabelValue(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for i, r := range s {
		alnum := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
		if !alnum && (r != '-' && r != '_' && r != '.' || i == 0 || i == len(s)-1) {
			return false
		}
	}
	return true
}
