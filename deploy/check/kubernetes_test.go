package check

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// kubeDir is where the manifests live.
var kubeDir = filepath.Join(root, "deploy", "kubernetes")

// kustomization is the part of kustomize's Kustomization these manifests
// use; decoded strictly, so a field outside it is an error here.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name    string `json:"name"`
		NewName string `json:"newName"`
		NewTag  string `json:"newTag"`
	} `json:"images"`
	ConfigMapGenerator []struct {
		Name  string   `json:"name"`
		Files []string `json:"files"`
	} `json:"configMapGenerator"`
}

// scaledObject is the part of KEDA's keda.sh/v1alpha1 ScaledObject these
// manifests use (KEDA's Go types pull in its controllers; this is checked
// structurally instead): decoded strictly, so a misspelt field fails.
type scaledObject struct {
	v1.TypeMeta `json:",inline"`
	Metadata    v1.ObjectMeta `json:"metadata"`
	Spec        struct {
		ScaleTargetRef struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Name       string `json:"name"`
		} `json:"scaleTargetRef"`
		MinReplicaCount *int32 `json:"minReplicaCount"`
		MaxReplicaCount *int32 `json:"maxReplicaCount"`
		PollingInterval *int32 `json:"pollingInterval"`
		CooldownPeriod  *int32 `json:"cooldownPeriod"`
		Advanced        *struct {
			HorizontalPodAutoscalerConfig *struct {
				Behavior *struct {
					ScaleUp   *hpaRules `json:"scaleUp"`
					ScaleDown *hpaRules `json:"scaleDown"`
				} `json:"behavior"`
			} `json:"horizontalPodAutoscalerConfig"`
		} `json:"advanced"`
		Triggers []struct {
			Type              string            `json:"type"`
			Metadata          map[string]string `json:"metadata"`
			AuthenticationRef *struct {
				Name string `json:"name"`
			} `json:"authenticationRef"`
		} `json:"triggers"`
	} `json:"spec"`
}

type hpaRules struct {
	StabilizationWindowSeconds *int32 `json:"stabilizationWindowSeconds"`
	Policies                   []struct {
		Type          string `json:"type"`
		Value         int32  `json:"value"`
		PeriodSeconds int32  `json:"periodSeconds"`
	} `json:"policies"`
}

// manifests is every object in deploy/kubernetes, decoded.
type manifests struct {
	kust           kustomization
	deployments    []*appsv1.Deployment
	pdbs           []*policyv1.PodDisruptionBudget
	services       []*corev1.Service
	serviceMonitor []*monitoringv1.ServiceMonitor
	scaledObjects  []*scaledObject
	secrets        []*corev1.Secret
	accounts       []*corev1.ServiceAccount
	config         []byte // residency.yaml, the ConfigMap's content
}

// loadManifests decodes kustomization.yaml, every resource it lists and
// secret.example.yaml, each document strictly into its API type (unknown
// or duplicate fields are errors), and reads the generated ConfigMap's file.
func loadManifests(t *testing.T) *manifests {
	t.Helper()
	m := &manifests{}
	b, err := os.ReadFile(filepath.Join(kubeDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := decodeStrict(b, &m.kust); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	files := append(slices.Clone(m.kust.Resources), "secret.example.yaml")
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(kubeDir, f))
		if err != nil {
			t.Fatal(err)
		}
		r := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
		for i := 0; ; i++ {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if len(bytes.TrimSpace(stripComments(doc))) == 0 {
				continue
			}
			if err := m.add(doc); err != nil {
				t.Errorf("%s, document %d: %v", f, i+1, err)
			}
		}
	}
	for _, g := range m.kust.ConfigMapGenerator {
		for _, f := range g.Files {
			if m.config, err = os.ReadFile(filepath.Join(kubeDir, f)); err != nil {
				t.Fatal(err)
			}
		}
	}
	return m
}

// decodeStrict decodes a YAML document into obj as the API server does:
// field names are case-sensitive, and unknown or duplicate fields are
// errors (sigs.k8s.io/yaml's UnmarshalStrict would match them without case).
func decodeStrict(doc []byte, obj any) error {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	strict, err := sigsjson.UnmarshalStrict(j, obj)
	return errors.Join(append(strict, err)...)
}

