package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.yaml.in/yaml/v3"

	"github.com/backflip-dev/backflip/fleet/agent"
	"github.com/backflip-dev/backflip/internal/config"
	"github.com/backflip-dev/backflip/internal/etcdtest"
)

// The images the Dockerfiles build, by binary (cmd/<binary>).
const imageRepo = "ghcr.io/backflip-dev/"

var binaries = []string{"backflip", "backflip-agent", "backflipctl"}

// Third-party images the manifests may use, by repository.
var thirdPartyImages = []string{"busybox", "gcr.io/etcd-development/etcd"}

// ---------------------------------------------------------------------------
// Loading.

// object is one YAML document of a manifest file: its generic form, for the
// checks every manifest gets, and its node, to decode typed views.
type object struct {
	file  string // relative to deploy/
	index int    // document index within the file
	node  *yaml.Node
	m     map[string]any
}

func (o object) String() string {
	return fmt.Sprintf("%s#%d (%s %s)", o.file, o.index, o.kind(), o.name())
}
func (o object) kind() string { s, _ := o.m["kind"].(string); return s }
func (o object) name() string {
	md, _ := o.m["metadata"].(map[string]any)
	s, _ := md["name"].(string)
	return s
}

// decode decodes the document into v.
func (o object) decode(t *testing.T, v any) {
	t.Helper()
	if err := o.node.Decode(v); err != nil {
		t.Fatalf("%s: decode: %v", o, err)
	}
}

// yamlFiles lists the .yaml and .yml files under deploy/, relative to it.
func yamlFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && (strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
			files = append(files, filepath.ToSlash(path))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no YAML files under deploy/")
	}
	return files
}

// loadFile parses every document of a YAML file.
func loadFile(t *testing.T, file string) []object {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var objs []object
	for i := 0; ; i++ {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: document %d does not parse: %v", file, i, err)
		}
		var m map[string]any
		if err := n.Decode(&m); err != nil {
			t.Fatalf("%s: document %d is not a mapping: %v", file, i, err)
		}
		if m == nil {
			continue // an empty document, e.g. after a trailing ---
		}
		objs = append(objs, object{file: file, index: i, node: &n, m: m})
	}
	return objs
}

// isManifest tells Kubernetes manifests from the other YAML files (etcd's
// own configuration file).
func isManifest(file string) bool { return !strings.HasSuffix(file, ".conf.yml") }

// manifests loads every Kubernetes object under deploy/, kustomizations
// included.
func manifests(t *testing.T) []object {
	t.Helper()
	var objs []object
	for _, f := range yamlFiles(t) {
		if isManifest(f) {
			objs = append(objs, loadFile(t, f)...)
		}
	}
	return objs
}

// find returns the one object of kind and name.
func find(t *testing.T, objs []object, kind, name string) object {
	t.Helper()
	var found []object
	for _, o := range objs {
		if o.kind() == kind && o.name() == name {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want exactly one %s %q in deploy/, found %d: %v", kind, name, len(found), found)
	}
	return found[0]
}

// ---------------------------------------------------------------------------
// Typed views of the parts of the objects the tests look at.

type meta struct {
	Name        string            `yaml:"name"`
	Namespace   string            `yaml:"namespace"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type workload struct {
	Kind     string `yaml:"kind"`
	Metadata meta   `yaml:"metadata"`
	Spec     struct {
		Replicas *int `yaml:"replicas"`
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template    podTemplate `yaml:"template"`
		JobTemplate struct {
			Spec struct {
				Template podTemplate `yaml:"template"`
			} `yaml:"spec"`
		} `yaml:"jobTemplate"`
	} `yaml:"spec"`
}

// pod returns the pod template of a Deployment, DaemonSet, StatefulSet, Job
// or CronJob.
func (w workload) pod() podTemplate {
	if w.Kind == "CronJob" {
		return w.Spec.JobTemplate.Spec.Template
	}
	return w.Spec.Template
}

type podTemplate struct {
	Metadata meta `yaml:"metadata"`
	Spec     struct {
		HostNetwork                  *bool             `yaml:"hostNetwork"`
		AutomountServiceAccountToken *bool             `yaml:"automountServiceAccountToken"`
		NodeSelector                 map[string]string `yaml:"nodeSelector"`
		Tolerations                  []struct {
			Key      string `yaml:"key"`
			Operator string `yaml:"operator"`
			Effect   string `yaml:"effect"`
		} `yaml:"tolerations"`
		SecurityContext securityContext `yaml:"securityContext"`
		InitContainers  []container     `yaml:"initContainers"`
		Containers      []container     `yaml:"containers"`
		Volumes         []struct {
			Name      string `yaml:"name"`
			ConfigMap *struct {
				Name string `yaml:"name"`
			} `yaml:"configMap"`
			Secret *struct {
				SecretName string `yaml:"secretName"`
			} `yaml:"secret"`
			EmptyDir *struct{} `yaml:"emptyDir"`
		} `yaml:"volumes"`
	} `yaml:"spec"`
}

type securityContext struct {
	RunAsNonRoot             *bool  `yaml:"runAsNonRoot"`
	RunAsUser                *int64 `yaml:"runAsUser"`
	AllowPrivilegeEscalation *bool  `yaml:"allowPrivilegeEscalation"`
	ReadOnlyRootFilesystem   *bool  `yaml:"readOnlyRootFilesystem"`
	Capabilities             struct {
		Drop []string `yaml:"drop"`
	} `yaml:"capabilities"`
}

type container struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	Ports   []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	Env     []envVar `yaml:"env"`
	EnvFrom []struct {
		ConfigMapRef *struct {
			Name string `yaml:"name"`
		} `yaml:"configMapRef"`
		SecretRef *struct {
			Name string `yaml:"name"`
		} `yaml:"secretRef"`
	} `yaml:"envFrom"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	StartupProbe   *probe `yaml:"startupProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext securityContext `yaml:"securityContext"`
	VolumeMounts    []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
}

type envVar struct {
	Name      string `yaml:"name"`
	Value     string `yaml:"value"`
	ValueFrom *struct {
		FieldRef *struct {
			FieldPath string `yaml:"fieldPath"`
		} `yaml:"fieldRef"`
		SecretKeyRef *struct {
			Name string `yaml:"name"`
			Key  string `yaml:"key"`
		} `yaml:"secretKeyRef"`
	} `yaml:"valueFrom"`
}

type probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"`
	} `yaml:"httpGet"`
}

// port returns the container port of the given name.
func (c container) port(t *testing.T, name string) int {
	t.Helper()
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	t.Fatalf("container %s has no port named %q", c.Name, name)
	return 0
}

