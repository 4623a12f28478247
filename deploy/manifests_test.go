package deploy

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/switchyard/switchyard/deploy/injector"
)

// The Kubernetes objects these tests read: only the fields checked, decoded
// from the manifests as written (kustomize) or rendered (helm template).

type object struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name        string            `yaml:"name"`
		Namespace   string            `yaml:"namespace"`
		Labels      map[string]string `yaml:"labels"`
		Annotations map[string]string `yaml:"annotations"`
	} `yaml:"metadata"`
	Data                         map[string]string `yaml:"data"`
	AutomountServiceAccountToken *bool             `yaml:"automountServiceAccountToken"`
	Spec                         yaml.Node         `yaml:"spec"`
	Subjects                     []struct {
		Kind      string `yaml:"kind"`
		Name      string `yaml:"name"`
		Namespace string `yaml:"namespace"`
	} `yaml:"subjects"`
}

type deploymentSpec struct {
	Replicas *int `yaml:"replicas"`
	Strategy struct {
		Type string `yaml:"type"`
	} `yaml:"strategy"`
	Selector labelSelector `yaml:"selector"`
	Template struct {
		Metadata struct {
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"metadata"`
		Spec podSpec `yaml:"spec"`
	} `yaml:"template"`
}

type podSpec struct {
	ServiceAccountName           string `yaml:"serviceAccountName"`
	AutomountServiceAccountToken *bool  `yaml:"automountServiceAccountToken"`
	SecurityContext              struct {
		RunAsNonRoot   *bool    `yaml:"runAsNonRoot"`
		SeccompProfile *seccomp `yaml:"seccompProfile"`
	} `yaml:"securityContext"`
	InitContainers []container `yaml:"initContainers"`
	Containers     []container `yaml:"containers"`
	Volumes        []volume    `yaml:"volumes"`
}

type seccomp struct {
	Type string `yaml:"type"`
}

type container struct {
	Name  string   `yaml:"name"`
	Image string   `yaml:"image"`
	Args  []string `yaml:"args"`
	Env   []envVar `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	StartupProbe   *probe `yaml:"startupProbe"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	VolumeMounts   []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
	SecurityContext *struct {
		RunAsNonRoot             *bool    `yaml:"runAsNonRoot"`
		ReadOnlyRootFilesystem   *bool    `yaml:"readOnlyRootFilesystem"`
		AllowPrivilegeEscalation *bool    `yaml:"allowPrivilegeEscalation"`
		SeccompProfile           *seccomp `yaml:"seccompProfile"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
}

type envVar struct {
	Name      string `yaml:"name"`
	Value     string `yaml:"value"`
	ValueFrom *struct {
		FieldRef *struct {
			FieldPath string `yaml:"fieldPath"`
		} `yaml:"fieldRef"`
	} `yaml:"valueFrom"`
}

type probe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"`
	} `yaml:"httpGet"`
}

type volume struct {
	Name      string `yaml:"name"`
	ConfigMap *struct {
		Name string `yaml:"name"`
	} `yaml:"configMap"`
	Secret *struct {
		SecretName string `yaml:"secretName"`
		Optional   bool   `yaml:"optional"`
		Items      []struct {
			Key  string `yaml:"key"`
			Path string `yaml:"path"`
		} `yaml:"items"`
	} `yaml:"secret"`
	PersistentVolumeClaim *struct {
		ClaimName string `yaml:"claimName"`
	} `yaml:"persistentVolumeClaim"`
	EmptyDir any `yaml:"emptyDir"`
}

type labelSelector struct {
	MatchLabels      map[string]string `yaml:"matchLabels"`
	MatchExpressions []struct {
		Key      string   `yaml:"key"`
		Operator string   `yaml:"operator"`
		Values   []string `yaml:"values"`
	} `yaml:"matchExpressions"`
}

// matches reports whether the selector selects labels (the operators used
// in these manifests).
func (s labelSelector) matches(labels map[string]string) bool {
	for k, v := range s.MatchLabels {
		if labels[k] != v {
			return false
		}
	}
	for _, e := range s.MatchExpressions {
		v, ok := labels[e.Key]
		switch e.Operator {
		case "Exists":
			if !ok {
				return false
			}
		case "In":
			if !ok || !slices.Contains(e.Values, v) {
				return false
			}
		default:
			return false
		}
	}
	return true
}

type serviceSpec struct {
	Selector map[string]string `yaml:"selector"`
	Ports    []struct {
		Name       string `yaml:"name"`
		Port       int    `yaml:"port"`
		TargetPort string `yaml:"targetPort"`
	} `yaml:"ports"`
}

type networkPolicySpec struct {
	PodSelector labelSelector `yaml:"podSelector"`
	PolicyTypes []string      `yaml:"policyTypes"`
	Ingress     []struct {
		From  []peer       `yaml:"from"`
		Ports []policyPort `yaml:"ports"`
	} `yaml:"ingress"`
	Egress []struct {
		To    []peer       `yaml:"to"`
		Ports []policyPort `yaml:"ports"`
	} `yaml:"egress"`
}

type peer struct {
	NamespaceSelector *labelSelector `yaml:"namespaceSelector"`
	PodSelector       *labelSelector `yaml:"podSelector"`
}

