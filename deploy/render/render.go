// Package render turns the deploy/ sources into Kubernetes objects: the
// kustomize tree through the kustomize library (the same code as `kubectl
// kustomize`), the Helm chart through the Helm library (the same code as
// `helm template`), and either output through the apimachinery strict codec
// into the typed API objects.
package render

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	certmanagerv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/strvals"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// Kustomize builds the kustomization in dir, as `kubectl kustomize dir`
// does, and returns the multi-document YAML.
func Kustomize(dir string) ([]byte, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize %s: %w", dir, err)
	}
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	res, err := k.Run(filesys.MakeFsOnDisk(), abs)
	if err != nil {
		return nil, fmt.Errorf("kustomize %s: %w", dir, err)
	}
	out, err := res.AsYaml()
	if err != nil {
		return nil, fmt.Errorf("kustomize %s: %w", dir, err)
	}
	return out, nil
}

// HelmOptions say how to render a chart: the release, its namespace, and
// values in `helm --set` syntax applied over the chart's values.yaml.
type HelmOptions struct {
	Release     string
	Namespace   string
	Set         []string
	KubeVersion string // e.g. "v1.33.0"; empty: DefaultKubeVersion
}

// DefaultKubeVersion is the Kubernetes version charts are rendered for when
// none is given: Helm's own default without a cluster (v1.20) is older than
// anything EKS still runs.
const DefaultKubeVersion = "v1.33.0"

// Helm renders the chart in dir as `helm template` does, without a cluster.
func Helm(dir string, o HelmOptions) ([]byte, error) {
	chrt, err := loader.Load(dir)
	if err != nil {
		return nil, fmt.Errorf("load chart %s: %w", dir, err)
	}
	vals := map[string]any{}
	for _, s := range o.Set {
		if err := strvals.ParseInto(s, vals); err != nil {
			return nil, fmt.Errorf("--set %q: %w", s, err)
		}
	}
	inst := action.NewInstall(&action.Configuration{})
	inst.DryRun = true
	inst.ClientOnly = true
	inst.Replace = true
	inst.ReleaseName = o.Release
	inst.Namespace = o.Namespace
	kver := o.KubeVersion
	if kver == "" {
		kver = DefaultKubeVersion
	}
	kv, err := chartutil.ParseKubeVersion(kver)
	if err != nil {
		return nil, fmt.Errorf("kube version %q: %w", kver, err)
	}
	inst.KubeVersion = kv
	rel, err := inst.Run(chrt, vals)
	if err != nil {
		return nil, fmt.Errorf("render chart %s: %w", dir, err)
	}
	return []byte(rel.Manifest), nil
}

// Scheme knows the built-in API types plus the two custom resources the
// manifests use (cert-manager and the Prometheus Operator).
func Scheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		clientgoscheme.AddToScheme,
		certmanagerv1.AddToScheme,
		monitoringv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			return nil, fmt.Errorf("build scheme: %w", err)
		}
	}
	return s, nil
}

// Object is one decoded manifest and the YAML it came from.
type Object struct {
	GVK  schema.GroupVersionKind
	Obj  runtime.Object
	YAML []byte
}

// Decode splits multi-document YAML and decodes each document strictly into
// its typed object: an unknown or duplicated field, a field in the wrong case
// or a kind the scheme does not know is an error.
func Decode(r io.Reader, scheme *runtime.Scheme) ([]Object, error) {
	dec := serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
	rd := utilyaml.NewYAMLReader(bufio.NewReader(r))
	var out []Object
	for i := 0; ; i++ {
		doc, err := rd.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		obj, gvk, err := dec.Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		out = append(out, Object{GVK: *gvk, Obj: obj, YAML: doc})
	}
}

// stripComments drops whole-line comments and document separators, so that
// a document holding only comments (a template whose condition is off)
// counts as empty.
func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for line := range strings.SplitSeq(string(doc), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || trimmed == "---" {
			continue
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return b.Bytes()
}
