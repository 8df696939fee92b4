package deploy

import (
	"bytes"
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"

	certmanagerv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"github.com/google/go-cmp/cmp"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/nodeward/nodeward/deploy/render"
)

// objects indexes decoded objects by "Kind/name".
type objects map[string]runtime.Object

func index(t *testing.T, v variant, objs []render.Object) objects {
	t.Helper()
	m := objects{}
	for _, o := range objs {
		key := o.GVK.Kind + "/" + metaName(o.Obj)
		if _, dup := m[key]; dup {
			t.Fatalf("%s: %s rendered twice", v.name, key)
		}
		m[key] = o.Obj
	}
	return m
}

func metaName(o runtime.Object) string {
	type named interface{ GetName() string }
	if n, ok := o.(named); ok {
		return n.GetName()
	}
	return "?"
}

func get[T runtime.Object](t *testing.T, m objects, key string) T {
	t.Helper()
	o, ok := m[key]
	if !ok {
		t.Fatalf("no %s among %v", key, keys(m))
	}
	typed, ok := o.(T)
	if !ok {
		t.Fatalf("%s decoded as %T", key, o)
	}
	return typed
}

func keys(m objects) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestManifestsDecodeStrictly decodes every rendering with the apimachinery
// strict codec and checks the object set.
func TestManifestsDecodeStrictly(t *testing.T) {
	for _, v := range variants() {
		t.Run(v.name, func(t *testing.T) {
			m := index(t, v, decode(t, v))
			want := []string{
				"ConfigMap/collector-auth",
				"DaemonSet/agent", "Deployment/collector",
				"NetworkPolicy/agent", "NetworkPolicy/collector",
				"PodDisruptionBudget/collector", "Service/collector",
				"ServiceAccount/agent", "ServiceAccount/collector",
			}
			if v.withNS {
				want = append(want, "Namespace/"+v.namespace)
			}
			if !v.postgres {
				want = append(want, "PersistentVolumeClaim/collector-data")
			}
			if v.certManager {
				want = append(want, "Certificate/collector-tls", "Certificate/nodeward-ca", "Issuer/nodeward-ca", "Issuer/nodeward-selfsigned")
			}
			if v.monitoring {
				want = append(want, "ServiceMonitor/collector", "PodMonitor/agent")
			}
			sort.Strings(want)
			if diff := cmp.Diff(want, keys(m)); diff != "" {
				t.Errorf("object set (-want +got):\n%s", diff)
			}
		})
	}
}

// TestStrictDecodingRefusesTypos shows the decoder is strict: the
// wrong-case field that sigs.k8s.io/yaml would accept is refused.
func TestStrictDecodingRefusesTypos(t *testing.T) {
	scheme, err := render.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range []string{
		"apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  hostPid: true\n  containers: [{name: a, image: b}]\n",
		"apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: x}\nspec:\n  updateStrategy: {rollingUpdate: {maxUnavialable: 1}}\n",
		"apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: x}\nspec:\n  endpoint: []\n",
		"apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nmetadata: {name: b}\n",
	} {
		if _, err := render.Decode(strings.NewReader(doc), scheme); err == nil || !strings.Contains(err.Error(), "strict decoding error") {
			t.Errorf("decoded %q: err = %v, want a strict decoding error", doc, err)
		}
	}
}

func container(t *testing.T, spec corev1.PodSpec, name string) corev1.Container {
	t.Helper()
	for _, c := range spec.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %q", name)
	return corev1.Container{}
}

func mount(t *testing.T, c corev1.Container, path string) corev1.VolumeMount {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if m.MountPath == path {
			return m
		}
	}
	t.Fatalf("container %s mounts nothing at %s", c.Name, path)
	return corev1.VolumeMount{}
}

func volume(t *testing.T, spec corev1.PodSpec, name string) corev1.Volume {
	t.Helper()
	for _, v := range spec.Volumes {
		if v.Name == name {
			return v
		}
	}
	t.Fatalf("no volume %q", name)
	return corev1.Volume{}
}