type policyPort struct {
	Protocol string `yaml:"protocol"`
	Port     int    `yaml:"port"`
}

// decodeDocs decodes a multi-document YAML stream, skipping empty documents.
func decodeDocs(t *testing.T, where string, raw []byte) []object {
	t.Helper()
	var objs []object
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	for {
		var o object
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		if o.Kind != "" {
			objs = append(objs, o)
		}
	}
}

// loadKustomization reads a kustomization's resources and applies its
// namespace: all the kustomizations here use (image tags aside).
func loadKustomization(t *testing.T, dir string) []object {
	t.Helper()
	var k struct {
		Namespace string   `yaml:"namespace"`
		Resources []string `yaml:"resources"`
	}
	raw, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &k); err != nil {
		t.Fatal(err)
	}
	var objs []object
	for _, r := range k.Resources {
		raw, err := os.ReadFile(filepath.Join(dir, r))
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range decodeDocs(t, filepath.Join(dir, r), raw) {
			if k.Namespace != "" && o.Kind != "Namespace" {
				o.Metadata.Namespace = k.Namespace
			}
			objs = append(objs, o)
		}
	}
	return objs
}

func loadFile(t *testing.T, path string) []object {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return decodeDocs(t, path, raw)
}

// helmTemplate renders the chart with the helm named by $HELM (set by
// deploy.mk), or skips.
func helmTemplate(t *testing.T, args ...string) []object {
	t.Helper()
	helm := os.Getenv("HELM")
	if helm == "" {
		t.Skip("HELM is not set: run make test-deploy (deploy/deploy.mk installs helm)")
	}
	args = append([]string{"template", "sy", "helm/switchyard", "--kube-version", "1.37.0"}, args...)
	out, err := exec.Command(helm, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("helm %v: %v\n%s", args, err, out)
	}
	return decodeDocs(t, "helm template", out)
}

func find(objs []object, kind, name string) (object, bool) {
	for _, o := range objs {
		if o.Kind == kind && o.Metadata.Name == name {
			return o, true
		}
	}
	return object{}, false
}

func spec[S any](t *testing.T, o object) S {
	t.Helper()
	var s S
	if err := o.Spec.Decode(&s); err != nil {
		t.Fatalf("%s %s: spec: %v", o.Kind, o.Metadata.Name, err)
	}
	return s
}

// controlPlane is the control plane of a set of manifests: its Deployment
// and what it is wired to.
type controlPlane struct {
	deploy    object
	spec      deploymentSpec
	container container
	service   object
	svcSpec   serviceSpec
	config    string // control.yaml
	// tokens are control.yaml's named tokens, each with the Secret key
	// its file is mounted from.
	tokens []namedToken
}

// namedToken is a token of control.yaml's tokens and the Secret key its
// file comes from.
type namedToken struct {
	Name      string   `yaml:"name"`
	Role      string   `yaml:"role"`
	File      string   `yaml:"file"`
	Apps      []string `yaml:"apps"`
	Instances []string `yaml:"instances"`
	secret    string
	key       string
}

// flag returns the value following name in args.
func flag(args []string, name string) (string, bool) {
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1], true
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v, true
		}
	}
	return "", false
}

func (c container) port(name string) int {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	return 0
}

func (s podSpec) volume(name string) (volume, bool) {
	for _, v := range s.Volumes {
		if v.Name == name {
			return v, true
		}
	}
	return volume{}, false
}

// mountOf returns the mount of path in c (the longest mount path that is
// a prefix of it) and the volume behind it.
func (s podSpec) mountOf(c container, path string) (mountPath string, v volume, ok bool) {
	for _, m := range c.VolumeMounts {
		if (path == m.MountPath || strings.HasPrefix(path, m.MountPath+"/")) && len(m.MountPath) > len(mountPath) {
			mountPath = m.MountPath
			v, ok = s.volume(m.Name)
		}
	}
	return mountPath, v, ok
}

