package deploy

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/ward-idp/ward/internal/config"
)

// object is one Kubernetes object, decoded loosely.
type object map[string]any

func (o object) kind() string { s, _ := o["kind"].(string); return s }
func (o object) name() string { s, _ := get(o, "metadata", "name").(string); return s }

// get walks maps by key and lists by int index; nil when absent.
func get(v any, path ...any) any {
	if o, ok := v.(object); ok {
		v = map[string]any(o)
	}
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func str(v any, path ...any) string { s, _ := get(v, path...).(string); return s }
func list(v any, path ...any) []any { l, _ := get(v, path...).([]any); return l }

func loadManifests(t *testing.T) []object {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("kubernetes", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	var objs []object
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		for {
			var m map[string]any // nested maps decode as map[string]any
			err := dec.Decode(&m)
			o := object(m)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if o == nil {
				continue
			}
			if o.kind() == "" || str(o, "apiVersion") == "" || o.name() == "" {
				t.Errorf("%s: an object without apiVersion, kind or metadata.name", f)
			}
			objs = append(objs, o)
		}
	}
	return objs
}

func find(t *testing.T, objs []object, kind string) object {
	t.Helper()
	for _, o := range objs {
		if o.kind() == kind {
			return o
		}
	}
	t.Fatalf("no %s in deploy/kubernetes", kind)
	return nil
}

// servedGETPaths lists the paths `ward serve` registers for GET, read from
// its source.
func servedGETPaths(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "internal", "server", "server.go"))
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, m := range regexp.MustCompile(`mux\.Handle(?:Func)?\("GET (/[a-z]+)"`).FindAllStringSubmatch(string(b), -1) {
		paths = append(paths, m[1])
	}
	return paths
}