func hasArg(c corev1.Container, arg string) bool { return slices.Contains(c.Args, arg) }

// TestAgentDaemonSet checks what the issue asks of the agent.
func TestAgentDaemonSet(t *testing.T) {
	for _, v := range variants() {
		t.Run(v.name, func(t *testing.T) {
			m := index(t, v, decode(t, v))
			ds := get[*appsv1.DaemonSet](t, m, "DaemonSet/agent")
			spec := ds.Spec.Template.Spec

			// Every Linux node, whatever its taints.
			if spec.NodeSelector["kubernetes.io/os"] != "linux" {
				t.Errorf("nodeSelector = %v, want kubernetes.io/os=linux", spec.NodeSelector)
			}
			tolerateAll := false
			for _, tol := range spec.Tolerations {
				if tol.Operator == corev1.TolerationOpExists && tol.Key == "" && tol.Effect == "" {
					tolerateAll = true
				}
			}
			if !tolerateAll {
				t.Errorf("tolerations %v do not tolerate every taint", spec.Tolerations)
			}
			if spec.PriorityClassName != "system-node-critical" {
				t.Errorf("priorityClassName = %q", spec.PriorityClassName)
			}
			if !spec.HostPID {
				t.Error("hostPID is off: the agent must see the host's processes")
			}
			if spec.HostNetwork || spec.HostIPC {
				t.Errorf("hostNetwork=%v hostIPC=%v: not needed", spec.HostNetwork, spec.HostIPC)
			}
			// Rolling update, 10% at a time.
			if ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType ||
				ds.Spec.UpdateStrategy.RollingUpdate == nil ||
				ds.Spec.UpdateStrategy.RollingUpdate.MaxUnavailable == nil ||
				ds.Spec.UpdateStrategy.RollingUpdate.MaxUnavailable.String() != "10%" {
				t.Errorf("updateStrategy = %+v, want RollingUpdate maxUnavailable 10%%", ds.Spec.UpdateStrategy)
			}

			c := container(t, spec, "agent")
			// Host root read-only at /host, tracefs and BTF, a hostPath spool.
			host := mount(t, c, "/host")
			if !host.ReadOnly || host.RecursiveReadOnly == nil || *host.RecursiveReadOnly != corev1.RecursiveReadOnlyIfPossible {
				t.Errorf("/host mount = %+v, want read-only, recursively where possible", host)
			}
			if hp := volume(t, spec, host.Name).HostPath; hp == nil || hp.Path != "/" {
				t.Errorf("/host is not the host's /: %+v", volume(t, spec, host.Name))
			}
			for _, p := range []string{"/sys/kernel/tracing", "/sys/kernel/btf"} {
				mt := mount(t, c, p)
				if !mt.ReadOnly {
					t.Errorf("%s mounted writable", p)
				}
				if hp := volume(t, spec, mt.Name).HostPath; hp == nil || hp.Path != p {
					t.Errorf("%s is not the host's %s", p, p)
				}
			}
			spool := mount(t, c, "/var/lib/nodeward")
			if hp := volume(t, spec, spool.Name).HostPath; hp == nil || hp.Path != "/var/lib/nodeward" ||
				hp.Type == nil || *hp.Type != corev1.HostPathDirectoryOrCreate {
				t.Errorf("spool volume = %+v, want hostPath /var/lib/nodeward DirectoryOrCreate", volume(t, spec, spool.Name))
			}
			if !hasArg(c, "--spool-dir=/var/lib/nodeward/spool") || !hasArg(c, "--root=/host") || !hasArg(c, "--proc=/proc") {
				t.Errorf("args %v lack the host root, procfs or spool", c.Args)
			}
			// NODE_NAME from the downward API, passed as --node-name.
			nodeName := false
			for _, e := range c.Env {
				if e.Name == "NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName" {
					nodeName = true
				}
			}
			if !nodeName || !hasArg(c, "--node-name=$(NODE_NAME)") {
				t.Errorf("NODE_NAME not from spec.nodeName or not passed: env %v args %v", c.Env, c.Args)
			}
			wantCollector := fmt.Sprintf("--collector=collector.%s.svc:7420", v.namespace)
			if !hasArg(c, wantCollector) {
				t.Errorf("args %v lack %s", c.Args, wantCollector)
			}
			// The projected token, audience nodeward, and no API token.
			tok := mount(t, c, "/var/run/secrets/nodeward")
			pv := volume(t, spec, tok.Name).Projected
			if pv == nil || len(pv.Sources) != 1 || pv.Sources[0].ServiceAccountToken == nil ||
				pv.Sources[0].ServiceAccountToken.Audience != "nodeward" ||
				pv.Sources[0].ServiceAccountToken.ExpirationSeconds == nil || *pv.Sources[0].ServiceAccountToken.ExpirationSeconds > 3600 {
				t.Errorf("token volume = %+v, want a projected token, audience nodeward, at most 1 h", pv)
			}
			if !hasArg(c, "--token-file=/var/run/secrets/nodeward/token") {
				t.Errorf("args %v lack --token-file", c.Args)
			}
			if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
				t.Error("the agent pod mounts an API token it never uses")
			}
			// TLS: only the CA certificate of the collector's secret.
			ca := volume(t, spec, mount(t, c, "/etc/nodeward/ca").Name).Secret
			if ca == nil || ca.SecretName != "collector-tls" || len(ca.Items) != 1 || ca.Items[0].Key != "ca.crt" {
				t.Errorf("collector CA volume = %+v, want only ca.crt of collector-tls", ca)
			}
			// Metrics and health on a named port; probes over HTTP.
			if !hasArg(c, "--metrics-listen=:9421") {
				t.Errorf("args %v lack --metrics-listen=:9421", c.Args)
			}
			if len(c.Ports) != 1 || c.Ports[0].Name != "metrics" || c.Ports[0].ContainerPort != 9421 ||
				c.Ports[0].Protocol != corev1.ProtocolTCP || c.Ports[0].HostPort != 0 {
				t.Errorf("ports = %+v, want only metrics 9421/TCP, no host port", c.Ports)
			}
			// Readiness is /healthz, not /readyz: a collector outage must not
			// make every agent unready and stall a rollout.
			for name, p := range map[string]*corev1.Probe{"startup": c.StartupProbe, "liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
				if p == nil || p.HTTPGet == nil || p.HTTPGet.Port.String() != "metrics" || p.HTTPGet.Path != "/healthz" {
					t.Errorf("%s probe = %+v, want HTTP GET /healthz on the metrics port", name, p)
				}
			}
			// Resources: requests and a memory limit, within the budget a
			// node agent gets (the measured figures are in docs/BENCHMARKS.md).
			req, lim := c.Resources.Requests, c.Resources.Limits
			if req.Cpu().IsZero() || req.Memory().IsZero() || lim.Memory().IsZero() {
				t.Errorf("resources = %+v, want cpu and memory requests and a memory limit", c.Resources)
			}
			if lim.Memory().Value() > 512<<20 || req.Cpu().MilliValue() > 200 {
				t.Errorf("resources = %+v: too much for a per-node agent", c.Resources)
			}

			// Least privilege unless opted in.
			sc := c.SecurityContext
			if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Error("agent root filesystem is writable")
			}
			if v.privileged {
				if sc.Privileged == nil || !*sc.Privileged {
					t.Error("privileged variant is not privileged")
				}
				return
			}
			if sc.Privileged != nil && *sc.Privileged {
				t.Fatal("agent is privileged by default")
			}
			if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Error("agent allows privilege escalation")
			}
			if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
				t.Errorf("capabilities = %+v, want drop ALL", sc.Capabilities)
			}
			add := append([]corev1.Capability(nil), sc.Capabilities.Add...)
			slices.Sort(add)
			want := []corev1.Capability{"BPF", "DAC_READ_SEARCH", "PERFMON", "SYS_PTRACE", "SYS_RESOURCE"}
			if !slices.Equal(add, want) {
				t.Errorf("capabilities add = %v, want exactly %v", add, want)
			}
			if s := spec.SecurityContext; s == nil || s.SeccompProfile == nil || s.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Error("agent seccomp profile is not RuntimeDefault")
			}
		})
	}
}