func (c container) env(name string) (envVar, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e, true
		}
	}
	return envVar{}, false
}

// workloads decodes every object that runs pods.
func workloads(t *testing.T, objs []object) map[string]workload {
	t.Helper()
	ws := map[string]workload{}
	for _, o := range objs {
		switch o.kind() {
		case "Deployment", "DaemonSet", "StatefulSet", "Job", "CronJob":
			var w workload
			o.decode(t, &w)
			ws[o.String()] = w
		}
	}
	if len(ws) == 0 {
		t.Fatal("no workloads found")
	}
	return ws
}

// containers lists a pod's init containers and containers.
func (p podTemplate) containers() []container {
	return append(slices.Clone(p.Spec.InitContainers), p.Spec.Containers...)
}

func workloadOf(t *testing.T, objs []object, kind, name string) workload {
	t.Helper()
	var w workload
	find(t, objs, kind, name).decode(t, &w)
	return w
}

func containerOf(t *testing.T, w workload, name string) container {
	t.Helper()
	for _, c := range w.pod().Spec.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("%s %s has no container %q", w.Kind, w.Metadata.Name, name)
	return container{}
}

// dataOf returns a ConfigMap's data or a Secret's stringData.
func dataOf(t *testing.T, objs []object, kind, name string) map[string]string {
	t.Helper()
	var v struct {
		Data       map[string]string `yaml:"data"`
		StringData map[string]string `yaml:"stringData"`
	}
	find(t, objs, kind, name).decode(t, &v)
	if kind == "Secret" {
		return v.StringData
	}
	return v.Data
}

// Downward-API values the environment of a pod is given in the tests.
var downward = map[string]string{
	"spec.nodeName": "gpu-node-17",
	"metadata.name": "backflip-etcd-0",
	"status.podIP":  "10.1.2.3",
	"status.hostIP": "10.0.0.17",
}

// environment is what a container's process sees: its envFrom sources (in
// order), then its env entries, as Kubernetes builds it.
func environment(t *testing.T, objs []object, c container) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, from := range c.EnvFrom {
		var src map[string]string
		switch {
		case from.ConfigMapRef != nil:
			src = dataOf(t, objs, "ConfigMap", from.ConfigMapRef.Name)
		case from.SecretRef != nil:
			src = dataOf(t, objs, "Secret", from.SecretRef.Name)
		default:
			t.Fatalf("container %s: envFrom entry with neither configMapRef nor secretRef", c.Name)
		}
		for k, v := range src {
			env[k] = v
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.FieldRef != nil:
			v, ok := downward[e.ValueFrom.FieldRef.FieldPath]
			if !ok {
				t.Fatalf("container %s: env %s: unexpected fieldRef %q", c.Name, e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
			env[e.Name] = v
		case e.ValueFrom.SecretKeyRef != nil:
			v, ok := dataOf(t, objs, "Secret", e.ValueFrom.SecretKeyRef.Name)[e.ValueFrom.SecretKeyRef.Key]
			if !ok {
				t.Fatalf("container %s: env %s: Secret %s has no key %s", c.Name, e.Name, e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key)
			}
			env[e.Name] = v
		default:
			t.Fatalf("container %s: env %s: unsupported valueFrom", c.Name, e.Name)
		}
	}
	return env
}

// loadConfig runs the binaries' own configuration loading over env.
func loadConfig(t *testing.T, env map[string]string) *config.Config {
	t.Helper()
	cfg, err := config.FromLookup(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatalf("the configuration does not load: %v", err)
	}
	return cfg
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return n
}

// defaultOf is the config default of a variable, from internal/config.
func defaultOf(t *testing.T, name string) string {
	t.Helper()
	for _, v := range config.Vars() {
		if v.Name == name {
			return v.Default
		}
	}
	t.Fatalf("internal/config has no variable %s", name)
	return ""
}

func checkProbe(t *testing.T, what string, p *probe, path, port string) {
	t.Helper()
	if p == nil || p.HTTPGet == nil {
		t.Errorf("%s: want an httpGet probe on %s", what, path)
		return
	}
	if p.HTTPGet.Path != path || p.HTTPGet.Port != port {
		t.Errorf("%s: probe is GET %s on port %q, want %s on port %q", what, p.HTTPGet.Path, p.HTTPGet.Port, path, port)
	}
}

// checkScrapeAnnotations checks the prometheus.io annotations point at the
// port and /metrics.
func checkScrapeAnnotations(t *testing.T, what string, ann map[string]string, port int) {
	t.Helper()
	want := map[string]string{"prometheus.io/scrape": "true", "prometheus.io/port": strconv.Itoa(port), "prometheus.io/path": "/metrics"}
	for k, v := range want {
		if ann[k] != v {
			t.Errorf("%s: annotation %s = %q, want %q", what, k, ann[k], v)
		}
	}
}

// checkMounted checks each file path the environment names lies in a
// directory the container mounts.
func checkMounted(t *testing.T, c container, env map[string]string, vars ...string) {
	t.Helper()
	for _, v := range vars {
		path, ok := env[v]
		if !ok || path == "" {
			continue
		}
		mounted := false
		for _, m := range c.VolumeMounts {
			if strings.HasPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/") {
				mounted = true
			}
		}
		if !mounted {
			t.Errorf("container %s: %s=%s is not under any of its volume mounts", c.Name, v, path)
		}
	}
}

// ---------------------------------------------------------------------------
// Every file parses; every manifest is a named, namespace-less object.

func TestYAMLParsesAndManifestsAreNamed(t *testing.T) {
	for _, f := range yamlFiles(t) {
		objs := loadFile(t, f)
		if len(objs) == 0 {
			t.Errorf("%s: no documents", f)
		}
		if !isManifest(f) {
			continue
		}
		for _, o := range objs {
			if s, _ := o.m["apiVersion"].(string); s == "" {
				t.Errorf("%s: no apiVersion", o)
			}
			if o.kind() == "" {
				t.Errorf("%s: no kind", o)
			}
			if o.kind() == "Kustomization" {
				continue
			}
			if o.name() == "" {
				t.Errorf("%s: no metadata.name", o)
			}
			var m struct {
				Metadata meta `yaml:"metadata"`
			}
			o.decode(t, &m)
			if m.Metadata.Namespace != "" {
				t.Errorf("%s: has namespace %q; the manifests are namespace-less", o, m.Metadata.Namespace)
			}
			if m.Metadata.Labels["app.kubernetes.io/name"] != "backflip" {
				t.Errorf("%s: label app.kubernetes.io/name is %q, want backflip", o, m.Metadata.Labels["app.kubernetes.io/name"])
			}
		}
	}
}