// findControlPlane finds the Deployment that runs `switchyard control`
// and checks how it is wired: its Service, its configuration and token,
// its store.
func findControlPlane(t *testing.T, objs []object) controlPlane {
	t.Helper()
	var cp controlPlane
	n := 0
	for _, o := range objs {
		if o.Kind != "Deployment" {
			continue
		}
		s := spec[deploymentSpec](t, o)
		for _, c := range s.Template.Spec.Containers {
			if len(c.Args) > 0 && c.Args[0] == "control" {
				cp.deploy, cp.spec, cp.container = o, s, c
				n++
			}
		}
	}
	if n != 1 {
		t.Fatalf("%d containers run `switchyard control`, want 1", n)
	}
	ps := cp.spec.Template.Spec
	c := cp.container

	// One writer of the file store.
	if cp.spec.Replicas == nil || *cp.spec.Replicas != 1 || cp.spec.Strategy.Type != "Recreate" {
		t.Errorf("control plane: replicas %v strategy %q: want 1 and Recreate (the file store has one writer)", cp.spec.Replicas, cp.spec.Strategy.Type)
	}
	// No Kubernetes API access: no token, no role.
	if ps.AutomountServiceAccountToken == nil || *ps.AutomountServiceAccountToken {
		t.Errorf("control plane pod: automountServiceAccountToken must be false")
	}
	sa, ok := find(objs, "ServiceAccount", ps.ServiceAccountName)
	if !ok || sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
		t.Errorf("control plane ServiceAccount %q: missing, or automountServiceAccountToken not false", ps.ServiceAccountName)
	}
	for _, o := range objs {
		for _, s := range o.Subjects {
			if s.Kind == "ServiceAccount" && s.Name == ps.ServiceAccountName {
				t.Errorf("%s %s grants the control plane's ServiceAccount rights it does not need", o.Kind, o.Metadata.Name)
			}
		}
	}
	// Listen on the container port the probes and the Service use.
	listen, _ := flag(c.Args, "--listen")
	_, port, err := net.SplitHostPort(listen)
	api := c.port("api")
	if err != nil || port != strconv.Itoa(api) || api == 0 {
		t.Errorf("control plane: --listen %q, container port api %d: want the same port", listen, api)
	}
	for _, p := range []*probe{c.StartupProbe, c.ReadinessProbe, c.LivenessProbe} {
		// /healthz is the control plane's only health endpoint.
		if p == nil || p.HTTPGet.Path != "/healthz" || p.HTTPGet.Port != "api" {
			t.Errorf("control plane probe %+v: want GET /healthz on port api", p)
		}
	}
	for _, o := range objs {
		if o.Kind == "Service" {
			s := spec[serviceSpec](t, o)
			if len(s.Selector) > 0 && (labelSelector{MatchLabels: s.Selector}).matches(cp.spec.Template.Metadata.Labels) {
				cp.service, cp.svcSpec = o, s
			}
		}
	}
	if cp.service.Kind == "" || len(cp.svcSpec.Ports) != 1 || cp.svcSpec.Ports[0].TargetPort != "api" {
		t.Fatalf("control plane Service: %+v: want one selecting the pods, one port targeting api", cp.svcSpec)
	}
	// The configuration: control.yaml from a ConfigMap, the token a file
	// from a Secret, the store on the persistent volume.
	cfgPath, _ := flag(c.Args, "--config")
	mount, v, ok := ps.mountOf(c, cfgPath)
	if !ok || v.ConfigMap == nil {
		t.Fatalf("control plane: --config %s is not on a ConfigMap volume", cfgPath)
	}
	cm, ok := find(objs, "ConfigMap", v.ConfigMap.Name)
	cp.config = cm.Data[strings.TrimPrefix(cfgPath, mount+"/")]
	if !ok || cp.config == "" {
		t.Fatalf("control plane: ConfigMap %s has no %s", v.ConfigMap.Name, strings.TrimPrefix(cfgPath, mount+"/"))
	}
	var cfg struct {
		TokenFile string       `yaml:"tokenFile"`
		Tokens    []namedToken `yaml:"tokens"`
		StoreDir  string       `yaml:"storeDir"`
	}
	if err := yaml.Unmarshal([]byte(cp.config), &cfg); err != nil {
		t.Fatalf("control.yaml: %v", err)
	}
	if mount, v, ok := ps.mountOf(c, cfg.TokenFile); !ok || v.Secret == nil || len(v.Secret.Items) != 1 || mount+"/"+v.Secret.Items[0].Path != cfg.TokenFile {
		t.Errorf("control plane: tokenFile %s is not a key of a Secret volume", cfg.TokenFile)
	}
	for _, tok := range cfg.Tokens {
		mount, v, ok := ps.mountOf(c, tok.File)
		if !ok || v.Secret == nil {
			t.Errorf("control plane: tokens %s: file %s is not on a Secret volume", tok.Name, tok.File)
			continue
		}
		tok.secret, tok.key = v.Secret.SecretName, strings.TrimPrefix(tok.File, mount+"/")
		for _, it := range v.Secret.Items {
			if mount+"/"+it.Path == tok.File {
				tok.key = it.Key
			}
		}
		cp.tokens = append(cp.tokens, tok)
	}
	if mount, v, ok := ps.mountOf(c, cfg.StoreDir); !ok || mount == cfg.StoreDir || (v.PersistentVolumeClaim == nil && v.EmptyDir == nil) {
		t.Errorf("control plane: storeDir %s must be a directory below a volume's mount point (not the mount itself: lost+found)", cfg.StoreDir)
	} else if v.PersistentVolumeClaim != nil {
		if _, ok := find(objs, "PersistentVolumeClaim", v.PersistentVolumeClaim.ClaimName); !ok {
			t.Errorf("control plane: PersistentVolumeClaim %s is not defined", v.PersistentVolumeClaim.ClaimName)
		}
	}
	return cp
}

// address is how pods reach the control plane: its Service's DNS name.
func (cp controlPlane) address() string {
	return fmt.Sprintf("%s.%s.svc:%d", cp.service.Metadata.Name, cp.service.Metadata.Namespace, cp.svcSpec.Ports[0].Port)
}