// TestCollector checks the collector passes the restricted profile by its
// fields (the apiserver test checks it with Pod Security admission).
func TestCollector(t *testing.T) {
	for _, v := range variants() {
		t.Run(v.name, func(t *testing.T) {
			m := index(t, v, decode(t, v))
			d := get[*appsv1.Deployment](t, m, "Deployment/collector")
			spec := d.Spec.Template.Spec
			c := container(t, spec, "collector")
			ps, sc := spec.SecurityContext, c.SecurityContext
			if ps == nil || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot || ps.RunAsUser == nil || *ps.RunAsUser == 0 {
				t.Errorf("pod securityContext = %+v, want non-root", ps)
			}
			if ps.SeccompProfile == nil || ps.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Error("seccomp profile is not RuntimeDefault")
			}
			if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Error("root filesystem is writable")
			}
			if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Error("privilege escalation allowed")
			}
			if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
				t.Errorf("capabilities = %+v, want none", sc.Capabilities)
			}
			if (sc.Privileged != nil && *sc.Privileged) || spec.HostPID || spec.HostNetwork || spec.HostIPC {
				t.Error("collector uses host namespaces or privileged mode")
			}
			for _, vol := range spec.Volumes {
				if vol.HostPath != nil {
					t.Errorf("collector mounts hostPath %s", vol.HostPath.Path)
				}
			}
			for name, p := range map[string]*corev1.Probe{"startup": c.StartupProbe, "liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
				if p == nil || p.HTTPGet == nil || p.HTTPGet.Port.String() != "metrics" {
					t.Errorf("%s probe = %+v, want HTTP on the metrics port", name, p)
				}
			}
			if !hasArg(c, "--metrics-listen=:9420") || !hasArg(c, "--listen=0.0.0.0:7420") {
				t.Errorf("args %v", c.Args)
			}
			req, lim := c.Resources.Requests, c.Resources.Limits
			if req.Cpu().IsZero() || req.Memory().IsZero() || lim.Memory().IsZero() {
				t.Errorf("resources = %+v, want cpu and memory requests and a memory limit", c.Resources)
			}
			// TLS material: the serving key pair and CA from one Secret.
			tls := volume(t, spec, mount(t, c, "/etc/nodeward/tls").Name).Secret
			if tls == nil || tls.SecretName != "collector-tls" {
				t.Errorf("tls volume = %+v", tls)
			}
			if !hasArg(c, "--tls-cert=/etc/nodeward/tls/tls.crt") || !hasArg(c, "--tls-key=/etc/nodeward/tls/tls.key") {
				t.Errorf("args %v do not serve TLS from the mounted secret", c.Args)
			}
			// Store: SQLite on the claim, or PostgreSQL from a Secret.
			if v.postgres {
				if !hasArg(c, "--store=$(NODEWARD_STORE)") {
					t.Errorf("postgres args %v", c.Args)
				}
				var ref *corev1.SecretKeySelector
				for _, e := range c.Env {
					if e.Name == "NODEWARD_STORE" && e.ValueFrom != nil {
						ref = e.ValueFrom.SecretKeyRef
					}
				}
				if ref == nil || ref.Name != "collector-postgres" || ref.Key != "url" {
					t.Errorf("NODEWARD_STORE from %+v, want secret collector-postgres key url", ref)
				}
				if *d.Spec.Replicas < 2 || d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType {
					t.Errorf("postgres collector: replicas %d strategy %s", *d.Spec.Replicas, d.Spec.Strategy.Type)
				}
			} else {
				if !hasArg(c, "--store=sqlite:/var/lib/nodeward/nodeward.db") {
					t.Errorf("sqlite args %v", c.Args)
				}
				data := volume(t, spec, mount(t, c, "/var/lib/nodeward").Name)
				if data.PersistentVolumeClaim == nil || data.PersistentVolumeClaim.ClaimName != "collector-data" {
					t.Errorf("data volume = %+v", data)
				}
				// One writer on a ReadWriteOnce volume.
				if *d.Spec.Replicas != 1 || d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
					t.Errorf("sqlite collector: replicas %d strategy %s", *d.Spec.Replicas, d.Spec.Strategy.Type)
				}
				pvc := get[*corev1.PersistentVolumeClaim](t, m, "PersistentVolumeClaim/collector-data")
				if !slices.Equal(pvc.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}) {
					t.Errorf("pvc access modes %v", pvc.Spec.AccessModes)
				}
			}
		})
	}
}