// Each kustomization lists every manifest of its folder, except the secret
// templates, which it must not list (applying them would overwrite real
// secrets with placeholders).
func TestKustomizationsListTheirManifests(t *testing.T) {
	for _, dir := range []string{"kubernetes", "etcd"} {
		var k struct {
			Resources []string `yaml:"resources"`
		}
		objs := loadFile(t, dir+"/kustomization.yaml")
		if len(objs) != 1 || objs[0].kind() != "Kustomization" {
			t.Fatalf("%s/kustomization.yaml: want one Kustomization", dir)
		}
		objs[0].decode(t, &k)
		for _, r := range k.Resources {
			if _, err := os.Stat(filepath.Join(dir, r)); err != nil {
				t.Errorf("%s/kustomization.yaml lists %s: %v", dir, r, err)
			}
			if strings.HasSuffix(r, ".template.yaml") {
				t.Errorf("%s/kustomization.yaml lists the template %s", dir, r)
			}
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			n := e.Name()
			if !strings.HasSuffix(n, ".yaml") || n == "kustomization.yaml" || strings.HasSuffix(n, ".template.yaml") {
				continue
			}
			if !slices.Contains(k.Resources, n) {
				t.Errorf("%s/%s is not listed in %s/kustomization.yaml", dir, n, dir)
			}
		}
	}
}

// Secrets exist only as templates, with placeholder values only.
func TestSecretsAreTemplates(t *testing.T) {
	n := 0
	for _, o := range manifests(t) {
		if o.kind() != "Secret" {
			continue
		}
		n++
		if !strings.HasSuffix(o.file, ".template.yaml") {
			t.Errorf("%s: a Secret must live in a *.template.yaml file", o)
		}
		var s struct {
			Data       map[string]string `yaml:"data"`
			StringData map[string]string `yaml:"stringData"`
		}
		o.decode(t, &s)
		if len(s.Data) > 0 {
			t.Errorf("%s: use stringData with placeholders, not data", o)
		}
		for k, v := range s.StringData {
			if !strings.Contains(v, "REPLACE-ME") {
				t.Errorf("%s: %s is not a placeholder (want a value containing REPLACE-ME)", o, k)
			}
		}
	}
	if n == 0 {
		t.Fatal("no Secret templates found")
	}
}

// ---------------------------------------------------------------------------
// Environment variables.

var backflipVar = regexp.MustCompile(`\bBACKFLIP_[A-Z0-9_]*[A-Z0-9]`)