func stripComments(doc []byte) []byte {
	var out []byte
	for _, l := range bytes.Split(doc, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(l), []byte("#")) {
			out = append(out, l...)
			out = append(out, '\n')
		}
	}
	return out
}

// add decodes one document strictly into the type its apiVersion and kind
// name.
func (m *manifests) add(doc []byte) error {
	var tm v1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return err
	}
	var obj any
	switch tm.APIVersion + " " + tm.Kind {
	case "apps/v1 Deployment":
		d := &appsv1.Deployment{}
		m.deployments, obj = append(m.deployments, d), d
	case "policy/v1 PodDisruptionBudget":
		p := &policyv1.PodDisruptionBudget{}
		m.pdbs, obj = append(m.pdbs, p), p
	case "v1 Service":
		s := &corev1.Service{}
		m.services, obj = append(m.services, s), s
	case "v1 Secret":
		s := &corev1.Secret{}
		m.secrets, obj = append(m.secrets, s), s
	case "v1 ServiceAccount":
		s := &corev1.ServiceAccount{}
		m.accounts, obj = append(m.accounts, s), s
	case "monitoring.coreos.com/v1 ServiceMonitor":
		s := &monitoringv1.ServiceMonitor{}
		m.serviceMonitor, obj = append(m.serviceMonitor, s), s
	case "keda.sh/v1alpha1 ScaledObject":
		s := &scaledObject{}
		m.scaledObjects, obj = append(m.scaledObjects, s), s
	default:
		return fmt.Errorf("%s %s: no check for this kind (add it to manifests.add)", tm.APIVersion, tm.Kind)
	}
	if err := decodeStrict(doc, obj); err != nil {
		return fmt.Errorf("%s: %w", tm.Kind, err)
	}
	return nil
}

// residencyConfig is the part of residency.yaml the manifests depend on.
type residencyConfig struct {
	HTTP struct {
		Listen string `json:"listen"`
	} `json:"http"`
	Kafka struct {
		Clusters map[string]struct {
			Brokers []string `json:"brokers"`
		} `json:"clusters"`
		IngestCluster string `json:"ingest_cluster"`
	} `json:"kafka"`
	Router struct {
		IngestTopics    []string `json:"ingest_topics"`
		ConsumerGroup   string   `json:"consumer_group"`
		StartOffset     string   `json:"start_offset"`
		ShutdownTimeout string   `json:"shutdown_timeout"`
	} `json:"router"`
	Purge struct {
		Every string `json:"every"`
	} `json:"purge"`
	Sinks []struct {
		Store        string `json:"store"`
		Listen       string `json:"listen"`
		DrainTimeout string `json:"drain_timeout"`
	} `json:"sinks"`
}

func (m *manifests) residencyConfig(t *testing.T) *residencyConfig {
	t.Helper()
	var c residencyConfig
	if err := yaml.Unmarshal(m.config, &c); err != nil {
		t.Fatalf("residency.yaml: %v", err)
	}
	return &c
}

// durationOr parses a config duration, or returns def for "".
func durationOr(t *testing.T, s string, def time.Duration) time.Duration {
	t.Helper()
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("residency.yaml: %q: %v", s, err)
	}
	return d
}

func portOf(listen string) string {
	_, p, _ := strings.Cut(listen, ":")
	return p
}

// residencyContainer returns the residency container of d.
func residencyContainer(t *testing.T, d *appsv1.Deployment) *corev1.Container {
	t.Helper()
	for i := range d.Spec.Template.Spec.Containers {
		if c := &d.Spec.Template.Spec.Containers[i]; c.Name == "residency" {
			return c
		}
	}
	t.Fatalf("Deployment %s has no container named residency", d.Name)
	return nil
}

// flagValue returns the value of --name in args.
func flagValue(args []string, name string) string {
	for i, a := range args {
		switch {
		case (a == "--"+name || a == "-"+name) && i+1 < len(args):
			return args[i+1]
		case strings.HasPrefix(a, "--"+name+"="):
			return strings.TrimPrefix(a, "--"+name+"=")
		}
	}
	return ""
}

