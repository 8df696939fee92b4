package deploy

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nodeward/nodeward/deploy/render"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// TestApplyToAPIServer applies every rendering to a real kube-apiserver:
// first with server-side dry run and strict field validation, then for real,
// and then admits pods built from the agent and collector templates under
// Pod Security admission: the agent at the level its namespace declares, the
// collector in a namespace that enforces "restricted".
func TestApplyToAPIServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver")
	}
	c := startCluster(t)
	c.installCRDs(t)

	// A strictness check of the path itself: a misspelt field is refused.
	bad := []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: default}\ndata: {a: b}\ndatta: {}\n")
	if _, stderr, err := c.run(t, bad, "apply", "--server-side", "--dry-run=server", "--validate=strict", "-f", "-"); err == nil ||
		!strings.Contains(stderr, "datta") {
		t.Fatalf("strict validation did not refuse an unknown field: %v %s", err, stderr)
	}

	for _, v := range variants() {
		t.Run(v.name, func(t *testing.T) {
			manifest := v.render(t)
			objs, err := render.Decode(bytes.NewReader(manifest), mustScheme(t))
			if err != nil {
				t.Fatal(err)
			}
			// A dry run cannot create the namespace the rest goes into, so
			// the Namespace (or, for a chart that leaves it to the operator,
			// the base's) is applied for real first.
			nsDoc := namespaceDoc(t, objs)
			c.mustRun(t, nsDoc, "apply", "--server-side", "--field-manager=nodeward-test", "--validate=strict", "-f", "-")

			args := []string{"apply", "--server-side", "--field-manager=nodeward-test", "--force-conflicts", "--validate=strict", "-f", "-"}
			out := c.mustRun(t, manifest, append([]string{"--dry-run=server"}, args...)...)
			if n := strings.Count(out, "(server dry run)"); n != len(objs) {
				t.Errorf("dry run applied %d objects, rendered %d:\n%s", n, len(objs), out)
			}
			c.mustRun(t, manifest, args...)

			ds := findObj[*appsv1.DaemonSet](t, objs, "DaemonSet", "agent")
			dep := findObj[*appsv1.Deployment](t, objs, "Deployment", "collector")
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()

			// The agent is admitted at its namespace's level.
			c.warnings.take()
			if err := c.dryRunPod(ctx, v.namespace, "agent", ds.Spec.Template); err != nil {
				t.Errorf("agent pod refused in namespace %s: %v", v.namespace, err)
			}
			// The namespace's warn level is restricted: the agent is warned
			// about, by design (host PID, host paths, capabilities).
			if w := strings.Join(c.warnings.take(), "\n"); !strings.Contains(w, `would violate PodSecurity "restricted:latest"`) {
				t.Errorf("no restricted warning for the agent (is the namespace's warn label applied?): %q", w)
			}

			// The collector raises no Pod Security warning in that namespace...
			c.warnings.take()
			depCopy := dep.DeepCopy()
			depCopy.ResourceVersion = ""
			if _, err := c.client.AppsV1().Deployments(v.namespace).Update(ctx, depCopy, metav1.UpdateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict"}); err != nil {
				t.Errorf("collector deployment update (dry run): %v", err)
			}
			if w := c.warnings.take(); len(w) > 0 {
				t.Errorf("collector warned about in namespace %s: %v", v.namespace, w)
			}
			// ...and is admitted where "restricted" is enforced.
			restricted := c.psaNamespace(t, ctx, "psa-restricted", "restricted", "collector")
			if err := c.dryRunPod(ctx, restricted, "collector", dep.Spec.Template); err != nil {
				t.Errorf("collector pod refused under enforce=restricted: %v", err)
			}
			if w := c.warnings.take(); len(w) > 0 {
				t.Errorf("collector pod warnings under restricted: %v", w)
			}
			// Enforcement is live: the agent is refused under "baseline",
			// which is why its namespace declares "privileged".
			baseline := c.psaNamespace(t, ctx, "psa-baseline", "baseline", "agent")
			err = c.dryRunPod(ctx, baseline, "agent", ds.Spec.Template)
			if err == nil || !strings.Contains(err.Error(), "violates PodSecurity") {
				t.Errorf("agent pod under enforce=baseline: err = %v, want a PodSecurity refusal", err)
			}
		})
	}
}

func mustScheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	s, err := render.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func findObj[T any](t *testing.T, objs []render.Object, kind, name string) T {
	t.Helper()
	for _, o := range objs {
		if o.GVK.Kind == kind && metaName(o.Obj) == name {
			if typed, ok := o.Obj.(T); ok {
				return typed
			}
		}
	}
	t.Fatalf("no %s/%s rendered", kind, name)
	var zero T
	return zero
}

// namespaceDoc is the rendered Namespace, or the kustomize base's when the
// rendering leaves the namespace to the operator (the chart's default).
func namespaceDoc(t *testing.T, objs []render.Object) []byte {
	t.Helper()
	for _, o := range objs {
		if o.GVK.Kind == "Namespace" {
			return o.YAML
		}
	}
	base := decode(t, overlayVariant("base"))
	for _, o := range base {
		if o.GVK.Kind == "Namespace" {
			return o.YAML
		}
	}
	t.Fatal("no Namespace in the kustomize base")
	return nil
}

// psaNamespace makes (once) a namespace enforcing level, with service
// account sa in it, and returns its name.
func (c *cluster) psaNamespace(t *testing.T, ctx context.Context, name, level, sa string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
		"pod-security.kubernetes.io/enforce":         level,
		"pod-security.kubernetes.io/enforce-version": "latest",
	}}}
	if _, err := c.client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
	acct := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: name}}
	if _, err := c.client.CoreV1().ServiceAccounts(name).Create(ctx, acct, metav1.CreateOptions{}); err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
	return name
}

// dryRunPod submits a pod made from a workload's template, dry run, strict.
func (c *cluster) dryRunPod(ctx context.Context, ns, name string, tmpl corev1.PodTemplateSpec) error {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-psa-check", Namespace: ns, Labels: tmpl.Labels},
		Spec:       tmpl.Spec,
	}
	pod.Spec.NodeName = "" // the scheduler would set it; there is none
	_, err := c.client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict"})
	return err
}