// tokenSecret is the Secret the control plane reads its token from.
func (cp controlPlane) tokenSecret(t *testing.T) (name, key string) {
	t.Helper()
	for _, v := range cp.spec.Template.Spec.Volumes {
		if v.Secret != nil && len(v.Secret.Items) == 1 {
			return v.Secret.SecretName, v.Secret.Items[0].Key
		}
	}
	t.Fatal("control plane: no token Secret volume")
	return "", ""
}

// sidecarToken returns the control plane's token of role sidecar that may
// claim app and the instances of namespace ns (those the sidecars give
// themselves, namespace/pod), failing when there is none.
func (cp controlPlane) sidecarToken(t *testing.T, ns, app string) namedToken {
	t.Helper()
	for _, tok := range cp.tokens {
		if tok.Role == "sidecar" && slices.Contains(tok.Apps, app) && slices.Equal(tok.Instances, []string{ns + "/*"}) {
			return tok
		}
	}
	t.Fatalf("control plane: no token of role sidecar for app %s, instances %s/* (tokens %+v)", app, ns, cp.tokens)
	return namedToken{}
}

// checkSidecarCredential checks the credential a sidecar of app in
// namespace ns mounts (Secret secret, key key): a sidecar token of its
// namespace, never a copy of the operator token. With the Secrets rendered
// (Helm), the values are compared too: the namespace's Secret holds the
// sidecar token the control plane reads, and not the operator's.
func checkSidecarCredential(t *testing.T, objs []object, cp controlPlane, ns, app, secret, key string) {
	t.Helper()
	opSecret, opKey := cp.tokenSecret(t)
	if secret == opSecret {
		t.Errorf("sidecar: mounts Secret %s, the name of the control plane's operator token (tokenFile): a copy of it would let "+
			"whoever reads the namespace's Secrets move every application", secret)
	}
	tok := cp.sidecarToken(t, ns, app)
	if tok.secret == opSecret && tok.key == opKey {
		t.Errorf("control plane: the sidecar token %s is the operator token's file", tok.Name)
	}
	mine, rendered := findSecret(objs, ns, secret)
	if !rendered {
		return // created by hand (kustomize): the README tells how
	}
	theirs, ok := findSecret(objs, cp.deploy.Metadata.Namespace, tok.secret)
	if !ok || theirs[tok.key] == "" || mine[key] != theirs[tok.key] {
		t.Errorf("Secret %s/%s key %s does not hold the control plane's sidecar token %s (Secret %s key %s)",
			ns, secret, key, tok.Name, tok.secret, tok.key)
	}
	for _, o := range objs {
		if o.Kind == "Secret" && o.Metadata.Namespace != cp.deploy.Metadata.Namespace && o.Metadata.Name == opSecret {
			t.Errorf("Secret %s in namespace %s: the operator token's name outside the control plane's namespace", opSecret, o.Metadata.Namespace)
		}
	}
}

// findSecret returns the decoded data of the Secret ns/name in objs.
func findSecret(objs []object, ns, name string) (map[string]string, bool) {
	for _, o := range objs {
		if o.Kind != "Secret" || o.Metadata.Name != name || o.Metadata.Namespace != ns {
			continue
		}
		out := map[string]string{}
		for k, v := range o.Data {
			b, err := base64.StdEncoding.DecodeString(v)
			if err != nil {
				return nil, false
			}
			out[k] = string(b)
		}
		return out, true
	}
	return nil, false
}

// checkNetworkPolicy checks that a NetworkPolicy selects the control plane
// and admits pods labelled sidecarLabels on its port, with egress to DNS
// and Kafka.
func checkNetworkPolicy(t *testing.T, objs []object, cp controlPlane, sidecarLabels map[string]string) {
	t.Helper()
	api := cp.container.port("api")
	for _, o := range objs {
		if o.Kind != "NetworkPolicy" {
			continue
		}
		np := spec[networkPolicySpec](t, o)
		if !np.PodSelector.matches(cp.spec.Template.Metadata.Labels) {
			continue
		}
		admitted := false
		for _, in := range np.Ingress {
			if !slices.ContainsFunc(in.Ports, func(p policyPort) bool { return p.Port == api }) || len(in.Ports) != 1 {
				t.Errorf("NetworkPolicy %s: ingress ports %+v: want only the API port %d", o.Metadata.Name, in.Ports, api)
			}
			for _, p := range in.From {
				if p.NamespaceSelector != nil && len(p.NamespaceSelector.MatchLabels)+len(p.NamespaceSelector.MatchExpressions) == 0 &&
					p.PodSelector != nil && p.PodSelector.matches(sidecarLabels) {
					admitted = true
				}
			}
		}
		if !admitted {
			t.Errorf("NetworkPolicy %s does not admit the sidecars (labels %v) from any namespace", o.Metadata.Name, sidecarLabels)
		}
		var dns, kafka bool
		for _, e := range np.Egress {
			for _, p := range e.Ports {
				dns = dns || p.Port == 53
				kafka = kafka || p.Port == 9092
			}
		}
		if !slices.Contains(np.PolicyTypes, "Egress") || !dns || !kafka {
			t.Errorf("NetworkPolicy %s: policyTypes %v: want egress limited to DNS and Kafka", o.Metadata.Name, np.PolicyTypes)
		}
		return
	}
	t.Errorf("no NetworkPolicy selects the control plane")
}

var envRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// checkPods checks every pod template and pod running the Switchyard
// image: locked down, probes and mounts that resolve, args whose $(VAR)
// the container defines.
func checkPods(t *testing.T, objs []object) {
	t.Helper()
	for _, o := range objs {
		var ps podSpec
		switch o.Kind {
		case "Deployment":
			ps = spec[deploymentSpec](t, o).Template.Spec
		case "Pod":
			ps = spec[podSpec](t, o)
		default:
			continue
		}
		for _, c := range append(slices.Clone(ps.InitContainers), ps.Containers...) {
			if !strings.HasPrefix(c.Image, "switchyard") {
				continue // the example application
			}
			where := o.Kind + " " + o.Metadata.Name + " container " + c.Name
			sc := c.SecurityContext
			nonRoot := ps.SecurityContext.RunAsNonRoot != nil && *ps.SecurityContext.RunAsNonRoot || sc != nil && sc.RunAsNonRoot != nil && *sc.RunAsNonRoot
			seccompOK := ps.SecurityContext.SeccompProfile != nil && ps.SecurityContext.SeccompProfile.Type == "RuntimeDefault" ||
				sc != nil && sc.SeccompProfile != nil && sc.SeccompProfile.Type == "RuntimeDefault"
			if sc == nil || !nonRoot || !seccompOK || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
				sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || !slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) {
				t.Errorf("%s: want non-root, seccomp RuntimeDefault, a read-only root file system, no privilege escalation, capabilities dropped", where)
			}
			for _, p := range []*probe{c.StartupProbe, c.ReadinessProbe, c.LivenessProbe} {
				if p != nil && c.port(p.HTTPGet.Port) == 0 {
					t.Errorf("%s: probe on port %q, which the container does not declare", where, p.HTTPGet.Port)
				}
			}
			for _, m := range c.VolumeMounts {
				if _, ok := ps.volume(m.Name); !ok {
					t.Errorf("%s: mounts volume %s, which the pod does not define", where, m.Name)
				}
				if !m.ReadOnly && m.Name != "store" {
					t.Errorf("%s: mount %s is writable", where, m.Name)
				}
			}
			for _, a := range c.Args {
				for _, m := range envRef.FindAllStringSubmatch(a, -1) {
					if !slices.ContainsFunc(c.Env, func(e envVar) bool { return e.Name == m[1] }) {
						t.Errorf("%s: arg %q refers to $(%s), which the container does not define: it would be passed literally", where, a, m[1])
					}
				}
			}
		}
	}
}

// TestKustomizeManifests checks how deploy/kubernetes is wired: the
// control plane (one writer, no API access, its Service, config, token,
// store, probes and NetworkPolicy), and the example application's sidecar
// pointed at that Service with the same token.
func TestKustomizeManifests(t *testing.T) {
	cpObjs := loadKustomization(t, "kubernetes/control-plane")
	appObjs := loadKustomization(t, "kubernetes/base")
	ctlPod := loadFile(t, "kubernetes/control-plane/ctl-pod.yaml")
	checkPods(t, slices.Concat(cpObjs, appObjs, ctlPod))

	cp := findControlPlane(t, cpObjs)

	app, ok := find(appObjs, "Deployment", "orders")
	if !ok {
		t.Fatal("no Deployment orders in kubernetes/base")
	}
	as := spec[deploymentSpec](t, app)
	labels := as.Template.Metadata.Labels
	checkNetworkPolicy(t, cpObjs, cp, labels)
	var sidecar *container
	for i, c := range as.Template.Spec.InitContainers {
		if c.Name == "switchyard-proxy" {
			sidecar = &as.Template.Spec.InitContainers[i]
		}
	}
	if sidecar == nil {
		t.Fatal("orders: no switchyard-proxy sidecar")
	}
	secret, key := checkSidecar(t, as.Template.Spec, *sidecar, labels, cp.address())
	// Applied in namespace shop (kustomization.yaml).
	checkSidecarCredential(t, slices.Concat(cpObjs, appObjs), cp, "shop", labels["switchyard.io/app"], secret, key)
	healthPort := checkSidecarListeners(t, *sidecar, as.Template.Metadata.Annotations)
	checkAppNetworkPolicy(t, appObjs, labels, healthPort)

	// The ctl pod reaches the Service by its short name, from its namespace.
	server, _ := flag(spec[podSpec](t, ctlPod[0]).Containers[0].Args, "--server")
	if want := fmt.Sprintf("%s:%d", cp.service.Metadata.Name, cp.svcSpec.Ports[0].Port); server != want {
		t.Errorf("ctl pod: --server %s, want %s", server, want)
	}
}