// TestKubernetesManifests decodes every manifest strictly with the
// Kubernetes API types (ServiceMonitor: the prometheus-operator's;
// ScaledObject and the Kustomization: the fields used, strictly) and checks
// what running residency needs of them, against its config, its Dockerfile
// and its binary: see the comments below.
func TestKubernetesManifests(t *testing.T) {
	m := loadManifests(t)
	cfg := m.residencyConfig(t)
	bin, _, _ := residency(t)

	// The kustomization lists every manifest here, once.
	entries, err := os.ReadDir(kubeDir)
	if err != nil {
		t.Fatal(err)
	}
	var onDisk []string
	for _, e := range entries {
		switch n := e.Name(); {
		case !strings.HasSuffix(n, ".yaml"), n == "kustomization.yaml", n == "secret.example.yaml":
		case slices.ContainsFunc(m.kust.ConfigMapGenerator, func(g struct {
			Name  string   `json:"name"`
			Files []string `json:"files"`
		}) bool {
			return slices.Contains(g.Files, n)
		}):
		default:
			onDisk = append(onDisk, n)
		}
	}
	listed := slices.Clone(m.kust.Resources)
	sort.Strings(listed)
	if !slices.Equal(onDisk, listed) {
		t.Errorf("kustomization.yaml resources %v, but the directory holds %v", listed, onDisk)
	}
	if len(m.kust.ConfigMapGenerator) != 1 || m.kust.ConfigMapGenerator[0].Name != "residency-config" {
		t.Fatalf("want one configMapGenerator, residency-config: %+v", m.kust.ConfigMapGenerator)
	}
	if len(m.kust.Images) != 1 || m.kust.Images[0].Name != "residency" || m.kust.Images[0].NewTag == "latest" {
		t.Errorf("kustomization.yaml images: want one entry for image residency, not tagged latest: %+v", m.kust.Images)
	}
	if len(m.secrets) != 1 {
		t.Fatalf("%d Secrets in secret.example.yaml, want 1", len(m.secrets))
	}
	secret := m.secrets[0]
	for k, v := range secret.StringData {
		if v != "" {
			t.Errorf("secret.example.yaml: %s has a value; the example must not carry secrets", k)
		}
	}
	envDoc, err := os.ReadFile(filepath.Join(root, "docs", "configuration.md"))
	if err != nil {
		t.Fatal(err)
	}

	var routers, purges []*appsv1.Deployment
	stores := map[string]*appsv1.Deployment{}
	for _, d := range m.deployments {
		ctx := "Deployment " + d.Name
		for _, e := range validation.IsDNS1123Subdomain(d.Name) {
			t.Errorf("%s: name: %s", ctx, e)
		}
		sel, err := v1.LabelSelectorAsSelector(d.Spec.Selector)
		if err != nil || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("%s: selector %v does not match its pod labels %v (%v)", ctx, d.Spec.Selector, d.Spec.Template.Labels, err)
		}
		pod := d.Spec.Template.Spec
		c := residencyContainer(t, d)
		if c.Image != m.kust.Images[0].Name {
			t.Errorf("%s: image %q, want %q (set by kustomization.yaml images)", ctx, c.Image, m.kust.Images[0].Name)
		}
		if len(c.Command) > 0 {
			t.Errorf("%s: command %v overrides the image's ENTRYPOINT (residency): use args", ctx, c.Command)
		}
		if len(c.Args) == 0 {
			t.Fatalf("%s: no args", ctx)
		}

		// The config: the generated ConfigMap mounted where --config points.
		cfgPath := flagValue(c.Args, "config")
		var mounted bool
		for _, vm := range c.VolumeMounts {
			for _, v := range pod.Volumes {
				if v.Name == vm.Name && v.ConfigMap != nil && v.ConfigMap.Name == "residency-config" &&
					cfgPath == path.Join(vm.MountPath, "residency.yaml") && vm.ReadOnly {
					mounted = true
				}
			}
		}
		if !mounted {
			t.Errorf("%s: --config %q is not residency.yaml of the residency-config ConfigMap, mounted read-only", ctx, cfgPath)
		}

		// Ports and probes: the ops port is the config's listen port, the
		// image's EXPOSE, and the probes' port.
		listen := cfg.HTTP.Listen
		var drain time.Duration
		switch c.Args[0] {
		case "route":
			routers = append(routers, d)
			drain = durationOr(t, cfg.Router.ShutdownTimeout, 10*time.Second)
			if d.Spec.Replicas != nil {
				t.Errorf("%s: spec.replicas is set, but KEDA scales the routers: `kubectl apply` would reset it", ctx)
			}
		case "sink":
			store := flagValue(c.Args, "store")
			if stores[store] != nil {
				t.Errorf("%s: a second Deployment for store %q", ctx, store)
			}
			stores[store] = d
			drain = 10 * time.Second
			for _, s := range cfg.Sinks {
				if s.Store == store {
					if s.Listen != "" {
						listen = s.Listen
					}
					drain = durationOr(t, s.DrainTimeout, drain)
				}
			}
		case "purge":
			purges = append(purges, d)
			// A service: without an interval it would run once, exit and
			// be restarted in a loop.
			every := flagValue(c.Args, "every")
			if every == "" {
				every = cfg.Purge.Every
			}
			if durationOr(t, every, 0) <= 0 {
				t.Errorf("%s: purge without --every or purge.every runs once and exits: a Deployment would restart it in a loop", ctx)
			}
			drain = 5 * time.Second // the run in hand is cut short
		default:
			t.Errorf("%s: args %v: want route, sink or purge", ctx, c.Args)
		}
		var ops *corev1.ContainerPort
		for i := range c.Ports {
			if c.Ports[i].Name == "ops" {
				ops = &c.Ports[i]
			}
		}
		if ops == nil {
			t.Fatalf("%s: no container port named ops", ctx)
		}
		if strconv.Itoa(int(ops.ContainerPort)) != portOf(listen) {
			t.Errorf("%s: ops port %d, but the config listens on %q", ctx, ops.ContainerPort, listen)
		}
		for name, p := range map[string]*corev1.Probe{"/healthz": c.LivenessProbe, "/readyz": c.ReadinessProbe} {
			switch {
			case p == nil || p.HTTPGet == nil:
				t.Errorf("%s: no HTTP probe on %s", ctx, name)
			case p.HTTPGet.Path != name:
				t.Errorf("%s: probe path %s, want %s", ctx, p.HTTPGet.Path, name)
			case !(p.HTTPGet.Port == intstr.FromString("ops") || p.HTTPGet.Port == intstr.FromInt32(ops.ContainerPort)):
				t.Errorf("%s: probe %s on port %s, not the ops port", ctx, name, p.HTTPGet.Port.String())
			}
		}

		// Graceful termination: SIGTERM, then the batch in hand is flushed
		// and committed within the shutdown (sink: drain) timeout; leave
		// room for the group leave and the process exit.
		grace := time.Duration(30) * time.Second
		if pod.TerminationGracePeriodSeconds != nil {
			grace = time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
		}
		if grace < drain+5*time.Second {
			t.Errorf("%s: terminationGracePeriodSeconds %s leaves no room after the %s shutdown timeout", ctx, grace, drain)
		}

		// Resources.
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			req, hasReq := c.Resources.Requests[r]
			lim, hasLim := c.Resources.Limits[r]
			if !hasReq || !hasLim {
				t.Errorf("%s: %s request and limit must both be set", ctx, r)
			} else if req.Cmp(lim) > 0 {
				t.Errorf("%s: %s request %s above its limit %s", ctx, r, req.String(), lim.String())
			}
		}

		// Security: non-root (the image's user), no privilege escalation,
		// read-only root file system, no capabilities, no API token.
		psc, csc := pod.SecurityContext, c.SecurityContext
		if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser != imageUser {
			t.Errorf("%s: pod securityContext must set runAsNonRoot and runAsUser %d (the image's USER)", ctx, imageUser)
		}
		switch {
		case csc == nil:
			t.Errorf("%s: no container securityContext", ctx)
		default:
			if csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation {
				t.Errorf("%s: allowPrivilegeEscalation must be false", ctx)
			}
			if csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem {
				t.Errorf("%s: readOnlyRootFilesystem must be true", ctx)
			}
			if csc.Privileged != nil && *csc.Privileged {
				t.Errorf("%s: privileged", ctx)
			}
			if csc.Capabilities == nil || !slices.Contains(csc.Capabilities.Drop, "ALL") || len(csc.Capabilities.Add) > 0 {
				t.Errorf("%s: capabilities must drop ALL and add none", ctx)
			}
		}
		if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
			t.Errorf("%s: automountServiceAccountToken must be false (residency never calls the API)", ctx)
		}
		if !slices.ContainsFunc(m.accounts, func(a *corev1.ServiceAccount) bool { return a.Name == pod.ServiceAccountName }) {
			t.Errorf("%s: serviceAccountName %q is not in the manifests", ctx, pod.ServiceAccountName)
		}

		// Environment: secrets from keys of the Secret; every RESIDENCY_*
		// variable one the binary reads (docs/configuration.md).
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				ref := e.ValueFrom.SecretKeyRef
				if _, ok := secret.StringData[ref.Key]; ref.Name != secret.Name || !ok {
					t.Errorf("%s: env %s: secret %s key %s is not in secret.example.yaml", ctx, e.Name, ref.Name, ref.Key)
				}
			}
			if strings.HasPrefix(e.Name, "RESIDENCY_") && !documentedEnv(e.Name, envDoc, cfg) {
				t.Errorf("%s: env %s is not a variable residency reads (docs/configuration.md)", ctx, e.Name)
			}
		}

		// A PodDisruptionBudget covers it and lets a drain proceed.
		var pdb *policyv1.PodDisruptionBudget
		for _, p := range m.pdbs {
			ps, err := v1.LabelSelectorAsSelector(p.Spec.Selector)
			if err == nil && ps.Matches(labels.Set(d.Spec.Template.Labels)) {
				pdb = p
			}
		}
		switch {
		case pdb == nil:
			t.Errorf("%s: no PodDisruptionBudget selects its pods", ctx)
		case pdb.Spec.MinAvailable != nil && d.Spec.Replicas != nil && pdb.Spec.MinAvailable.IntValue() >= int(*d.Spec.Replicas):
			t.Errorf("%s: PodDisruptionBudget %s would block every eviction", ctx, pdb.Name)
		}

		// The binary takes these arguments: -h lists every flag given.
		out, _ := exec.Command(bin, c.Args[0], "-h").CombinedOutput()
		for _, a := range c.Args[1:] {
			if strings.HasPrefix(a, "-") {
				name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
				if !bytes.Contains(out, []byte("-"+name+" ")) {
					t.Errorf("%s: residency %s has no flag %s:\n%s", ctx, c.Args[0], a, out)
				}
			}
		}
	}
	if len(routers) != 1 {
		t.Errorf("%d router Deployments, want 1", len(routers))
	}
	if len(purges) > 1 {
		t.Errorf("%d purge Deployments: one purge service is enough", len(purges))
	}
	for _, s := range cfg.Sinks {
		if stores[s.Store] == nil {
			t.Errorf("sinks[].store %s of residency.yaml has no Deployment", s.Store)
		}
		delete(stores, s.Store)
	}
	for s := range stores {
		t.Errorf("a Deployment runs store %s, which residency.yaml lacks", s)
	}

	// Prometheus: the Service covers every pod's ops port, the
	// ServiceMonitor scrapes it.
	if len(m.services) != 1 || len(m.serviceMonitor) != 1 {
		t.Fatalf("%d Services and %d ServiceMonitors, want 1 and 1", len(m.services), len(m.serviceMonitor))
	}
	svc, sm := m.services[0], m.serviceMonitor[0]
	for _, d := range m.deployments {
		if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("Service %s does not select the pods of %s", svc.Name, d.Name)
		}
	}
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != "ops" || svc.Spec.Ports[0].TargetPort != intstr.FromString("ops") {
		t.Errorf("Service %s: want one port named ops targeting the ops container port: %+v", svc.Name, svc.Spec.Ports)
	}
	smSel, err := v1.LabelSelectorAsSelector(&sm.Spec.Selector)
	if err != nil || !smSel.Matches(labels.Set(svc.Labels)) {
		t.Errorf("ServiceMonitor %s does not select Service %s (%v)", sm.Name, svc.Name, err)
	}
	if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "ops" || sm.Spec.Endpoints[0].Path != "/metrics" {
		t.Errorf("ServiceMonitor %s: want one endpoint, port ops, path /metrics: %+v", sm.Name, sm.Spec.Endpoints)
	}

	// KEDA: scales the router Deployment on the lag of the routers' group
	// on the ingest topic, never past its partition count.
	if len(m.scaledObjects) != 1 || len(routers) != 1 {
		t.Fatalf("%d ScaledObjects, want 1", len(m.scaledObjects))
	}
	so, router := m.scaledObjects[0], routers[0]
	if so.Spec.ScaleTargetRef.Name != router.Name || (so.Spec.ScaleTargetRef.Kind != "" && so.Spec.ScaleTargetRef.Kind != "Deployment") {
		t.Errorf("ScaledObject %s scales %+v, not Deployment %s", so.Metadata.Name, so.Spec.ScaleTargetRef, router.Name)
	}
	partitions := ingestPartitions(t, cfg.Router.IngestTopics[0])
	switch min, max := so.Spec.MinReplicaCount, so.Spec.MaxReplicaCount; {
	case max == nil || int(*max) != partitions:
		t.Errorf("ScaledObject maxReplicaCount %v, want the ingest topic's %d partitions (docs/operations.md)", max, partitions)
	case min == nil || *min < 1 || *min > *max:
		t.Errorf("ScaledObject minReplicaCount %v: want 1..maxReplicaCount", min)
	}
	if len(so.Spec.Triggers) != 1 || so.Spec.Triggers[0].Type != "kafka" {
		t.Fatalf("ScaledObject: want one kafka trigger: %+v", so.Spec.Triggers)
	}
	md := so.Spec.Triggers[0].Metadata
	group := cfg.Router.ConsumerGroup
	if group == "" {
		group = "residency-router"
	}
	start := cfg.Router.StartOffset
	if start == "" {
		start = "earliest"
	}
	for k, want := range map[string]string{
		"bootstrapServers":   strings.Join(cfg.Kafka.Clusters[cfg.Kafka.IngestCluster].Brokers, ","),
		"consumerGroup":      group,
		"topic":              cfg.Router.IngestTopics[0],
		"offsetResetPolicy":  start,
		"allowIdleConsumers": "false",
	} {
		if md[k] != want {
			t.Errorf("ScaledObject trigger %s = %q, want %q (from residency.yaml)", k, md[k], want)
		}
	}
	if n, err := strconv.Atoi(md["lagThreshold"]); err != nil || n <= 0 {
		t.Errorf("ScaledObject trigger lagThreshold %q: want a positive number", md["lagThreshold"])
	}
	if len(cfg.Router.IngestTopics) != 1 {
		t.Errorf("the ScaledObject's trigger names one ingest topic, the config has %v", cfg.Router.IngestTopics)
	}
}