// Every BACKFLIP_ name in deploy/ (manifests, unit, Dockerfiles, roles.sh,
// README) is one internal/config reads.
func TestEveryBackflipVariableExists(t *testing.T) {
	known := map[string]bool{}
	for _, v := range config.Vars() {
		known[v.Name] = true
	}
	seen := 0
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(path, ".go") {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, line := range strings.Split(string(data), "\n") {
			for _, name := range backflipVar.FindAllString(line, -1) {
				seen++
				if !known[name] {
					t.Errorf("%s:%d: %s is not a variable of internal/config", path, i+1, name)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen == 0 {
		t.Fatal("no BACKFLIP_ variables found under deploy/")
	}
}

// ---------------------------------------------------------------------------
// The bot.

func TestBotDeployment(t *testing.T) {
	objs := manifests(t)
	w := workloadOf(t, objs, "Deployment", "backflip")
	if w.Spec.Replicas == nil || *w.Spec.Replicas != 2 {
		t.Errorf("Deployment backflip: want 2 replicas, got %v", w.Spec.Replicas)
	}
	c := containerOf(t, w, "backflip")
	if !slices.Equal(c.Args, []string{"serve"}) || len(c.Command) != 0 {
		t.Errorf("container backflip: command %q args %q, want the image's entrypoint with args [serve]", c.Command, c.Args)
	}
	env := environment(t, objs, c)
	cfg := loadConfig(t, env)
	if err := cfg.ValidateServe(); err != nil {
		t.Errorf("backflip serve would refuse to start with the Deployment's environment: %v", err)
	}
	// And in http mode, which needs the signing secret.
	env2 := with(env, "BACKFLIP_SLACK_MODE", "http")
	if err := loadConfig(t, env2).ValidateServe(); err != nil {
		t.Errorf("with BACKFLIP_SLACK_MODE=http: %v", err)
	}
	if u := config.UnknownVars(environ(env)); len(u) > 0 {
		t.Errorf("unknown BACKFLIP_ variables in the bot's environment: %v", u)
	}
	checkMounted(t, c, env, "BACKFLIP_ETCD_CA_FILE", "BACKFLIP_ETCD_CERT_FILE", "BACKFLIP_ETCD_KEY_FILE")

	// The contract: HTTP_ADDR (default :8080) is the port named http; the
	// probes are /readyz and /healthz; Prometheus scrapes /metrics.
	port := c.port(t, "http")
	if want := portOf(t, cfg.HTTP.Addr); port != want {
		t.Errorf("container port http is %d, BACKFLIP_HTTP_ADDR says %d", port, want)
	}
	if want := portOf(t, defaultOf(t, "BACKFLIP_HTTP_ADDR")); port != want {
		t.Errorf("container port http is %d, the contract's default BACKFLIP_HTTP_ADDR port is %d", port, want)
	}
	checkProbe(t, "bot readiness", c.ReadinessProbe, "/readyz", "http")
	checkProbe(t, "bot liveness", c.LivenessProbe, "/healthz", "http")
	checkScrapeAnnotations(t, "bot pod", w.pod().Metadata.Annotations, port)

	labels := w.pod().Metadata.Labels
	checkSelects(t, "Deployment backflip", w.Spec.Selector.MatchLabels, labels)

	var svc struct {
		Spec struct {
			Selector map[string]string `yaml:"selector"`
			Ports    []struct {
				Name       string `yaml:"name"`
				TargetPort string `yaml:"targetPort"`
			} `yaml:"ports"`
		} `yaml:"spec"`
	}
	find(t, objs, "Service", "backflip").decode(t, &svc)
	checkSelects(t, "Service backflip", svc.Spec.Selector, labels)
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].TargetPort != "http" || svc.Spec.Ports[0].Name != "http" {
		t.Errorf("Service backflip: want one port named http targeting http, got %+v", svc.Spec.Ports)
	}

	var pdb struct {
		Spec struct {
			MinAvailable int `yaml:"minAvailable"`
			Selector     struct {
				MatchLabels map[string]string `yaml:"matchLabels"`
			} `yaml:"selector"`
		} `yaml:"spec"`
	}
	find(t, objs, "PodDisruptionBudget", "backflip").decode(t, &pdb)
	checkSelects(t, "PodDisruptionBudget backflip", pdb.Spec.Selector.MatchLabels, labels)
	if pdb.Spec.MinAvailable < 1 || pdb.Spec.MinAvailable >= *w.Spec.Replicas {
		t.Errorf("PodDisruptionBudget backflip: minAvailable %d, want 1 to replicas-1", pdb.Spec.MinAvailable)
	}

	var sm struct {
		Metadata meta `yaml:"metadata"`
		Spec     struct {
			Selector struct {
				MatchLabels map[string]string `yaml:"matchLabels"`
			} `yaml:"selector"`
			Endpoints []struct {
				Port string `yaml:"port"`
				Path string `yaml:"path"`
			} `yaml:"endpoints"`
		} `yaml:"spec"`
	}
	find(t, objs, "ServiceMonitor", "backflip").decode(t, &sm)
	var svcMeta struct {
		Metadata meta `yaml:"metadata"`
	}
	find(t, objs, "Service", "backflip").decode(t, &svcMeta)
	checkSelects(t, "ServiceMonitor backflip", sm.Spec.Selector.MatchLabels, svcMeta.Metadata.Labels)
	if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "http" || sm.Spec.Endpoints[0].Path != "/metrics" {
		t.Errorf("ServiceMonitor backflip: want one endpoint on port http path /metrics, got %+v", sm.Spec.Endpoints)
	}
}

// The migration Job runs `backflip migrate` with the owner's database URL,
// from the bot's image.
func TestMigrateJob(t *testing.T) {
	objs := manifests(t)
	w := workloadOf(t, objs, "Job", "backflip-migrate")
	c := containerOf(t, w, "migrate")
	if !slices.Equal(c.Args, []string{"migrate"}) || len(c.Command) != 0 {
		t.Errorf("container migrate: command %q args %q, want args [migrate]", c.Command, c.Args)
	}
	bot := containerOf(t, workloadOf(t, objs, "Deployment", "backflip"), "backflip")
	if c.Image != bot.Image {
		t.Errorf("migration image %s differs from the bot's %s", c.Image, bot.Image)
	}
	env := environment(t, objs, c)
	cfg := loadConfig(t, env)
	if !cfg.Postgres.URL.IsSet() {
		t.Error("the migration Job has no BACKFLIP_DATABASE_URL")
	}
	botEnv := environment(t, objs, bot)
	if env["BACKFLIP_DATABASE_URL"] == botEnv["BACKFLIP_DATABASE_URL"] {
		t.Error("the migration Job connects as the bot's role; it must connect as the owning role")
	}
}

// ---------------------------------------------------------------------------
// The agent.

func TestAgentDaemonSet(t *testing.T) {
	objs := manifests(t)
	w := workloadOf(t, objs, "DaemonSet", "backflip-agent")
	pod := w.pod()
	c := containerOf(t, w, "agent")
	env := environment(t, objs, c)
	cfg := loadConfig(t, env)
	if err := cfg.ValidateAgent(); err != nil {
		t.Errorf("backflip-agent would refuse to start with the DaemonSet's environment: %v", err)
	}
	if u := config.UnknownVars(environ(env)); len(u) > 0 {
		t.Errorf("unknown BACKFLIP_ variables in the agent's environment: %v", u)
	}
	if e, ok := c.env("BACKFLIP_AGENT_NODE"); !ok || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Error("BACKFLIP_AGENT_NODE must come from the downward API, fieldRef spec.nodeName")
	}
	if pod.Spec.HostNetwork == nil || *pod.Spec.HostNetwork {
		t.Error("the agent DaemonSet must say hostNetwork: false")
	}
	if pod.Spec.NodeSelector["nvidia.com/gpu.present"] != "true" {
		t.Errorf("the agent DaemonSet must select GPU nodes (nvidia.com/gpu.present: \"true\"), got %v", pod.Spec.NodeSelector)
	}
	tolerates := false
	for _, tol := range pod.Spec.Tolerations {
		tolerates = tolerates || tol.Key == "nvidia.com/gpu"
	}
	if !tolerates {
		t.Error("the agent DaemonSet must tolerate the nvidia.com/gpu taint")
	}
	for k := range c.Resources.Requests {
		if strings.Contains(k, "gpu") {
			t.Errorf("the agent requests %s: it must not take GPUs from the inference servers", k)
		}
	}
	checkSelects(t, "DaemonSet backflip-agent", w.Spec.Selector.MatchLabels, pod.Metadata.Labels)

	port := c.port(t, "http")
	if want := portOf(t, cfg.Agent.Addr); port != want {
		t.Errorf("container port http is %d, BACKFLIP_AGENT_ADDR says %d", port, want)
	}
	if want := portOf(t, defaultOf(t, "BACKFLIP_AGENT_ADDR")); port != want {
		t.Errorf("container port http is %d, the contract's default BACKFLIP_AGENT_ADDR port is %d", port, want)
	}
	checkProbe(t, "agent readiness", c.ReadinessProbe, "/healthz", "http")
	checkProbe(t, "agent liveness", c.LivenessProbe, "/healthz", "http")
	checkScrapeAnnotations(t, "agent pod", pod.Metadata.Annotations, port)
	checkMounted(t, c, env, "BACKFLIP_AGENT_CONFIG", "BACKFLIP_ETCD_CA_FILE", "BACKFLIP_ETCD_CERT_FILE", "BACKFLIP_ETCD_KEY_FILE", "BACKFLIP_AGENT_TLS_CERT", "BACKFLIP_AGENT_TLS_KEY")

	// The agent file: the init container renders the shared template into
	// the directory the agent reads BACKFLIP_AGENT_CONFIG from.
	if len(pod.Spec.InitContainers) != 1 {
		t.Fatalf("want one init container rendering the agent file, got %d", len(pod.Spec.InitContainers))
	}
	ic := pod.Spec.InitContainers[0]
	script := strings.Join(append(slices.Clone(ic.Command), ic.Args...), " ")
	if !strings.Contains(script, ">"+cfg.Agent.ConfigFile) {
		t.Errorf("the init container does not write BACKFLIP_AGENT_CONFIG (%s)", cfg.Agent.ConfigFile)
	}
	configDir := filepath.Dir(cfg.Agent.ConfigFile)
	if vol := mountAt(t, c, configDir); vol == "" || vol != mountAt(t, ic, configDir) {
		t.Errorf("the agent and the init container must share the volume at %s", configDir)
	}
	tmpl := dataOf(t, objs, "ConfigMap", "backflip-agent-servers")["agent.json.tmpl"]
	if tmpl == "" {
		t.Fatal("ConfigMap backflip-agent-servers has no agent.json.tmpl")
	}
	for _, ph := range regexp.MustCompile(`@[A-Z_]+@`).FindAllString(tmpl, -1) {
		if !strings.Contains(script, "s|"+ph+"|") {
			t.Errorf("the template's placeholder %s is not replaced by the init container", ph)
		}
	}
	for _, ip := range []struct{ pod, node string }{{"10.1.2.3", "10.0.0.17"}, {"[fd00::1:2:3]", "[fd00::17]"}} {
		rendered := strings.NewReplacer("@NODE_NAME@", downward["spec.nodeName"], "@POD_HOST@", ip.pod, "@NODE_HOST@", ip.node).Replace(tmpl)
		fc, err := agent.ParseConfig(strings.NewReader(rendered))
		if err != nil {
			t.Errorf("the rendered agent file (pod %s) is refused by the agent: %v", ip.pod, err)
			continue
		}
		u, err := url.Parse(fc.AdvertiseURL)
		if err != nil {
			t.Fatal(err)
		}
		if u.Hostname() != strings.Trim(ip.pod, "[]") {
			t.Errorf("advertise_url %s is not the pod's own address %s: the bot would reach another node's agent", fc.AdvertiseURL, ip.pod)
		}
		if u.Port() != strconv.Itoa(port) {
			t.Errorf("advertise_url %s is not on the agent's port %d", fc.AdvertiseURL, port)
		}
		if wantScheme := map[bool]string{true: "https", false: "http"}[cfg.Agent.TLSCert != ""]; u.Scheme != wantScheme {
			t.Errorf("advertise_url %s: want scheme %s", fc.AdvertiseURL, wantScheme)
		}
	}

	// The PodMonitor presents the token the agent's /metrics requires.
	var pm struct {
		Spec struct {
			Selector struct {
				MatchLabels map[string]string `yaml:"matchLabels"`
			} `yaml:"selector"`
			Endpoints []struct {
				Port          string `yaml:"port"`
				Path          string `yaml:"path"`
				Authorization struct {
					Type        string `yaml:"type"`
					Credentials struct {
						Name string `yaml:"name"`
						Key  string `yaml:"key"`
					} `yaml:"credentials"`
				} `yaml:"authorization"`
			} `yaml:"podMetricsEndpoints"`
		} `yaml:"spec"`
	}
	find(t, objs, "PodMonitor", "backflip-agent").decode(t, &pm)
	checkSelects(t, "PodMonitor backflip-agent", pm.Spec.Selector.MatchLabels, pod.Metadata.Labels)
	if len(pm.Spec.Endpoints) != 1 {
		t.Fatalf("PodMonitor backflip-agent: want one endpoint, got %d", len(pm.Spec.Endpoints))
	}
	ep := pm.Spec.Endpoints[0]
	if ep.Port != "http" || ep.Path != "/metrics" || ep.Authorization.Type != "Bearer" {
		t.Errorf("PodMonitor backflip-agent: want Bearer-authorized /metrics on port http, got %+v", ep)
	}
	if tok := dataOf(t, objs, "Secret", ep.Authorization.Credentials.Name)[ep.Authorization.Credentials.Key]; tok == "" || tok != env["BACKFLIP_AGENT_TOKEN"] {
		t.Errorf("PodMonitor backflip-agent: its credentials (%s/%s) are not the agent's BACKFLIP_AGENT_TOKEN", ep.Authorization.Credentials.Name, ep.Authorization.Credentials.Key)
	}
}

// mountAt returns the name of the volume c mounts at path.
func mountAt(t *testing.T, c container, path string) string {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if m.MountPath == path {
			return m.Name
		}
	}
	return ""
}

func checkSelects(t *testing.T, what string, selector, labels map[string]string) {
	t.Helper()
	if len(selector) == 0 {
		t.Errorf("%s: empty selector", what)
	}
	for k, v := range selector {
		if labels[k] != v {
			t.Errorf("%s: selector %s=%s does not match the labels %v", what, k, v, labels)
		}
	}
}

func environ(env map[string]string) []string {
	var out []string
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

// ---------------------------------------------------------------------------
// Every workload: hardened pods, resources, pinned images.

func TestWorkloadsAreHardened(t *testing.T) {
	for o, w := range workloads(t, manifests(t)) {
		pod := w.pod()
		if a := pod.Spec.AutomountServiceAccountToken; a == nil || *a {
			t.Errorf("%s: set automountServiceAccountToken: false (nothing here calls the Kubernetes API)", o)
		}
		for _, c := range pod.containers() {
			what := fmt.Sprintf("%s container %s", o, c.Name)
			nonRoot := c.SecurityContext.RunAsNonRoot
			if nonRoot == nil {
				nonRoot = pod.Spec.SecurityContext.RunAsNonRoot
			}
			if nonRoot == nil || !*nonRoot {
				t.Errorf("%s: not runAsNonRoot", what)
			}
			if p := c.SecurityContext.AllowPrivilegeEscalation; p == nil || *p {
				t.Errorf("%s: allowPrivilegeEscalation must be false", what)
			}
			if r := c.SecurityContext.ReadOnlyRootFilesystem; r == nil || !*r {
				t.Errorf("%s: readOnlyRootFilesystem must be true", what)
			}
			if !slices.Contains(c.SecurityContext.Capabilities.Drop, "ALL") {
				t.Errorf("%s: capabilities must drop ALL", what)
			}
			if c.Resources.Requests["cpu"] == "" || c.Resources.Requests["memory"] == "" || c.Resources.Limits["memory"] == "" {
				t.Errorf("%s: want cpu and memory requests and a memory limit", what)
			}
			if c.Image == "" || !strings.Contains(c.Image, ":") || strings.HasSuffix(c.Image, ":latest") {
				t.Errorf("%s: image %q must carry a version tag", what, c.Image)
			}
		}
	}
}

// ---------------------------------------------------------------------------
// Images and Dockerfiles.

func TestImagesMatchDockerfiles(t *testing.T) {
	objs := manifests(t)
	var k struct {
		Images []struct {
			Name   string `yaml:"name"`
			NewTag string `yaml:"newTag"`
		} `yaml:"images"`
	}
	loadFile(t, "kubernetes/kustomization.yaml")[0].decode(t, &k)
	tags := map[string]string{}
	for _, im := range k.Images {
		tags[im.Name] = im.NewTag
	}

	used := map[string]bool{}
	for o, w := range workloads(t, objs) {
		for _, c := range w.pod().containers() {
			repo, tag, _ := strings.Cut(c.Image, ":")
			if bin, ok := strings.CutPrefix(repo, imageRepo); ok {
				if !slices.Contains(binaries, bin) {
					t.Errorf("%s: image %s is not one the Dockerfiles build (%v)", o, c.Image, binaries)
				}
				if tags[repo] != tag {
					t.Errorf("%s: image %s, but kustomization.yaml sets %s to tag %q", o, c.Image, repo, tags[repo])
				}
				used[bin] = true
				continue
			}
			if !slices.Contains(thirdPartyImages, repo) {
				t.Errorf("%s: unexpected image %s", o, c.Image)
			}
		}
	}
	for _, bin := range []string{"backflip", "backflip-agent"} {
		if !used[bin] {
			t.Errorf("no manifest runs %s%s", imageRepo, bin)
		}
	}

	goVersion := goDirective(t)
	readme := readFile(t, "README.md")
	for _, bin := range binaries {
		file := "docker/" + bin + ".Dockerfile"
		df := readFile(t, file)
		if _, err := os.Stat(filepath.Join("..", "cmd", bin)); err != nil {
			t.Errorf("%s: no cmd/%s to build: %v", file, bin, err)
		}
		stages := regexp.MustCompile(`(?m)^FROM\s+(\S+)`).FindAllStringSubmatch(df, -1)
		if len(stages) != 2 {
			t.Errorf("%s: want two stages (build, runtime), got %d", file, len(stages))
			continue
		}
		if want := "golang:" + goVersion; !strings.HasPrefix(stages[0][1], want) {
			t.Errorf("%s: builder %s, want %s (go.mod's go version)", file, stages[0][1], want)
		}
		if rt := stages[1][1]; !strings.HasPrefix(rt, "gcr.io/distroless/static") || !strings.HasSuffix(rt, ":nonroot") {
			t.Errorf("%s: runtime %s, want gcr.io/distroless/static…:nonroot", file, rt)
		}
		for _, want := range []string{
			"CGO_ENABLED=0",
			"./cmd/" + bin + "\n",
			"-o /out/" + bin + " ",
			"COPY --from=build /out/" + bin + " /usr/local/bin/" + bin + "\n",
			`ENTRYPOINT ["/usr/local/bin/` + bin + `"]`,
			"\nUSER 65532:65532\n",
			"image: " + imageRepo + bin + "\n",
		} {
			if !strings.Contains(df, want) && !strings.Contains(strings.ReplaceAll(df, "\\\n", ""), want) {
				t.Errorf("%s: does not contain %q", file, want)
			}
		}
		if tag, ok := tags[imageRepo+bin]; ok && !strings.Contains(df, imageRepo+bin+":"+tag+" ") {
			t.Errorf("%s: the build command does not tag %s%s:%s", file, imageRepo, bin, tag)
		}
		if _, err := os.Stat(file + ".dockerignore"); err != nil {
			t.Errorf("%s: no .dockerignore next to it: %v", file, err)
		}
		if !strings.Contains(readme, imageRepo+bin) {
			t.Errorf("README.md does not name the image %s%s", imageRepo, bin)
		}
	}
	// The exposed ports are the contract's defaults.
	for bin, v := range map[string]string{"backflip": "BACKFLIP_HTTP_ADDR", "backflip-agent": "BACKFLIP_AGENT_ADDR"} {
		want := fmt.Sprintf("\nEXPOSE %d\n", portOf(t, defaultOf(t, v)))
		if df := readFile(t, "docker/"+bin+".Dockerfile"); !strings.Contains(df, want) {
			t.Errorf("docker/%s.Dockerfile: want %q (the default of %s)", bin, strings.TrimSpace(want), v)
		}
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// goDirective returns go.mod's language version as major.minor.
func goDirective(t *testing.T) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(readFile(t, "../go.mod"))
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	return m[1]
}

// ---------------------------------------------------------------------------
// systemd.

// unitFile parses a systemd unit into section → key → values.
func unitFile(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	u := map[string]map[string][]string{}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(readFile(t, path)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = strings.Trim(line, "[]")
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s: cannot parse %q", path, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u
}

func TestSystemdUnit(t *testing.T) {
	const envFile = "/etc/backflip/agent.env"
	u := unitFile(t, "systemd/backflip-agent.service")
	svc := u["Service"]
	last := func(k string) string {
		if v := svc[k]; len(v) > 0 {
			return v[len(v)-1]
		}
		return ""
	}
	for k, want := range map[string]string{
		"NoNewPrivileges": "yes",
		"ProtectSystem":   "strict",
		"Restart":         "always",
		"EnvironmentFile": envFile,
	} {
		if got := last(k); got != want {
			t.Errorf("backflip-agent.service: %s=%q, want %q", k, got, want)
		}
	}
	if last("DynamicUser") != "yes" && (last("User") == "" || last("User") == "root") {
		t.Error("backflip-agent.service: want DynamicUser=yes or a dedicated User=")
	}
	if exec := strings.Fields(last("ExecStart")); len(exec) == 0 || exec[0] != "/usr/local/bin/backflip-agent" {
		t.Errorf("backflip-agent.service: ExecStart=%q, want /usr/local/bin/backflip-agent", last("ExecStart"))
	}
	if len(u["Install"]["WantedBy"]) == 0 {
		t.Error("backflip-agent.service: no [Install] WantedBy=")
	}

	// The environment file's example is configs/agent.env.example: it must
	// say where it goes and start an agent.
	example := readFile(t, "../configs/agent.env.example")
	if !strings.Contains(example, envFile) {
		t.Errorf("configs/agent.env.example does not say it is installed as %s", envFile)
	}
	env := map[string]string{}
	for _, line := range strings.Split(example, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("configs/agent.env.example: not KEY=VALUE: %q", line)
		}
		env[k] = v
	}
	if err := loadConfig(t, env).ValidateAgent(); err != nil {
		t.Errorf("the agent would refuse configs/agent.env.example: %v", err)
	}
}

// ---------------------------------------------------------------------------
// Alerts.

// exportedMetrics finds the metric names the repository's (non-test) Go code
// defines: every prometheus.*Opts literal's Namespace_Subsystem_Name, and
// the name of every prometheus.NewDesc given as a string literal (custom
// collectors).
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	fset := token.NewFileSet()
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "testdata", "deploy", "vendor", ".backflip":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if call, ok := n.(*ast.CallExpr); ok {
				if sel, ok := call.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "NewDesc" && len(call.Args) > 0 {
					if x, ok := sel.X.(*ast.Ident); ok && x.Name == "prometheus" {
						if val, ok := call.Args[0].(*ast.BasicLit); ok && val.Kind == token.STRING {
							name, _ := strconv.Unquote(val.Value)
							names[name] = true
						}
					}
				}
				return true
			}
			lit, ok := n.(*ast.CompositeLit)
			if !ok {
				return true
			}
			sel, ok := lit.Type.(*ast.SelectorExpr)
			if !ok || !strings.HasSuffix(sel.Sel.Name, "Opts") {
				return true
			}
			if x, ok := sel.X.(*ast.Ident); !ok || x.Name != "prometheus" {
				return true
			}
			parts := map[string]string{}
			for _, e := range lit.Elts {
				kv, ok := e.(*ast.KeyValueExpr)
				if !ok {
					continue
				}
				key, ok1 := kv.Key.(*ast.Ident)
				val, ok2 := kv.Value.(*ast.BasicLit)
				if ok1 && ok2 && val.Kind == token.STRING {
					parts[key.Name], _ = strconv.Unquote(val.Value)
				}
			}
			var full []string
			for _, k := range []string{"Namespace", "Subsystem", "Name"} {
				if parts[k] != "" {
					full = append(full, parts[k])
				}
			}
			if len(full) > 0 {
				name := strings.Join(full, "_")
				names[name] = true
				if strings.HasPrefix(sel.Sel.Name, "Histogram") || strings.HasPrefix(sel.Sel.Name, "Summary") {
					for _, s := range []string{"_bucket", "_sum", "_count"} {
						names[name+s] = true
					}
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !names["backflip_audit_backlog"] {
		t.Fatalf("found no backflip_audit_backlog among the metrics the code defines (%d found): the scan is broken", len(names))
	}
	return names
}

// etcdMetrics returns the metric names a real etcd member serves.
func etcdMetrics(t *testing.T) map[string]bool {
	t.Helper()
	srv := etcdtest.Start(t)
	body := httpGet(t, srv.Endpoint()+"/metrics")
	names := map[string]bool{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name := line
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name = line[:i]
		}
		names[name] = true
	}
	return names
}

func httpGet(t *testing.T, u string) string {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", u, resp.Status, data)
	}
	return string(data)
}

var metricName = regexp.MustCompile(`\b(?:backflip|etcd)_[a-z0-9_]+\b`)

func TestPrometheusRule(t *testing.T) {
	objs := manifests(t)
	var rule struct {
		Spec struct {
			Groups []struct {
				Name  string `yaml:"name"`
				Rules []struct {
					Alert       string            `yaml:"alert"`
					Expr        string            `yaml:"expr"`
					For         string            `yaml:"for"`
					Labels      map[string]string `yaml:"labels"`
					Annotations map[string]string `yaml:"annotations"`
				} `yaml:"rules"`
			} `yaml:"groups"`
		} `yaml:"spec"`
	}
	find(t, objs, "PrometheusRule", "backflip").decode(t, &rule)
	backflip := exportedMetrics(t)
	etcd := etcdMetrics(t)

	alerts := map[string]string{}
	for _, g := range rule.Spec.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || strings.TrimSpace(r.Expr) == "" {
				t.Errorf("group %s: a rule without alert name or expr: %+v", g.Name, r)
				continue
			}
			if _, dup := alerts[r.Alert]; dup {
				t.Errorf("alert %s defined twice", r.Alert)
			}
			alerts[r.Alert] = r.Expr
			if !slices.Contains([]string{"info", "warning", "critical"}, r.Labels["severity"]) {
				t.Errorf("alert %s: severity %q, want info, warning or critical", r.Alert, r.Labels["severity"])
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("alert %s: want summary and description annotations", r.Alert)
			}
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("alert %s: for %q: %v", r.Alert, r.For, err)
				}
			}
			for _, name := range metricName.FindAllString(r.Expr, -1) {
				switch {
				case strings.HasPrefix(name, "backflip_") && !backflip[name]:
					t.Errorf("alert %s uses %s, which backflip does not export", r.Alert, name)
				case strings.HasPrefix(name, "etcd_") && !etcd[name]:
					t.Errorf("alert %s uses %s, which etcd does not serve", r.Alert, name)
				}
			}
			if strings.Count(r.Expr, "(") != strings.Count(r.Expr, ")") {
				t.Errorf("alert %s: unbalanced parentheses in %q", r.Alert, r.Expr)
			}
		}
	}
	// The alerts the deployment promises, by the metric each rests on.
	for alert, metric := range map[string]string{
		"BackflipVersionCold":           "backflip_agent_warm",
		"BackflipRollbackTargetCold":    "backflip_rollback_target_warm",
		"BackflipDrillOverdue":          "backflip_drill_last_success_timestamp_seconds",
		"BackflipReaderStale":           "backflip_reader_stale",
		"BackflipLeaderCount":           "backflip_leader",
		"BackflipAuditBacklogGrowing":   "backflip_audit_backlog",
		"BackflipEtcdDatabaseNearQuota": "backflip_etcd_quota_backend_bytes",
		"BackflipEtcdDatabaseAtQuota":   "backflip_etcd_db_size_bytes",
		"BackflipEtcdNoLeader":          "etcd_server_has_leader",
	} {
		if !metricName.MatchString(metric) || !slices.Contains(metricName.FindAllString(alerts[alert], -1), metric) {
			t.Errorf("alert %s missing or not on %s", alert, metric)
		}
	}
	// The metrics the deployment relies on are found by the scan (the
	// custom etcd collector's among them).
	for _, name := range []string{"backflip_leader", "backflip_etcd_db_size_bytes", "backflip_etcd_quota_backend_bytes",
		"backflip_rollback_target_warm", "backflip_drill_last_success_timestamp_seconds", "backflip_reader_stale"} {
		if !backflip[name] {
			t.Errorf("the code does not define %s", name)
		}
	}
	// No stand-ins are left: every alert rests on the metric it is about.
	text := readFile(t, "kubernetes/prometheusrule.yaml")
	for _, stale := range []string{"cannot express yet", "does not export", "exports no metric", "Until one exists"} {
		if strings.Contains(text, stale) {
			t.Errorf("prometheusrule.yaml still says %q", stale)
		}
	}
}

