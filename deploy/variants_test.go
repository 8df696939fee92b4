package deploy

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/nodeward/nodeward/deploy/render"
)

// deployDir is this package's directory (deploy/ in the repository).
func deployDir(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the deploy directory")
	}
	return filepath.Dir(file)
}

// variant is one way of installing nodeward: a kustomize tree or the Helm
// chart with some values, and which options it turns on.
type variant struct {
	name        string
	namespace   string
	privileged  bool // agent runs privileged
	postgres    bool // collector on PostgreSQL, no PVC
	certManager bool // Issuer and Certificate objects
	monitoring  bool // the collector's ServiceMonitor and the agents' PodMonitor
	withNS      bool // the Namespace object is part of the output
	render      func(t testing.TB) []byte
}

// components are the kustomize components and the Helm values that match them.
var components = map[string]string{
	"privileged":   "agent.privileged=true",
	"postgres":     "collector.store.type=postgres",
	"cert-manager": "tls.certManager.enabled=true",
	"monitoring":   "monitoring.enabled=true",
}

func (v *variant) enable(c string) {
	switch c {
	case "privileged":
		v.privileged = true
	case "postgres":
		v.postgres = true
	case "cert-manager":
		v.certManager = true
	case "monitoring":
		v.monitoring = true
	default:
		panic("unknown component " + c)
	}
}

// kustomizeVariant renders base plus components through an overlay written
// to a temporary directory (the committed overlays/eks is a variant too).
func kustomizeVariant(name string, comps ...string) variant {
	v := variant{name: "kustomize/" + name, namespace: "nodeward", withNS: true}
	for _, c := range comps {
		v.enable(c)
	}
	v.render = func(t testing.TB) []byte {
		t.Helper()
		dir := t.TempDir()
		// kustomize takes only relative paths to other kustomizations.
		base, err := filepath.Rel(dir, filepath.Join(deployDir(t), "kustomize"))
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		fmt.Fprintf(&b, "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: nodeward\nresources:\n  - %s\n", filepath.Join(base, "base"))
		if len(comps) > 0 {
			b.WriteString("components:\n")
			for _, c := range comps {
				fmt.Fprintf(&b, "  - %s\n", filepath.Join(base, "components", c))
			}
		}
		if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := render.Kustomize(dir)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	return v
}

func overlayVariant(dir string, comps ...string) variant {
	v := variant{name: "kustomize/" + dir, namespace: "nodeward", withNS: true}
	for _, c := range comps {
		v.enable(c)
	}
	v.render = func(t testing.TB) []byte {
		t.Helper()
		out, err := render.Kustomize(filepath.Join(deployDir(t), "kustomize", dir))
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	return v
}

// helmVariant renders the chart into namespace ns with the values of comps,
// plus extra --set values.
func helmVariant(name, ns string, withNS bool, comps []string, extra ...string) variant {
	v := variant{name: "helm/" + name, namespace: ns, withNS: withNS}
	set := append([]string(nil), extra...)
	if withNS {
		set = append(set, "namespace.create=true")
	}
	for _, c := range comps {
		v.enable(c)
		set = append(set, components[c])
	}
	v.render = func(t testing.TB) []byte {
		t.Helper()
		out, err := render.Helm(filepath.Join(deployDir(t), "helm", "nodeward"), render.HelmOptions{
			Release: "nodeward", Namespace: ns, Set: set,
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	return v
}

var allComponents = []string{"privileged", "postgres", "cert-manager", "monitoring"}

// variants is every installation the tests check.
func variants() []variant {
	return []variant{
		overlayVariant("base"),
		overlayVariant("overlays/eks", "cert-manager", "monitoring"),
		kustomizeVariant("base+postgres", "postgres"),
		kustomizeVariant("base+privileged", "privileged"),
		kustomizeVariant("base+all", allComponents...),
		helmVariant("defaults", "nodeward", false, nil),
		helmVariant("all", "nodeward", true, allComponents),
	}
}

// decode renders v and decodes it strictly.
func decode(t testing.TB, v variant) []render.Object {
	t.Helper()
	scheme, err := render.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	objs, err := render.Decode(bytes.NewReader(v.render(t)), scheme)
	if err != nil {
		t.Fatalf("%s: %v", v.name, err)
	}
	if len(objs) == 0 {
		t.Fatalf("%s: rendered no objects", v.name)
	}
	return objs
}