func TestKubernetesManifests(t *testing.T) {
	objs := loadManifests(t)
	dep := find(t, objs, "Deployment")
	pod := get(dep, "spec", "template", "spec")
	podLabels, _ := get(dep, "spec", "template", "metadata", "labels").(map[string]any)
	sel, _ := get(dep, "spec", "selector", "matchLabels").(map[string]any)
	if len(sel) == 0 || !subset(sel, podLabels) {
		t.Errorf("Deployment selector %v does not match the pod labels %v", sel, podLabels)
	}
	replicas, _ := get(dep, "spec", "replicas").(int)
	if replicas < 2 {
		t.Errorf("Deployment replicas %d: at least 2 for a rolling update without downtime", replicas)
	}

	// Pod: not root, no service account token, seccomp.
	if get(pod, "securityContext", "runAsNonRoot") != true {
		t.Error("pod securityContext.runAsNonRoot is not true")
	}
	if uid, _ := get(pod, "securityContext", "runAsUser").(int); uid == 0 {
		t.Error("pod securityContext.runAsUser is 0 or unset")
	}
	if get(pod, "automountServiceAccountToken") != false {
		t.Error("automountServiceAccountToken is not false: Ward needs no Kubernetes API access")
	}
	if str(pod, "securityContext", "seccompProfile", "type") != "RuntimeDefault" {
		t.Error("pod seccompProfile is not RuntimeDefault")
	}

	containers := list(pod, "containers")
	if len(containers) != 1 {
		t.Fatalf("%d containers, want 1", len(containers))
	}
	c := containers[0]
	sc := get(c, "securityContext")
	if get(sc, "readOnlyRootFilesystem") != true {
		t.Error("container readOnlyRootFilesystem is not true")
	}
	if get(sc, "allowPrivilegeEscalation") != false {
		t.Error("container allowPrivilegeEscalation is not false")
	}
	if get(sc, "privileged") == true {
		t.Error("container is privileged")
	}
	if drop := list(sc, "capabilities", "drop"); !slices.Contains(drop, any("ALL")) {
		t.Errorf("capabilities.drop %v lacks ALL", drop)
	}
	for _, kind := range []string{"requests", "limits"} {
		for _, res := range []string{"cpu", "memory"} {
			if get(c, "resources", kind, res) == nil {
				t.Errorf("resources.%s.%s is not set", kind, res)
			}
		}
	}

	// Probes: on a port the container declares, at a path ward serve
	// serves; readiness checks the database (/healthz), liveness does not.
	ports := map[string]int{}
	for _, p := range list(c, "ports") {
		n, _ := get(p, "containerPort").(int)
		ports[str(p, "name")] = n
	}
	served := servedGETPaths(t)
	if !slices.Contains(served, "/healthz") || !slices.Contains(served, "/livez") {
		t.Fatalf("server.go serves %v: /healthz or /livez missing", served)
	}
	wantPath := map[string]string{"readinessProbe": "/healthz", "livenessProbe": "/livez", "startupProbe": "/livez"}
	for probe, want := range wantPath {
		h := get(c, probe, "httpGet")
		if h == nil {
			t.Errorf("%s: no httpGet", probe)
			continue
		}
		if p := str(h, "path"); p != want || !slices.Contains(served, p) {
			t.Errorf("%s path %q, want %q (served: %v)", probe, p, want, served)
		}
		switch port := get(h, "port").(type) {
		case string:
			if _, ok := ports[port]; !ok {
				t.Errorf("%s port %q is not a container port", probe, port)
			}
		case int:
			if !slices.ContainsFunc(mapsValues(ports), func(n int) bool { return n == port }) {
				t.Errorf("%s port %d is not a container port", probe, port)
			}
		default:
			t.Errorf("%s has no port", probe)
		}
		if str(h, "scheme") != "HTTPS" {
			t.Errorf("%s scheme %q: Ward serves TLS in the pod", probe, str(h, "scheme"))
		}
	}

	// Secrets come from a Secret that the manifests define with that key;
	// no secret-looking variable has a literal value.
	secrets := map[string]object{}
	for _, o := range objs {
		if o.kind() == "Secret" {
			secrets[o.name()] = o
		}
	}
	env := map[string]any{}
	for _, e := range list(c, "env") {
		name := str(e, "name")
		env[name] = e
		if get(e, "value") != nil && regexp.MustCompile(`KEK|DSN|TOKEN|SECRET|PASSWORD`).MatchString(name) {
			t.Errorf("env %s has a literal value: take it from a Secret", name)
		}
	}
	for _, name := range []string{"WARD_KEK", "WARD_STORAGE__POSTGRES__DSN"} {
		ref := get(env[name], "valueFrom", "secretKeyRef")
		if ref == nil {
			t.Errorf("env %s is not from a Secret", name)
			continue
		}
		s, ok := secrets[str(ref, "name")]
		if !ok {
			t.Errorf("env %s: Secret %q is not in the manifests", name, str(ref, "name"))
			continue
		}
		if get(s, "stringData", str(ref, "key")) == nil && get(s, "data", str(ref, "key")) == nil {
			t.Errorf("env %s: Secret %q has no key %q", name, str(ref, "name"), str(ref, "key"))
		}
	}

	// Volumes: every mount names a volume; the ConfigMap exists.
	vols := map[string]any{}
	for _, v := range list(pod, "volumes") {
		vols[str(v, "name")] = v
	}
	for _, m := range list(c, "volumeMounts") {
		if _, ok := vols[str(m, "name")]; !ok {
			t.Errorf("volumeMount %q names no volume", str(m, "name"))
		}
	}
	cmName := str(vols["config"], "configMap", "name")
	var cm object
	for _, o := range objs {
		if o.kind() == "ConfigMap" && o.name() == cmName {
			cm = o
		}
	}
	if cm == nil {
		t.Fatalf("ConfigMap %q is not in the manifests", cmName)
	}

	// The configuration passes Ward's own validation, with the Secret's
	// values and the TLS files standing in.
	t.Run("config", func(t *testing.T) {
		dir := t.TempDir()
		file := filepath.Join(dir, "ward.yaml")
		if err := os.WriteFile(file, []byte(str(cm, "data", "ward.yaml")), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"tls.crt", "tls.key"} {
			os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600)
		}
		cfg, err := config.LoadWith(config.LoadOptions{File: file,
			Environ:   []string{"WARD_STORAGE__POSTGRES__DSN=postgres://ward:pw@db:5432/ward?sslmode=verify-full", "WARD_KEK=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="},
			Overrides: map[string]any{"tls.cert_file": filepath.Join(dir, "tls.crt"), "tls.key_file": filepath.Join(dir, "tls.key")}})
		if err != nil {
			t.Fatal(err)
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("the ConfigMap's ward.yaml does not validate: %v", err)
		}
		if cfg.Storage.Driver != config.DriverPostgres || cfg.Bus.NATS.URL == "" || cfg.Bus.NATS.Replicas != 3 {
			t.Errorf("replicas need PostgreSQL and an external NATS cluster with 3 stream replicas: driver %q, replicas %d", cfg.Storage.Driver, cfg.Bus.NATS.Replicas)
		}
		if cfg.KEK.Env != "WARD_KEK" || env[cfg.KEK.Env] == nil {
			t.Errorf("kek.env %q is not set from the Deployment", cfg.KEK.Env)
		}
		if !strings.HasPrefix(cfg.Issuer, "https://") || len(cfg.TrustedProxies) == 0 {
			t.Errorf("issuer %q, trusted_proxies %v", cfg.Issuer, cfg.TrustedProxies)
		}
		if tokenEnv := cfg.Bus.NATS.TokenEnv; tokenEnv != "" && get(env[tokenEnv], "valueFrom", "secretKeyRef") == nil {
			t.Errorf("bus.nats.token_env %s is not from a Secret", tokenEnv)
		}
	})

	// Service and PodDisruptionBudget select the pods.
	svc := find(t, objs, "Service")
	if s, _ := get(svc, "spec", "selector").(map[string]any); len(s) == 0 || !subset(s, podLabels) {
		t.Errorf("Service selector %v does not select the pods %v", s, podLabels)
	}
	for _, p := range list(svc, "spec", "ports") {
		if tp, ok := get(p, "targetPort").(string); ok {
			if _, ok := ports[tp]; !ok {
				t.Errorf("Service targetPort %q is not a container port", tp)
			}
		}
	}
	pdb := find(t, objs, "PodDisruptionBudget")
	if s, _ := get(pdb, "spec", "selector", "matchLabels").(map[string]any); len(s) == 0 || !subset(s, podLabels) {
		t.Errorf("PodDisruptionBudget selector %v does not select the pods", s)
	}
	if minAv, ok := get(pdb, "spec", "minAvailable").(int); !ok || minAv < 1 || minAv >= replicas {
		t.Errorf("PodDisruptionBudget minAvailable %v: want 1..replicas-1 (%d)", get(pdb, "spec", "minAvailable"), replicas)
	}
}

