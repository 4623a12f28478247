package deploy

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"go.yaml.in/yaml/v3"
)

// TestManifestsRun runs what the manifests describe, the way the kubelet
// would, with the switchyard binary built from this tree: the control
// plane's container (its args, its control.yaml from the ConfigMap, its
// token from the Secret, its store on a volume), the example application's
// sidecar (args with $(VAR) expanded from the downward API, proxy.yaml,
// the token) and `switchyard ctl` — against two in-process kfake clusters
// standing in for the placeholder bootstrap addresses. It waits for the
// manifests' probes, checks the sidecar registered as the application and
// instance the pod gives it, runs the first cutover of the README and
// checks the sidecar moved. Once for deploy/kubernetes; once for the Helm
// chart (ci values) and its injector when HELM is set.
//
// What it rewrites, and only that: bootstrap addresses (to the kfake
// clusters), listen and health addresses (to free loopback ports), the
// admin address's port (to a free one; its host stays the manifest's, so
// an admin API exposed without credentials fails to start), the Service
// address (to the control plane's port) and mount paths (to temporary
// directories).
func TestManifestsRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildSwitchyard(t)
	t.Run("kustomize", func(t *testing.T) {
		cpObjs := loadKustomization(t, "kubernetes/control-plane")
		appObjs := loadKustomization(t, "kubernetes/base")
		cp := findControlPlane(t, cpObjs)
		app, _ := find(appObjs, "Deployment", "orders")
		as := spec[deploymentSpec](t, app)
		var sidecar container
		for _, c := range as.Template.Spec.InitContainers {
			if c.Name == "switchyard-proxy" {
				sidecar = c
			}
		}
		ctlPod := loadFile(t, "kubernetes/control-plane/ctl-pod.yaml")[0]
		ctl := spec[podSpec](t, ctlPod)
		runStack(t, bin, stack{
			objs:    slices.Concat(cpObjs, appObjs),
			cp:      cp,
			pod:     podMeta{name: "orders-7d9c8b6f5-x2x9q", namespace: "shop", labels: as.Template.Metadata.Labels},
			podSpec: as.Template.Spec, sidecar: sidecar,
			ctlSpec: &ctl,
		})
	})
	t.Run("helm", func(t *testing.T) {
		objs := helmTemplate(t, "-n", "switchyard", "-f", "helm/switchyard/ci/control-plane-values.yaml")
		cp := findControlPlane(t, objs)
		p, _ := injectedPod(t, objs)
		// The chart has no proxy.yaml: the one of the example application.
		proxyConfig, _ := find(loadKustomization(t, "kubernetes/base"), "ConfigMap", "switchyard-proxy")
		runStack(t, bin, stack{
			objs:    append(objs, proxyConfig),
			cp:      cp,
			pod:     podMeta{name: p.name, namespace: p.namespace, labels: p.labels},
			podSpec: p.spec, sidecar: p.sidecar,
		})
	})
}

// stack is one rendering of the manifests to run.
type stack struct {
	objs    []object // every object, for ConfigMaps
	cp      controlPlane
	pod     podMeta // the application's pod
	podSpec podSpec
	sidecar container
	ctlSpec *podSpec // the ctl pod, if any
}

type podMeta struct {
	name, namespace string
	labels          map[string]string
}

