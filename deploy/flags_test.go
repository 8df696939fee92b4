package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/nodeward/nodeward/internal/testutil"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// cmdline is one command the manifests or README make a binary run.
type cmdline struct {
	where string
	bin   string   // path in the image, or "nodeward" for README lines
	argv  []string // after the binary
}

// workloadCmdlines lists the container args and exec probes of objs.
func workloadCmdlines(name string, objs []struct {
	kind string
	spec corev1.PodSpec
}) []cmdline {
	var out []cmdline
	for _, o := range objs {
		for _, c := range o.spec.Containers {
			bin := "/nodeward"
			if len(c.Command) > 0 {
				bin = c.Command[0]
			} else if c.Name == "agent" {
				bin = "/nodeward-agent" // the image's entrypoint
			}
			out = append(out, cmdline{where: name + " " + o.kind + " args", bin: bin, argv: c.Args})
			for _, p := range []*corev1.Probe{c.StartupProbe, c.LivenessProbe, c.ReadinessProbe} {
				if p != nil && p.Exec != nil && len(p.Exec.Command) > 0 {
					out = append(out, cmdline{where: name + " " + o.kind + " probe", bin: p.Exec.Command[0], argv: p.Exec.Command[1:]})
				}
			}
		}
	}
	return out
}

// TestManifestFlagsExist holds the manifests to the binaries: every flag a
// container, a probe or README's kubectl exec lines pass must be one the
// built command accepts, so a renamed flag fails here and not in a
// crash-looping DaemonSet.
func TestManifestFlagsExist(t *testing.T) {
	if testing.Short() {
		t.Skip("builds both binaries")
	}
	agent := testutil.BuildBinary(t, "./agent", "nodeward-agent")
	collector := testutil.BuildBinary(t, "./collector", "nodeward")
	bins := map[string]string{"/nodeward-agent": agent, "/nodeward": collector, "nodeward": collector}

	var lines []cmdline
	for _, v := range variants() {
		var pods []struct {
			kind string
			spec corev1.PodSpec
		}
		for _, o := range decode(t, v) {
			switch w := o.Obj.(type) {
			case *appsv1.DaemonSet:
				pods = append(pods, struct {
					kind string
					spec corev1.PodSpec
				}{"DaemonSet", w.Spec.Template.Spec})
			case *appsv1.Deployment:
				pods = append(pods, struct {
					kind string
					spec corev1.PodSpec
				}{"Deployment", w.Spec.Template.Spec})
			}
		}
		lines = append(lines, workloadCmdlines(v.name, pods)...)
	}
	readme, err := os.ReadFile(filepath.Join(deployDir(t), "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`exec (?:-it )?deploy/collector -- nodeward ([^\n]+)`).FindAllStringSubmatch(string(readme), -1) {
		lines = append(lines, cmdline{where: "README: nodeward " + m[1], bin: "nodeward", argv: strings.Fields(m[1])})
	}
	if len(lines) < 2*len(variants())+3 {
		t.Fatalf("found only %d command lines to check", len(lines))
	}

	helpCache := map[string]map[string]bool{}
	flags := func(bin string, sub []string) map[string]bool {
		key := bin + " " + strings.Join(sub, " ")
		if f, ok := helpCache[key]; ok {
			return f
		}
		out, err := exec.Command(bin, append(sub, "--help")...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s --help: %v\n%s", key, err, out)
		}
		f := map[string]bool{}
		for _, m := range regexp.MustCompile(`--([a-z0-9-]+)`).FindAllStringSubmatch(string(out), -1) {
			f[m[1]] = true
		}
		helpCache[key] = f
		return f
	}
	for _, l := range lines {
		bin, ok := bins[l.bin]
		if !ok {
			t.Errorf("%s: runs %s, which the images do not hold", l.where, l.bin)
			continue
		}
		// The subcommand is the first word that is neither a flag nor a
		// flag's value (every flag here takes a value unless it has "=").
		var sub []string
		for i := 0; i < len(l.argv); i++ {
			a := l.argv[i]
			if strings.HasPrefix(a, "-") {
				if !strings.Contains(a, "=") {
					i++
				}
				continue
			}
			sub = []string{a}
			break
		}
		if sub == nil {
			t.Errorf("%s: no subcommand in %v", l.where, l.argv)
			continue
		}
		known := flags(bin, sub)
		for _, a := range l.argv {
			if !strings.HasPrefix(a, "--") {
				continue
			}
			name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
			if !known[name] {
				t.Errorf("%s: %s %s has no flag --%s", l.where, filepath.Base(l.bin), sub[0], name)
			}
		}
	}
}