func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var froms, users []string
	var entry string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch strings.ToUpper(f[0]) {
		case "FROM":
			froms = append(froms, f[1])
		case "USER":
			users = append(users, f[1])
		case "ENTRYPOINT":
			entry = strings.Join(f[1:], " ")
		}
	}
	if len(froms) < 2 {
		t.Fatalf("FROM lines %v: want a build stage and a runtime stage", froms)
	}
	final := froms[len(froms)-1]
	if !strings.Contains(final, "distroless") && !strings.Contains(final, "-slim") {
		t.Errorf("runtime image %q is neither distroless nor debian-slim", final)
	}
	if len(users) == 0 {
		t.Fatal("no USER: the image would run as root")
	}
	if u := strings.Split(users[len(users)-1], ":")[0]; u == "0" || u == "root" {
		t.Errorf("USER %s", users[len(users)-1])
	}
	if !strings.Contains(string(b), "CGO_ENABLED=0") || !strings.Contains(string(b), "./cmd/ward") {
		t.Error("the binary is not built static (CGO_ENABLED=0) from ./cmd/ward")
	}
	if !strings.Contains(entry, "ward") {
		t.Errorf("ENTRYPOINT %q does not run ward", entry)
	}
	if regexp.MustCompile(`(?m)^\s*(ENV|ARG)\s+WARD_KEK`).Match(b) || strings.Contains(string(b), "kek.key") {
		t.Error("the image carries a key-encryption key")
	}
}

func subset(a, b map[string]any) bool {
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func mapsValues(m map[string]int) []int {
	var out []int
	for _, v := range m {
		out = append(out, v)
	}
	return out
}