// checkSidecar checks a proxy sidecar that follows the control plane at
// address with a token from a Secret, and returns that Secret's name and
// key.
func checkSidecar(t *testing.T, ps podSpec, c container, labels map[string]string, address string) (secret, key string) {
	t.Helper()
	if got, _ := flag(c.Args, "--control"); got != address {
		t.Errorf("sidecar: --control %q, want the control plane's Service %q", got, address)
	}
	if labels["switchyard.io/app"] == "" {
		t.Errorf("sidecar pod labels %v: want switchyard.io/app (the control plane's NetworkPolicy and cutovers select by it)", labels)
	}
	appArg, _ := flag(c.Args, "--app")
	if appArg != labels["switchyard.io/app"] && appArg != "$(SWITCHYARD_APP)" {
		t.Errorf("sidecar: --app %q, want the switchyard.io/app label %q", appArg, labels["switchyard.io/app"])
	}
	if inst, _ := flag(c.Args, "--instance"); !strings.Contains(inst, "$(SWITCHYARD_POD_NAME)") {
		t.Errorf("sidecar: --instance %q: want it from the pod name", inst)
	}
	tokenFile, _ := flag(c.Args, "--control-token-file")
	mount, v, ok := ps.mountOf(c, tokenFile)
	if !ok || v.Secret == nil || len(v.Secret.Items) != 1 || mount+"/"+v.Secret.Items[0].Path != tokenFile {
		t.Errorf("sidecar: --control-token-file %q: want a key of a Secret volume", tokenFile)
		return "", ""
	}
	return v.Secret.SecretName, v.Secret.Items[0].Key
}

// checkSidecarListeners checks where the sidecar listens: the admin API
// (switch, gates) on loopback, where no other pod reaches it; the health
// listener on the pod address, on the one port the container declares,
// which the probes and the Prometheus annotations (when the pod has them)
// use. It returns the health port.
func checkSidecarListeners(t *testing.T, c container, annotations map[string]string) int {
	t.Helper()
	admin, _ := flag(c.Args, "--admin")
	if host, _, err := net.SplitHostPort(admin); err != nil || net.ParseIP(host) == nil || !net.ParseIP(host).IsLoopback() {
		t.Errorf("sidecar: --admin %q: want a loopback address (the admin API can gate and switch the pod)", admin)
	}
	health, _ := flag(c.Args, "--health-listen")
	_, hp, err := net.SplitHostPort(health)
	port, _ := strconv.Atoi(hp)
	if err != nil || port == 0 {
		t.Errorf("sidecar: --health-listen %q: want host:port", health)
	}
	if len(c.Ports) != 1 || c.Ports[0].ContainerPort != port {
		t.Errorf("sidecar: ports %+v: want only the health port %d", c.Ports, port)
	}
	for _, p := range []*probe{c.StartupProbe, c.ReadinessProbe, c.LivenessProbe} {
		if p == nil || c.port(p.HTTPGet.Port) != port {
			t.Errorf("sidecar: probe %+v: want it on the health port %d", p, port)
		}
	}
	if annotations["prometheus.io/scrape"] != "true" || annotations["prometheus.io/port"] != strconv.Itoa(port) || annotations["prometheus.io/path"] != "/metrics" {
		t.Errorf("pod annotations %v: want Prometheus pointed at /metrics on the health port %d", annotations, port)
	}
	return port
}

// checkAppNetworkPolicy checks the NetworkPolicies that select the
// application's pods (labels): there is one, and the sidecar's health
// port is admitted from the monitoring namespace only, never from
// everywhere.
func checkAppNetworkPolicy(t *testing.T, objs []object, labels map[string]string, healthPort int) {
	t.Helper()
	found := false
	for _, o := range objs {
		if o.Kind != "NetworkPolicy" {
			continue
		}
		np := spec[networkPolicySpec](t, o)
		if !np.PodSelector.matches(labels) {
			continue
		}
		found = true
		if !slices.Equal(np.PolicyTypes, []string{"Ingress"}) {
			t.Errorf("NetworkPolicy %s: policyTypes %v, want [Ingress]", o.Metadata.Name, np.PolicyTypes)
		}
		admitted := false
		for _, in := range np.Ingress {
			if !slices.ContainsFunc(in.Ports, func(p policyPort) bool { return p.Port == healthPort }) {
				continue
			}
			if len(in.From) == 0 {
				t.Errorf("NetworkPolicy %s admits the health port %d from everywhere", o.Metadata.Name, healthPort)
			}
			for _, p := range in.From {
				if p.NamespaceSelector == nil || p.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "monitoring" || p.PodSelector != nil {
					t.Errorf("NetworkPolicy %s: health port %d from %+v: want the monitoring namespace only", o.Metadata.Name, healthPort, p)
				}
			}
			admitted = true
		}
		if !admitted {
			t.Errorf("NetworkPolicy %s: the health port %d is not admitted: Prometheus could not scrape", o.Metadata.Name, healthPort)
		}
	}
	if !found {
		t.Errorf("no NetworkPolicy selects the application's pods (labels %v)", labels)
	}
}