func runStack(t *testing.T, bin string, st stack) {
	src, dst := startKfake(t), startKfake(t)
	token := randomToken(t)
	secretName, secretKey := st.cp.tokenSecret(t)
	k := &kubelet{t: t, bin: bin, dir: t.TempDir(), configMaps: map[string]map[string]string{},
		secrets: map[string]map[string]string{secretName: {secretKey: token}}}
	// The sidecar's token: its namespace's sidecar token. The chart
	// renders both Secrets; with kustomize they are created as the
	// README says, one value in two Secrets.
	sidecarTok := st.cp.sidecarToken(t, st.pod.namespace, st.pod.labels["switchyard.io/app"])
	sidecarSecret, sidecarKey := checkSidecar(t, st.podSpec, st.sidecar, st.pod.labels, st.cp.address())
	cpData, cpRendered := findSecret(st.objs, st.cp.deploy.Metadata.Namespace, sidecarTok.secret)
	podData, podRendered := findSecret(st.objs, st.pod.namespace, sidecarSecret)
	if cpRendered != podRendered {
		t.Fatalf("the Secrets of the sidecar token: the control plane's rendered %v, the namespace's %v", cpRendered, podRendered)
	}
	if !cpRendered {
		v := randomToken(t)
		cpData, podData = map[string]string{sidecarTok.key: v}, map[string]string{sidecarKey: v}
	}
	k.secrets[sidecarTok.secret], k.secrets[sidecarSecret] = cpData, podData
	for _, o := range st.objs {
		if o.Kind == "ConfigMap" {
			data := map[string]string{}
			for key, v := range o.Data {
				if key == "control.yaml" || key == "proxy.yaml" {
					v = rewriteClusters(t, v, src, dst)
				}
				data[key] = v
			}
			k.configMaps[o.Metadata.Name] = data
		}
	}

	// The control plane, on a free port; ready when its probes say so.
	cpPort := freePort(t)
	cpAddr := fmt.Sprintf("127.0.0.1:%d", cpPort)
	control := k.start("control", podMeta{name: "switchyard-control-0", namespace: st.cp.deploy.Metadata.Namespace,
		labels: st.cp.spec.Template.Metadata.Labels}, st.cp.spec.Template.Spec, st.cp.container,
		map[string]string{"--listen": cpAddr})
	control.waitHTTP(t, fmt.Sprintf("http://%s%s", cpAddr, st.cp.container.StartupProbe.HTTPGet.Path))
	control.waitHTTP(t, fmt.Sprintf("http://%s%s", cpAddr, st.cp.container.ReadinessProbe.HTTPGet.Path))

	// The sidecar, pointed at it; ready when its probes, on the health
	// listener, say so.
	manifestAdmin, _ := flag(st.sidecar.Args, "--admin")
	adminHost, _, err := net.SplitHostPort(manifestAdmin)
	if err != nil {
		t.Fatalf("sidecar --admin %q: %v", manifestAdmin, err)
	}
	adminPort := freePort(t)
	adminAddr := net.JoinHostPort(adminHost, strconv.Itoa(adminPort))
	healthAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	controlArg, _ := flag(st.sidecar.Args, "--control")
	if controlArg != st.cp.address() {
		t.Fatalf("sidecar --control %q is not the control plane's Service %q", controlArg, st.cp.address())
	}
	sidecar := k.start("sidecar", st.pod, st.podSpec, st.sidecar,
		map[string]string{"--control": cpAddr, "--listen": "127.0.0.1:0", "--admin": adminAddr, "--health-listen": healthAddr})
	sidecar.waitHTTP(t, "http://"+healthAddr+st.sidecar.StartupProbe.HTTPGet.Path)
	sidecar.waitHTTP(t, "http://"+healthAddr+st.sidecar.ReadinessProbe.HTTPGet.Path)
	// Another pod reaches this one at its address, not at 127.0.0.1: the
	// admin API must not answer there.
	checkNotBeyondLoopback(t, adminPort)
	adminAddr = fmt.Sprintf("127.0.0.1:%d", adminPort)

	// `switchyard ctl` as the README runs it through a port-forward: the
	// sidecar registered as the pod's application and instance.
	env := []string{"SWITCHYARD_CONTROL=" + cpAddr, "SWITCHYARD_CONTROL_TOKEN=" + token}
	out := k.run(env, "ctl", "sidecars", "--output", "json")
	var list struct {
		Sidecars []struct {
			Identity struct {
				App      string `json:"app"`
				Instance string `json:"instance"`
			} `json:"identity"`
			Connected  bool   `json:"connected"`
			Credential string `json:"credential"`
		} `json:"sidecars"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		t.Fatalf("ctl sidecars: %v\n%s", err, out)
	}
	app, instance := st.pod.labels["switchyard.io/app"], st.pod.namespace+"/"+st.pod.name
	if len(list.Sidecars) != 1 || list.Sidecars[0].Identity.App != app || list.Sidecars[0].Identity.Instance != instance || !list.Sidecars[0].Connected {
		t.Fatalf("ctl sidecars: %s\nwant one connected sidecar, app %q, instance %q", out, app, instance)
	}
	// It holds its namespace's sidecar token, not the operator's.
	if want := "token " + sidecarTok.Name; list.Sidecars[0].Credential != want {
		t.Errorf("the sidecar connected with %q, want %q", list.Sidecars[0].Credential, want)
	}

	// The first cutover: from the ctl pod if there is one, else as the
	// README runs it.
	if st.ctlSpec != nil {
		c := st.ctlSpec.Containers[0]
		server, _ := flag(c.Args, "--server")
		if want := fmt.Sprintf("%s:%d", st.cp.service.Metadata.Name, st.cp.svcSpec.Ports[0].Port); server != want {
			t.Fatalf("ctl pod --server %q, want %q", server, want)
		}
		ctl := k.start("ctl", podMeta{name: "switchyard-ctl", namespace: st.cp.deploy.Metadata.Namespace}, *st.ctlSpec, c,
			map[string]string{"--server": cpAddr})
		if err := ctl.wait(60 * time.Second); err != nil || !strings.Contains(ctl.out.String(), "DONE") {
			t.Fatalf("ctl pod: %v\n%s", err, ctl.out.String())
		}
	} else {
		out := k.run(env, "ctl", "cutover", "start", "--app", app, "--from", "source", "--to", "target", "--watch")
		if !strings.Contains(string(out), "DONE") {
			t.Fatalf("cutover: %s", out)
		}
	}
	status := httpGet(t, "http://"+adminAddr+"/v1/status")
	var st2 struct {
		Status struct {
			ActiveCluster string `json:"activeCluster"`
		} `json:"status"`
	}
	if err := json.Unmarshal(status, &st2); err != nil || st2.Status.ActiveCluster != "target" {
		t.Errorf("sidecar status after the cutover: %s (%v): want activeCluster target", status, err)
	}
}

// checkNotBeyondLoopback checks that nothing answers on port at this
// machine's non-loopback addresses (where another pod would connect to a
// pod). Without such an address there is nothing to check.
func checkNotBeyondLoopback(t *testing.T, port int) {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatalf("interface addresses: %v", err)
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.IsLoopback() || ipn.IP.IsLinkLocalUnicast() {
			continue
		}
		addr := net.JoinHostPort(ipn.IP.String(), strconv.Itoa(port))
		if c, err := net.DialTimeout("tcp", addr, 2*time.Second); err == nil {
			c.Close()
			t.Errorf("the sidecar's admin API answers at %s, beyond loopback", addr)
		}
	}
}

// buildSwitchyard builds the binary from this tree.
func buildSwitchyard(t *testing.T) string {
	t.Helper()
	goBin := os.Getenv("GO") // deploy.mk's $(GO), when it runs the tests
	if goBin == "" {
		goBin = "go"
	}
	bin := filepath.Join(t.TempDir(), "switchyard")
	cmd := exec.Command(goBin, "build", "-o", bin, "../cmd/switchyard")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/switchyard: %v\n%s", err, out)
	}
	return bin
}

func startKfake(t *testing.T) []string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()
}

func randomToken(t *testing.T) string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// rewriteClusters points the clusters of a control.yaml or proxy.yaml at
// the kfake clusters: the first at src, the second at dst.
func rewriteClusters(t *testing.T, text string, src, dst []string) string {
	t.Helper()
	var doc map[string]any
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		t.Fatal(err)
	}
	clusters, _ := doc["clusters"].([]any)
	if len(clusters) != 2 {
		t.Fatalf("want two clusters (source, target), got %v", doc["clusters"])
	}
	for i, addrs := range [][]string{src, dst} {
		clusters[i].(map[string]any)["bootstrap"] = addrs
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// kubelet runs containers of pod specs as local processes: volumes are
// directories, ConfigMaps and Secrets files in them, the downward API the
// pod's metadata.
type kubelet struct {
	t          *testing.T
	bin        string
	dir        string
	configMaps map[string]map[string]string
	secrets    map[string]map[string]string
}

type proc struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

// start runs container c of pod. replace maps flags to the value they get
// here instead of the manifest's.
func (k *kubelet) start(name string, pod podMeta, ps podSpec, c container, replace map[string]string) *proc {
	t := k.t
	t.Helper()
	// Volumes: a directory each, ConfigMap and Secret keys as files. Mount
	// paths in args and in configuration files become these directories.
	var mounts []string // mountPath, hostPath pairs, longest mount first
	sorted := slices.Clone(c.VolumeMounts)
	sort.Slice(sorted, func(i, j int) bool { return len(sorted[i].MountPath) > len(sorted[j].MountPath) })
	for _, m := range sorted {
		host := filepath.Join(k.dir, name, m.Name)
		mounts = append(mounts, m.MountPath, host)
	}
	paths := strings.NewReplacer(mounts...)
	for _, m := range c.VolumeMounts {
		v, ok := ps.volume(m.Name)
		if !ok {
			t.Fatalf("%s: no volume %s", name, m.Name)
		}
		host := filepath.Join(k.dir, name, m.Name)
		if err := os.MkdirAll(host, 0o755); err != nil {
			t.Fatal(err)
		}
		files := map[string]string{}
		switch {
		case v.ConfigMap != nil:
			data, ok := k.configMaps[v.ConfigMap.Name]
			if !ok {
				t.Fatalf("%s: ConfigMap %s is not defined", name, v.ConfigMap.Name)
			}
			for key, val := range data {
				files[key] = paths.Replace(val)
			}
		case v.Secret != nil:
			data, ok := k.secrets[v.Secret.SecretName]
			if !ok && v.Secret.Optional {
				// An optional Secret that does not exist (the TLS ones,
				// off by default): the kubelet mounts an empty directory.
				break
			}
			if !ok {
				t.Fatalf("%s: Secret %s is not defined", name, v.Secret.SecretName)
			}
			for _, it := range v.Secret.Items {
				files[it.Path] = data[it.Key]
			}
			if len(v.Secret.Items) == 0 {
				maps.Copy(files, data) // every key, a file each
			}
		}
		for f, val := range files {
			if err := os.WriteFile(filepath.Join(host, f), []byte(val), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The environment: literals and the downward API.
	vars := map[string]string{}
	var env []string
	for _, e := range c.Env {
		val := e.Value
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			switch f := e.ValueFrom.FieldRef.FieldPath; {
			case f == "metadata.name":
				val = pod.name
			case f == "metadata.namespace":
				val = pod.namespace
			case strings.HasPrefix(f, "metadata.labels['") && strings.HasSuffix(f, "']"):
				val = pod.labels[strings.TrimSuffix(strings.TrimPrefix(f, "metadata.labels['"), "']")]
			default:
				t.Fatalf("%s: env %s: fieldPath %s not emulated", name, e.Name, f)
			}
		}
		vars[e.Name] = val
		env = append(env, e.Name+"="+val)
	}
	// Args: $(VAR) expanded as the kubelet does, mount paths mapped, then
	// the flags replaced.
	args := make([]string, len(c.Args))
	for i, a := range c.Args {
		a = envRef.ReplaceAllStringFunc(a, func(ref string) string {
			if v, ok := vars[ref[2:len(ref)-1]]; ok {
				return v
			}
			return ref
		})
		args[i] = paths.Replace(a)
	}
	for i := 0; i+1 < len(args); i++ {
		if v, ok := replace[args[i]]; ok {
			args[i+1] = v
		}
	}
	p := &proc{name: name, out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(k.bin, args...)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		if p.wait(10*time.Second) != nil && p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s %q output:\n%s", name, args, p.out.String())
		}
	})
	return p
}

// wait waits for the process to exit and returns how.
func (p *proc) wait(d time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		return fmt.Errorf("%s still running after %v", p.name, d)
	}
}

// waitHTTP waits for url to answer 200 (a probe), failing if the process
// exits first.
func (p *proc) waitHTTP(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			t.Fatalf("%s exited (%v) before %s answered:\n%s", p.name, p.err, url, p.out.String())
		default:
		}
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: %s did not answer 200 in 30s (last: %s)", p.name, url, last)
}

// run runs the binary to completion and returns its standard output.
func (k *kubelet) run(env []string, args ...string) []byte {
	k.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, k.bin, args...)
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		k.t.Fatalf("switchyard %q: %v\n%s%s", args, err, out, stderr.Bytes())
	}
	return out
}

func httpGet(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