// TestClusterPlumbing checks namespace labels, RBAC, NetworkPolicy, PDB,
// Service, monitors and certificates.
func TestClusterPlumbing(t *testing.T) {
	for _, v := range variants() {
		t.Run(v.name, func(t *testing.T) {
			m := index(t, v, decode(t, v))
			if v.withNS {
				ns := get[*corev1.Namespace](t, m, "Namespace/"+v.namespace)
				want := map[string]string{
					"pod-security.kubernetes.io/enforce": "privileged",
					"pod-security.kubernetes.io/audit":   "restricted",
					"pod-security.kubernetes.io/warn":    "restricted",
				}
				for k, val := range want {
					if ns.Labels[k] != val {
						t.Errorf("namespace label %s = %q, want %q", k, ns.Labels[k], val)
					}
				}
			}
			// No RBAC and no API token: the collector checks agents' tokens
			// against the issuer's JWKS, and neither pod calls the API.
			for k := range m {
				for _, kind := range []string{"Role/", "RoleBinding/", "ClusterRole/", "ClusterRoleBinding/"} {
					if strings.HasPrefix(k, kind) {
						t.Errorf("unexpected %s: nothing here calls the Kubernetes API", k)
					}
				}
			}
			for _, name := range []string{"agent", "collector"} {
				sa := get[*corev1.ServiceAccount](t, m, "ServiceAccount/"+name)
				if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
					t.Errorf("service account %s mounts an API token", name)
				}
			}
			if cs := get[*appsv1.Deployment](t, m, "Deployment/collector").Spec.Template.Spec; cs.AutomountServiceAccountToken == nil || *cs.AutomountServiceAccountToken {
				t.Error("the collector pod mounts an API token it never uses")
			}
			// Only agents and readers reach the collector's gRPC port.
			np := get[*networkingv1.NetworkPolicy](t, m, "NetworkPolicy/collector")
			if np.Spec.PodSelector.MatchLabels["app.kubernetes.io/name"] != "nodeward-collector" ||
				!slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) {
				t.Errorf("collector policy selects %v types %v", np.Spec.PodSelector, np.Spec.PolicyTypes)
			}
			var grpcPeers []string
			for _, r := range np.Spec.Ingress {
				for _, p := range r.Ports {
					if p.Port.String() != "grpc" {
						continue
					}
					for _, f := range r.From {
						if f.IPBlock != nil {
							t.Errorf("gRPC open to IP block %v", f.IPBlock)
						}
						if f.PodSelector == nil || len(f.PodSelector.MatchLabels) == 0 {
							t.Errorf("gRPC open to any pod: %+v", f)
							continue
						}
						grpcPeers = append(grpcPeers, fmt.Sprint(f.PodSelector.MatchLabels))
					}
				}
			}
			sort.Strings(grpcPeers)
			wantPeers := []string{"map[app.kubernetes.io/component:agent app.kubernetes.io/name:nodeward-agent]", "map[nodeward.io/reader:true]"}
			if !slices.Equal(grpcPeers, wantPeers) {
				t.Errorf("gRPC peers %v, want %v", grpcPeers, wantPeers)
			}
			// Only Prometheus reaches the agent, on its metrics port alone,
			// as it reaches the collector's.
			anp := get[*networkingv1.NetworkPolicy](t, m, "NetworkPolicy/agent")
			if anp.Spec.PodSelector.MatchLabels["app.kubernetes.io/name"] != "nodeward-agent" ||
				!slices.Equal(anp.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) {
				t.Errorf("agent policy selects %v types %v", anp.Spec.PodSelector, anp.Spec.PolicyTypes)
			}
			var collectorMetrics []networkingv1.NetworkPolicyIngressRule
			for _, r := range np.Spec.Ingress {
				if len(r.Ports) == 1 && r.Ports[0].Port.String() == "metrics" {
					collectorMetrics = append(collectorMetrics, r)
				}
			}
			if len(collectorMetrics) != 1 {
				t.Fatalf("collector policy has %d metrics rules, want 1", len(collectorMetrics))
			}
			if diff := cmp.Diff(collectorMetrics, anp.Spec.Ingress); diff != "" {
				t.Errorf("agent ingress differs from the collector's metrics rule (-collector +agent):\n%s", diff)
			}
			for _, f := range anp.Spec.Ingress[0].From {
				if f.IPBlock != nil || f.PodSelector == nil || f.PodSelector.MatchLabels["app.kubernetes.io/name"] != "prometheus" {
					t.Errorf("agent metrics open to %+v, want Prometheus pods only", f)
				}
			}
			// PDB over the collector's pods.
			pdb := get[*policyv1.PodDisruptionBudget](t, m, "PodDisruptionBudget/collector")
			if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 ||
				pdb.Spec.Selector.MatchLabels["app.kubernetes.io/name"] != "nodeward-collector" {
				t.Errorf("pdb spec %+v", pdb.Spec)
			}
			// Every selector matches its pods.
			d := get[*appsv1.Deployment](t, m, "Deployment/collector")
			svc := get[*corev1.Service](t, m, "Service/collector")
			for k, val := range svc.Spec.Selector {
				if d.Spec.Template.Labels[k] != val {
					t.Errorf("service selector %s=%s does not match the collector pods", k, val)
				}
			}
			if v.monitoring {
				sm := get[*monitoringv1.ServiceMonitor](t, m, "ServiceMonitor/collector")
				if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "metrics" {
					t.Errorf("ServiceMonitor endpoints %+v", sm.Spec.Endpoints)
				}
				for k, val := range sm.Spec.Selector.MatchLabels {
					if svc.Labels[k] != val {
						t.Errorf("ServiceMonitor selector %s=%s does not match the Service", k, val)
					}
				}
				named := false
				for _, p := range svc.Spec.Ports {
					named = named || p.Name == "metrics"
				}
				if !named {
					t.Error("the Service has no port named metrics")
				}
				pm := get[*monitoringv1.PodMonitor](t, m, "PodMonitor/agent")
				if len(pm.Spec.PodMetricsEndpoints) != 1 || pm.Spec.PodMetricsEndpoints[0].Port == nil ||
					*pm.Spec.PodMetricsEndpoints[0].Port != "metrics" {
					t.Errorf("PodMonitor endpoints %+v, want the agent's metrics port", pm.Spec.PodMetricsEndpoints)
				}
				ds := get[*appsv1.DaemonSet](t, m, "DaemonSet/agent")
				if len(pm.Spec.Selector.MatchLabels) == 0 {
					t.Error("the PodMonitor selects every pod")
				}
				for k, val := range pm.Spec.Selector.MatchLabels {
					if ds.Spec.Template.Labels[k] != val {
						t.Errorf("PodMonitor selector %s=%s does not match the agent pods", k, val)
					}
				}
			}
			if v.certManager {
				cert := get[*certmanagerv1.Certificate](t, m, "Certificate/collector-tls")
				if cert.Spec.SecretName != "collector-tls" || cert.Spec.IssuerRef.Name != "nodeward-ca" {
					t.Errorf("collector certificate %+v", cert.Spec)
				}
				want := fmt.Sprintf("collector.%s.svc", v.namespace)
				if !slices.Contains(cert.Spec.DNSNames, want) {
					t.Errorf("certificate names %v lack %s (what agents dial)", cert.Spec.DNSNames, want)
				}
				ca := get[*certmanagerv1.Certificate](t, m, "Certificate/nodeward-ca")
				if !ca.Spec.IsCA {
					t.Error("nodeward-ca is not a CA")
				}
				if iss := get[*certmanagerv1.Issuer](t, m, "Issuer/nodeward-ca"); iss.Spec.CA == nil || iss.Spec.CA.SecretName != "nodeward-ca" {
					t.Errorf("CA issuer %+v", iss.Spec)
				}
			}
		})
	}
}