// TestHelmAppNetworkPolicy: off by default; on, one policy per listed
// namespace selecting the injected pod, admitting its health port from the
// monitoring namespace and the applications' own rules; on without
// namespaces, a template error naming the value.
func TestHelmAppNetworkPolicy(t *testing.T) {
	appPolicies := func(objs []object) []object {
		var out []object
		for _, o := range objs {
			if o.Kind == "NetworkPolicy" && o.Metadata.Labels["app.kubernetes.io/name"] == "switchyard-app" {
				out = append(out, o)
			}
		}
		return out
	}
	if got := appPolicies(helmTemplate(t, "-n", "switchyard")); len(got) != 0 {
		t.Errorf("default values render %d application NetworkPolicies, want none", len(got))
	}
	objs := helmTemplate(t, "-n", "switchyard", "--set", "appNetworkPolicy.enabled=true", "--set", "appNetworkPolicy.namespaces={shop,payments}",
		"--set", "appNetworkPolicy.ingress[0].ports[0].port=8080")
	pod, cfg := injectedPod(t, objs)
	got := appPolicies(objs)
	var namespaces []string
	for _, o := range got {
		namespaces = append(namespaces, o.Metadata.Namespace)
	}
	if !slices.Equal(namespaces, []string{"shop", "payments"}) {
		t.Fatalf("application NetworkPolicies in %v, want shop and payments", namespaces)
	}
	checkAppNetworkPolicy(t, got[:1], pod.labels, cfg.HealthPort)
	np := spec[networkPolicySpec](t, got[0])
	if len(np.Ingress) != 2 || len(np.Ingress[1].Ports) != 1 || np.Ingress[1].Ports[0].Port != 8080 {
		t.Errorf("ingress %+v: want the health rule and the application's port 8080", np.Ingress)
	}
	helm := os.Getenv("HELM")
	out, err := exec.Command(helm, "template", "sy", "helm/switchyard", "--kube-version", "1.37.0", "--set", "appNetworkPolicy.enabled=true").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "appNetworkPolicy.namespaces") {
		t.Errorf("enabled without namespaces: %v\n%s\nwant an error naming appNetworkPolicy.namespaces", err, out)
	}
}

// TestHelmManifests checks the chart with the control plane enabled the
// same way, and the sidecar the chart's injector would inject.
func TestHelmManifests(t *testing.T) {
	objs := helmTemplate(t, "-n", "switchyard", "-f", "helm/switchyard/ci/control-plane-values.yaml")
	checkPods(t, objs)
	cp := findControlPlane(t, objs)
	pod, cfg := injectedPod(t, objs)
	checkNetworkPolicy(t, objs, cp, pod.labels)
	checkPods(t, []object{pod.object(t)})
	secret, key := checkSidecar(t, pod.spec, pod.sidecar, pod.labels, cp.address())
	checkSidecarCredential(t, objs, cp, pod.namespace, pod.labels["switchyard.io/app"], secret, key)
	if _, ok := findSecret(objs, pod.namespace, secret); !ok {
		t.Errorf("no Secret %s in namespace %s (controlPlane.sidecarTokens of the ci values lists it)", secret, pod.namespace)
	}
	healthPort := checkSidecarListeners(t, pod.sidecar, pod.annotations)
	if healthPort != cfg.HealthPort {
		t.Errorf("sidecar health port %d, injector healthPort %d", healthPort, cfg.HealthPort)
	}
	// Disabled: the sidecars are not pointed anywhere.
	for _, set := range [][]string{nil, {"-f", "helm/switchyard/ci/control-plane-values.yaml", "--set", "injector.sidecar.control.enabled=false"}} {
		objs := helmTemplate(t, append([]string{"-n", "switchyard"}, set...)...)
		if _, cfg := injectedPod(t, objs); cfg.Control.Address != "" {
			t.Errorf("%v: sidecars connect to %q, want no control plane", set, cfg.Control.Address)
		}
	}
}

// TestHelmSidecarTokens: each namespace of controlPlane.sidecarTokens gets
// a token of its own, scoped to its apps and instances, in the Secret the
// injector mounts, and the control plane reads every one; the operator
// token never leaves the release namespace; a bad entry is a template
// error naming the value.
func TestHelmSidecarTokens(t *testing.T) {
	ci := []string{"-n", "switchyard", "-f", "helm/switchyard/ci/control-plane-values.yaml"}
	objs := helmTemplate(t, append(ci, "--set", "controlPlane.sidecarTokens[1].namespace=payments",
		"--set", "controlPlane.sidecarTokens[1].apps={payments-*,ledger}")...)
	cp := findControlPlane(t, objs)
	_, cfg := injectedPod(t, objs)
	values := map[string]string{}
	for _, tc := range []struct {
		ns   string
		apps []string
	}{{"shop", []string{"orders"}}, {"payments", []string{"payments-*", "ledger"}}} {
		tok := cp.sidecarToken(t, tc.ns, tc.apps[0])
		if !slices.Equal(tok.Apps, tc.apps) || tok.Name != "sidecars-"+tc.ns {
			t.Errorf("token %+v: want sidecars-%s with apps %v", tok, tc.ns, tc.apps)
		}
		checkSidecarCredential(t, objs, cp, tc.ns, tc.apps[0], cfg.Control.TokenSecret, cfg.Control.TokenSecretKey)
		data, ok := findSecret(objs, tc.ns, cfg.Control.TokenSecret)
		if !ok || len(data) != 1 || len(data[cfg.Control.TokenSecretKey]) < 32 {
			t.Fatalf("Secret %s/%s: %d keys: want the token alone, at least 32 characters", tc.ns, cfg.Control.TokenSecret, len(data))
		}
		values[tc.ns] = data[cfg.Control.TokenSecretKey]
	}
	if values["shop"] == values["payments"] {
		t.Error("two namespaces share a token")
	}
	// No sidecar token: nothing rendered, nothing mounted.
	objs = helmTemplate(t, append(ci, "--set", "controlPlane.sidecarTokens=null")...)
	for _, o := range objs {
		if o.Kind == "Secret" && strings.Contains(o.Metadata.Name, "token") {
			t.Errorf("without sidecarTokens: Secret %s/%s rendered", o.Metadata.Namespace, o.Metadata.Name)
		}
	}
	if cp := findControlPlane(t, objs); len(cp.tokens) != 0 {
		t.Errorf("without sidecarTokens: tokens %+v", cp.tokens)
	}

	helm := os.Getenv("HELM")
	for _, tc := range []struct {
		set  []string
		want string
	}{
		{[]string{"controlPlane.sidecarTokens[0].apps=null"}, "controlPlane.sidecarTokens[0].apps: required"},
		{[]string{"controlPlane.sidecarTokens[1].namespace=shop", "controlPlane.sidecarTokens[1].apps={billing}"},
			"controlPlane.sidecarTokens[1].namespace: shop repeated"},
		{[]string{"controlPlane.sidecarTokens[1].apps={billing}"}, "controlPlane.sidecarTokens[1].namespace: required"},
	} {
		args := append([]string{"template", "sy", "helm/switchyard", "--kube-version", "1.37.0"}, ci...)
		for _, s := range tc.set {
			args = append(args, "--set", s)
		}
		out, err := exec.Command(helm, args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("--set %v: %v\n%s\nwant an error naming %q", tc.set, err, out, tc.want)
		}
	}
}