// documentedEnv reports whether name is a RESIDENCY_* variable residency
// reads: one of docs/configuration.md's table, or a per-cluster one for a
// cluster of the config.
func documentedEnv(name string, doc []byte, cfg *residencyConfig) bool {
	if bytes.Contains(doc, []byte("`"+name+"`")) {
		return true
	}
	for cl := range cfg.Kafka.Clusters {
		prefix := "RESIDENCY_KAFKA_" + regexp.MustCompile(`[^A-Z0-9]+`).ReplaceAllString(strings.ToUpper(cl), "_") + "_"
		if field, ok := strings.CutPrefix(name, prefix); ok &&
			bytes.Contains(doc, []byte("`RESIDENCY_KAFKA_<CLUSTER>_"+field+"`")) {
			return true
		}
	}
	return false
}

// ingestPartitions is the partition count docs/operations.md creates the
// ingest topic with (kafka-topics.sh --create --topic T --partitions N).
func ingestPartitions(t *testing.T, topic string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`--topic ` + regexp.QuoteMeta(topic) + `\s+--partitions (\d+)`)
	m := re.FindSubmatch(b)
	if m == nil {
		t.Fatalf("docs/operations.md does not create %s with `--topic %s --partitions N`", topic, topic)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// TestKubernetesConfigAccepted checks that the ConfigMap's residency.yaml is
// a config residency accepts, whole (every section is validated whatever
// the command), and that it can write every region of the example ruleset:
// `residency explain --config` with that ruleset places a US and a UK event
// on their clusters (exit 0).
func TestKubernetesConfigAccepted(t *testing.T) {
	bin, _, _ := residency(t)
	for country, want := range map[string]string{"US": "residency.us on cluster ingest", "GB": "residency.uk on cluster eu", "DE": "residency.eu on cluster eu"} {
		cmd := exec.Command(bin, "explain", "-", "--config", filepath.Join(kubeDir, "residency.yaml"),
			"--rules", filepath.Join(root, "deploy", "examples", "rules.yaml"))
		cmd.Stdin = strings.NewReader(fmt.Sprintf(`{"country": %q, "user_id": "u-1"}`, country))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("residency explain --config deploy/kubernetes/residency.yaml (%s): %v\n%s", country, err, out)
			continue
		}
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("%s: explain does not say %q:\n%s", country, want, out)
		}
	}
}
