package injector

import "encoding/json"

// Annotations and labels the injector reads and writes.
const (
	// AnnotationInject opts a pod in: "true" injects the sidecar.
	AnnotationInject = "switchyard.io/inject"
	// AnnotationApp overrides the application name taken from a label.
	AnnotationApp = "switchyard.io/app"
	// AnnotationProxyConfig names the ConfigMap (in the pod's namespace)
	// holding the sidecar's proxy.yaml; it overrides Config.ProxyConfigMap.
	AnnotationProxyConfig = "switchyard.io/proxy-config"
	// AnnotationKafkaSecret names the Secret (in the pod's namespace) with
	// the cluster credentials proxy.yaml refers to; it overrides
	// Config.KafkaSecret.
	AnnotationKafkaSecret = "switchyard.io/kafka-secret"
	// AnnotationStatus is set to "injected" on pods the injector patched.
	AnnotationStatus = "switchyard.io/status"
	// LabelApp is set on injected pods to the application name, so that
	// metrics and the future control plane can select by it.
	LabelApp = "switchyard.io/app"
	// AnnotationPrometheusScrape, ...Port and ...Path are the common
	// annotations Prometheus configurations discover pods by. The injector
	// points them at the sidecar's health listener when the pod has none
	// of them; a pod that sets prometheus.io/scrape (even "false") keeps
	// its own.
	AnnotationPrometheusScrape = "prometheus.io/scrape"
	AnnotationPrometheusPort   = "prometheus.io/port"
	AnnotationPrometheusPath   = "prometheus.io/path"
)

// Pod is the part of a core/v1 Pod the injector reads. Fields that are
// only tested for presence stay raw so that nothing is lost or reordered.
type Pod struct {
	Metadata ObjectMeta `json:"metadata"`
	Spec     PodSpec    `json:"spec"`
}

// ObjectMeta is the part of metadata the injector reads.
type ObjectMeta struct {
	Name         string            `json:"name,omitempty"`
	GenerateName string            `json:"generateName,omitempty"`
	Namespace    string            `json:"namespace,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
}

// PodSpec is the part of a pod spec the injector reads.
type PodSpec struct {
	Containers     []NamedObject     `json:"containers"`
	InitContainers []NamedObject     `json:"initContainers,omitempty"`
	Volumes        []json.RawMessage `json:"volumes,omitempty"`
}

// NamedObject is a container (or anything with a name) whose other fields
// the injector does not need.
type NamedObject struct {
	Name string `json:"name"`
}

// Container is the sidecar container the injector writes (core/v1
// Container, only the fields used).
type Container struct {
	Name            string           `json:"name"`
	Image           string           `json:"image"`
	ImagePullPolicy string           `json:"imagePullPolicy,omitempty"`
	Args            []string         `json:"args"`
	Env             []EnvVar         `json:"env,omitempty"`
	Ports           []ContainerPort  `json:"ports,omitempty"`
	Resources       Resources        `json:"resources"`
	StartupProbe    *Probe           `json:"startupProbe,omitempty"`
	ReadinessProbe  *Probe           `json:"readinessProbe,omitempty"`
	LivenessProbe   *Probe           `json:"livenessProbe,omitempty"`
	VolumeMounts    []VolumeMount    `json:"volumeMounts,omitempty"`
	SecurityContext *SecurityContext `json:"securityContext,omitempty"`
	// RestartPolicy "Always" on an init container makes it a native
	// sidecar (Kubernetes 1.29+): started before the app, stopped after it.
	RestartPolicy string `json:"restartPolicy,omitempty"`
}

// EnvVar is a container environment variable, a literal or from a field.
type EnvVar struct {
	Name      string        `json:"name"`
	Value     string        `json:"value,omitempty"`
	ValueFrom *EnvVarSource `json:"valueFrom,omitempty"`
}

// EnvVarSource reads a pod field through the downward API.
type EnvVarSource struct {
	FieldRef *ObjectFieldSelector `json:"fieldRef,omitempty"`
}

// ObjectFieldSelector selects a pod field ("metadata.name").
type ObjectFieldSelector struct {
	FieldPath string `json:"fieldPath"`
}

// ContainerPort is a named container port.
type ContainerPort struct {
	Name          string `json:"name"`
	ContainerPort int32  `json:"containerPort"`
	Protocol      string `json:"protocol,omitempty"`
}

// Resources are a container's requests and limits ("cpu": "50m").
type Resources struct {
	Requests map[string]string `json:"requests,omitempty" yaml:"requests"`
	Limits   map[string]string `json:"limits,omitempty" yaml:"limits"`
}

// Probe is an HTTP GET probe.
type Probe struct {
	HTTPGet          HTTPGetAction `json:"httpGet"`
	PeriodSeconds    int32         `json:"periodSeconds,omitempty"`
	TimeoutSeconds   int32         `json:"timeoutSeconds,omitempty"`
	FailureThreshold int32         `json:"failureThreshold,omitempty"`
}

// HTTPGetAction is a probe's GET request, to a named container port.
type HTTPGetAction struct {
	Path string `json:"path"`
	Port string `json:"port"`
}

// VolumeMount mounts a volume into the sidecar.
type VolumeMount struct {
	Name      string `json:"name"`
	MountPath string `json:"mountPath"`
	ReadOnly  bool   `json:"readOnly,omitempty"`
}

// Volume is a ConfigMap or a Secret volume.
type Volume struct {
	Name      string                 `json:"name"`
	ConfigMap *ConfigMapVolumeSource `json:"configMap,omitempty"`
	Secret    *SecretVolumeSource    `json:"secret,omitempty"`
}

// ConfigMapVolumeSource names the ConfigMap of a volume.
type ConfigMapVolumeSource struct {
	Name string `json:"name"`
}

// SecretVolumeSource projects keys of a Secret into a volume.
type SecretVolumeSource struct {
	SecretName  string      `json:"secretName"`
	Items       []KeyToPath `json:"items,omitempty"`
	DefaultMode *int32      `json:"defaultMode,omitempty"`
}

// KeyToPath maps a Secret key to a file name in the volume.
type KeyToPath struct {
	Key  string `json:"key"`
	Path string `json:"path"`
}

// SecurityContext is the sidecar's locked-down security context.
type SecurityContext struct {
	RunAsNonRoot             bool            `json:"runAsNonRoot"`
	RunAsUser                int64           `json:"runAsUser"`
	RunAsGroup               int64           `json:"runAsGroup"`
	ReadOnlyRootFilesystem   bool            `json:"readOnlyRootFilesystem"`
	AllowPrivilegeEscalation bool            `json:"allowPrivilegeEscalation"`
	Capabilities             Capabilities    `json:"capabilities"`
	SeccompProfile           *SeccompProfile `json:"seccompProfile,omitempty"`
}

// Capabilities lists dropped capabilities.
type Capabilities struct {
	Drop []string `json:"drop"`
}

// SeccompProfile selects the runtime's default seccomp profile.
type SeccompProfile struct {
	Type string `json:"type"`
}

// Operation is one RFC 6902 JSON Patch operation.
type Operation struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// Patch is an RFC 6902 JSON Patch.
type Patch []Operation