// helmOnlyLabels are the labels Helm adds for its own bookkeeping.
var helmOnlyLabels = []string{"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/instance"}

// TestHelmMatchesKustomize renders the chart with each set of values and the
// kustomize tree with the matching components, and requires the same objects,
// field for field, but for Helm's bookkeeping labels.
func TestHelmMatchesKustomize(t *testing.T) {
	pairs := []struct {
		kust variant
		comp []string
	}{
		{overlayVariant("base"), nil},
		{overlayVariant("overlays/eks", "cert-manager", "monitoring"), []string{"cert-manager", "monitoring"}},
		{kustomizeVariant("base+postgres", "postgres"), []string{"postgres"}},
		{kustomizeVariant("base+privileged", "privileged"), []string{"privileged"}},
		{kustomizeVariant("base+all", allComponents...), allComponents},
	}
	for _, p := range pairs {
		h := helmVariant(strings.Join(p.comp, "+"), "nodeward", true, p.comp)
		t.Run(p.kust.name, func(t *testing.T) {
			want := normalize(t, decode(t, p.kust))
			got := normalize(t, decode(t, h))
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("helm (%s) differs from %s (-kustomize +helm):\n%s", h.name, p.kust.name, diff)
			}
		})
	}
}

func normalize(t *testing.T, objs []render.Object) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for _, o := range objs {
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o.Obj)
		if err != nil {
			t.Fatal(err)
		}
		if md, ok := u["metadata"].(map[string]any); ok {
			if labels, ok := md["labels"].(map[string]any); ok {
				for _, l := range helmOnlyLabels {
					delete(labels, l)
				}
			}
		}
		out[o.GVK.Kind+"/"+metaName(o.Obj)] = u
	}
	return out
}

// TestRenderTool runs the render command's code path on the chart, the way
// README tells users without a helm binary to do it.
func TestRenderTool(t *testing.T) {
	out, err := render.Helm(deployDir(t)+"/helm/nodeward", render.HelmOptions{Release: "x", Namespace: "elsewhere"})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(out, []byte("--collector=collector.elsewhere.svc:7420")) {
		t.Error("the release namespace does not reach the agent's collector address")
	}
	if _, err := render.Helm(deployDir(t)+"/helm/nodeward", render.HelmOptions{Release: "x", Namespace: "n", Set: []string{"collector.store.type=mysql"}}); err == nil ||
		!strings.Contains(err.Error(), "sqlite or postgres") {
		t.Errorf("an unknown store type rendered: %v", err)
	}
}