// injected is a pod as the injector leaves it.
type injected struct {
	name, namespace string
	labels          map[string]string
	annotations     map[string]string
	spec            podSpec
	sidecar         container
}

// object wraps the pod as a Pod object (for checkPods).
func (p injected) object(t *testing.T) object {
	t.Helper()
	var o object
	o.Kind, o.Metadata.Name = "Pod", p.name
	if err := o.Spec.Encode(p.spec); err != nil {
		t.Fatal(err)
	}
	return o
}

// injectedPod runs the injector, configured by the chart's injector
// ConfigMap in objs, on the recorded pod of injector/testdata/annotated.json.
func injectedPod(t *testing.T, objs []object) (injected, injector.Config) {
	t.Helper()
	var cfg injector.Config
	found := false
	for _, o := range objs {
		if o.Kind == "ConfigMap" && o.Data["injector.yaml"] != "" {
			cfg = injector.DefaultConfig()
			dec := yaml.NewDecoder(strings.NewReader(o.Data["injector.yaml"]))
			dec.KnownFields(true)
			if err := dec.Decode(&cfg); err != nil {
				t.Fatalf("injector.yaml: %v", err)
			}
			found = true
		}
	}
	if !found {
		t.Fatal("no injector ConfigMap")
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("injector.yaml: %v", err)
	}
	raw, err := os.ReadFile("injector/testdata/annotated.json")
	if err != nil {
		t.Fatal(err)
	}
	var review struct {
		Request struct {
			Object injector.Pod `json:"object"`
		} `json:"request"`
	}
	if err := json.Unmarshal(raw, &review); err != nil {
		t.Fatal(err)
	}
	pod := review.Request.Object
	patch, err := injector.Inject(&pod, "shop", cfg)
	if err != nil || patch == nil {
		t.Fatalf("Inject: %v, %v", patch, err)
	}
	p := injected{name: "orders-7d9c8b6f5-x2x9q", namespace: "shop", labels: maps.Clone(pod.Metadata.Labels),
		annotations: maps.Clone(pod.Metadata.Annotations)}
	// The patch's values, through JSON (which YAML reads), into the types
	// checked here.
	recode := func(v any, into any) {
		b, err := json.Marshal(v)
		if err == nil {
			err = yaml.Unmarshal(b, into)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, op := range patch {
		switch {
		case op.Path == "/spec/initContainers" || op.Path == "/spec/initContainers/0" || op.Path == "/spec/containers/-":
			var cs []container
			if c, ok := op.Value.(injector.Container); ok {
				recode([]injector.Container{c}, &cs)
			} else {
				recode(op.Value, &cs)
			}
			p.sidecar = cs[0]
			p.spec.InitContainers = append(p.spec.InitContainers, cs...)
		case strings.HasPrefix(op.Path, "/spec/volumes"):
			var vs []volume
			if v, ok := op.Value.(injector.Volume); ok {
				recode([]injector.Volume{v}, &vs)
			} else {
				recode(op.Value, &vs)
			}
			p.spec.Volumes = append(p.spec.Volumes, vs...)
		case op.Path == "/metadata/labels/switchyard.io~1app":
			p.labels[injector.LabelApp] = op.Value.(string)
		case strings.HasPrefix(op.Path, "/metadata/annotations/"):
			key := strings.NewReplacer("~1", "/", "~0", "~").Replace(strings.TrimPrefix(op.Path, "/metadata/annotations/"))
			p.annotations[key] = op.Value.(string)
		}
	}
	return p, cfg
}