// ---------------------------------------------------------------------------
// etcd.

// etcdConfigKeys are the keys an etcd configuration file may hold: the
// json names of embed.Config plus those of its file-only part.
func etcdConfigKeys() map[string]bool {
	keys := map[string]bool{}
	ct := reflect.TypeFor[embed.Config]()
	for i := range ct.NumField() {
		if name, _, _ := strings.Cut(ct.Field(i).Tag.Get("json"), ","); name != "" && name != "-" {
			keys[name] = true
		}
	}
	// embed's unexported configJSON.
	for _, k := range []string{"listen-peer-urls", "listen-client-urls", "listen-client-http-urls",
		"initial-advertise-peer-urls", "advertise-client-urls", "cors", "host-whitelist",
		"client-transport-security", "peer-transport-security", "feature-gates"} {
		keys[k] = true
	}
	return keys
}

var etcdSecurityKeys = []string{"cert-file", "key-file", "client-cert-file", "client-key-file",
	"client-cert-auth", "trusted-ca-file", "auto-tls", "allowed-cn", "allowed-hostname", "skip-client-san-verification"}

func TestEtcdSettings(t *testing.T) {
	const file = "etcd/etcd.conf.yml"
	raw := loadFile(t, file)
	if len(raw) != 1 {
		t.Fatalf("%s: want one document", file)
	}
	keys := etcdConfigKeys()
	for k, v := range raw[0].m {
		if !keys[k] {
			t.Errorf("%s: %s is not an etcd setting (etcd would ignore it)", file, k)
		}
		if sec, ok := v.(map[string]any); ok {
			for sk := range sec {
				if !slices.Contains(etcdSecurityKeys, sk) {
					t.Errorf("%s: %s.%s is not an etcd TLS setting", file, k, sk)
				}
			}
		}
	}
	cfg, err := embed.ConfigFromFile(file)
	if err != nil {
		t.Fatalf("%s: etcd does not load it: %v", file, err)
	}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop()) // checks stay, noise goes
	if err := cfg.Validate(); err != nil {
		t.Fatalf("%s: etcd refuses it: %v", file, err)
	}
	if cfg.AutoCompactionMode != embed.CompactorModePeriodic {
		t.Errorf("%s: auto-compaction-mode %q, want periodic", file, cfg.AutoCompactionMode)
	}
	if d, err := time.ParseDuration(cfg.AutoCompactionRetention); err != nil || d <= 0 {
		t.Errorf("%s: auto-compaction-retention %q, want a duration", file, cfg.AutoCompactionRetention)
	}
	if cfg.QuotaBackendBytes <= 0 || cfg.QuotaBackendBytes > 8<<30 {
		t.Errorf("%s: quota-backend-bytes %d, want set and at most 8 GiB", file, cfg.QuotaBackendBytes)
	}
	if len(cfg.ListenMetricsUrls) == 0 {
		t.Errorf("%s: want listen-metrics-urls (Prometheus and health checks)", file)
	}

	// The StatefulSet runs the same hygiene settings as flags, and only
	// flags etcd knows.
	objs := manifests(t)
	sts := workloadOf(t, objs, "StatefulSet", "backflip-etcd")
	c := containerOf(t, sts, "etcd")
	flags := map[string]string{}
	for _, a := range c.Args {
		k, v, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !ok || !strings.HasPrefix(a, "--") {
			t.Errorf("StatefulSet backflip-etcd: argument %q is not --flag=value", a)
			continue
		}
		flags[k] = v
		sec := strings.TrimPrefix(k, "peer-")
		if !keys[k] && !slices.Contains(etcdSecurityKeys, sec) {
			t.Errorf("StatefulSet backflip-etcd: --%s is not an etcd flag", k)
		}
	}
	for _, k := range []string{"auto-compaction-mode", "auto-compaction-retention", "quota-backend-bytes", "snapshot-count", "max-request-bytes"} {
		if fmt.Sprint(raw[0].m[k]) != flags[k] {
			t.Errorf("--%s=%s in the StatefulSet, %v in %s", k, flags[k], raw[0].m[k], file)
		}
	}
	if *sts.Spec.Replicas != 3 || strings.Count(flags["initial-cluster"], "=") != 3 {
		t.Errorf("StatefulSet backflip-etcd: want 3 replicas in the initial cluster, got %d and %q", *sts.Spec.Replicas, flags["initial-cluster"])
	}
	if mp := flags["listen-metrics-urls"]; !strings.HasSuffix(mp, ":"+strconv.Itoa(c.port(t, "metrics"))) {
		t.Errorf("--listen-metrics-urls=%s is not on the container port metrics", mp)
	}

	// The probes' paths exist on a real etcd.
	srv := etcdtest.Start(t)
	for _, p := range []*probe{c.ReadinessProbe, c.LivenessProbe, c.StartupProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Port != "metrics" {
			t.Errorf("StatefulSet backflip-etcd: want httpGet probes on port metrics, got %+v", p)
			continue
		}
		httpGet(t, srv.Endpoint()+p.HTTPGet.Path)
	}

	// The etcd image is the version backflip is built and tested against,
	// and the defrag job runs etcdctl defrag on the whole cluster.
	version := etcdVersion(t)
	for o, w := range workloads(t, objs) {
		for _, c := range w.pod().containers() {
			if repo, tag, _ := strings.Cut(c.Image, ":"); repo == "gcr.io/etcd-development/etcd" && tag != version {
				t.Errorf("%s: etcd image %s, want %s (go.mod's etcd version)", o, c.Image, version)
			}
		}
	}
	cron := workloadOf(t, objs, "CronJob", "backflip-etcd-defrag")
	defrag := false
	for _, c := range cron.pod().containers() {
		if len(c.Command) > 0 && strings.HasSuffix(c.Command[0], "/etcdctl") && slices.Equal(c.Args, []string{"defrag", "--cluster"}) {
			defrag = true
			if e, ok := c.env("ETCDCTL_USER"); !ok || e.Value != "root" {
				t.Error("the defrag job must run as etcd's root (defragmentation needs it)")
			}
		}
	}
	if !defrag {
		t.Error("CronJob backflip-etcd-defrag does not run etcdctl defrag --cluster")
	}
}

// ---------------------------------------------------------------------------
// README.

// README.md describes every file of deploy/.
func TestReadmeNamesEveryFile(t *testing.T) {
	readme := readFile(t, "README.md")
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || path == "README.md" {
			return err
		}
		if !strings.Contains(readme, filepath.Base(path)) {
			t.Errorf("README.md does not mention %s", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
