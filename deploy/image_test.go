package deploy

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nodeward/nodeward/internal/testutil"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/protobuf/encoding/protojson"
)

// podman runs podman against a private storage directory, with the runtime
// settings this kind of machine needs (runc, cgroupfs, rlimits below the
// hard limits).
type podman struct {
	t    *testing.T
	root string
	conf string
}

func newPodman(t *testing.T, dir string) *podman {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "containers.conf")
	writeFile(t, conf, []byte(`[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
`))
	return &podman{t: t, root: dir, conf: conf}
}

func (p *podman) cmd(ctx context.Context, args ...string) *exec.Cmd {
	all := append([]string{"--root", filepath.Join(p.root, "storage"), "--runroot", filepath.Join(p.root, "runroot"), "--storage-driver", "vfs"}, args...)
	cmd := exec.CommandContext(ctx, "podman", all...)
	cmd.Env = append(os.Environ(), "CONTAINERS_CONF="+p.conf)
	return cmd
}

func (p *podman) run(args ...string) (string, error) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, stderr bytes.Buffer
	cmd := p.cmd(ctx, args...)
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return out.String(), errors.Join(err, errors.New(stderr.String()))
	}
	return out.String(), nil
}

func (p *podman) must(args ...string) string {
	p.t.Helper()
	out, err := p.run(args...)
	if err != nil {
		p.t.Fatalf("podman %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// exportedFiles lists the files of image's filesystem, from a container
// created (not started) from it.
func (p *podman) exportedFiles(image string) []string {
	p.t.Helper()
	id := strings.TrimSpace(p.must("create", image))
	defer p.must("rm", id)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := p.cmd(ctx, "export", id)
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		p.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	var files []string
	tr := tar.NewReader(pipe)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			p.t.Fatalf("export %s: %v", image, err)
		}
		if h.Typeflag != tar.TypeDir {
			files = append(files, strings.TrimPrefix(h.Name, "./"))
		}
	}
	if err := cmd.Wait(); err != nil {
		p.t.Fatalf("export %s: %v", image, err)
	}
	slices.Sort(files)
	return files
}

// TestImages builds both images with deploy/image.sh (what `make image`
// runs), saves them as OCI archives, loads the archives into an empty
// storage and runs them: the agent's `report` over this machine's root must
// agree with the machine, and neither image may carry anything but its
// binary, CA roots and user database.
func TestImages(t *testing.T) {
	if testing.Short() {
		t.Skip("builds images")
	}
	testutil.RequirePrivileged(t)
	for _, tool := range []string{"podman", "runc"} {
		if _, err := exec.LookPath(tool); err != nil {
			testutil.Unavailable(t, tool+" not installed (apt-get install podman buildah runc)")
		}
	}
	dir := t.TempDir()
	const version = "v0.0.0-imagetest"
	saved := filepath.Join(dir, "saved")
	script := filepath.Join(deployDir(t), "image.sh")
	cmd := exec.Command("bash", script, "--version", version, "--save", saved)
	cmd.Env = append(os.Environ(), "NODEWARD_IMAGE_STORE="+filepath.Join(dir, "build"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("image.sh: %v\n%s", err, stderr.String())
	}
	built := strings.Fields(string(out))
	want := []string{"localhost/nodeward-agent:" + version, "localhost/nodeward-collector:" + version}
	if !slices.Equal(built, want) {
		t.Fatalf("image.sh built %v, want %v", built, want)
	}

	// Run from the saved archives, in a storage that has never seen them.
	p := newPodman(t, filepath.Join(dir, "run"))
	for _, name := range []string{"nodeward-agent", "nodeward-collector"} {
		if out := p.must("load", "-i", filepath.Join(saved, name+".tar")); !strings.Contains(out, "localhost/"+name+":"+version) {
			t.Fatalf("podman load %s: %s", name, out)
		}
	}
	agent, collector := want[0], want[1]

	t.Run("agent report", func(t *testing.T) {
		// As in the DaemonSet: host PID, the host root read-only at /host.
		out := p.must("run", "--rm", "--pid=host", "--network=none", "--read-only", "-v", "/:/host:ro",
			agent, "report", "--root=/host", "--output=json")
		var snap nodewardv1.Snapshot
		if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal([]byte(out), &snap); err != nil {
			t.Fatalf("report output is not a snapshot: %v\n%.500s", err, out)
		}
		if len(snap.GetSources()) == 0 {
			t.Fatal("report ran no source")
		}
		for _, s := range snap.GetSources() {
			if !s.GetOk() {
				t.Errorf("source %s failed in the container: %s", s.GetName(), s.GetError())
			}
		}
		// The machine itself is the oracle.
		node := snap.GetNode()
		if got, want := node.GetOs().GetPrettyName(), osReleaseField(t, "PRETTY_NAME"); got != want {
			t.Errorf("os pretty name %q, host says %q", got, want)
		}
		if got, want := node.GetKernelRelease(), readTrim(t, "/proc/sys/kernel/osrelease"); got != want {
			t.Errorf("kernel %q, host says %q", got, want)
		}
		if got, want := node.GetBootId(), readTrim(t, "/proc/sys/kernel/random/boot_id"); got != want {
			t.Errorf("boot id %q, host says %q", got, want)
		}
		if node.GetAgentVersion() != version {
			t.Errorf("agent version %q, built as %q", node.GetAgentVersion(), version)
		}
	})

	t.Run("agent has no shell or package manager", func(t *testing.T) {
		files := p.exportedFiles(agent)
		wantFiles := []string{"etc/group", "etc/passwd", "etc/ssl/certs/ca-certificates.crt", "nodeward-agent"}
		if !slices.Equal(files, wantFiles) {
			t.Errorf("agent image files %v, want exactly %v", files, wantFiles)
		}
		if _, err := p.run("run", "--rm", "--network=none", "--entrypoint=/bin/sh", agent, "-c", "true"); err == nil {
			t.Error("a shell ran in the agent image")
		}
	})

	t.Run("collector non-root", func(t *testing.T) {
		if user := strings.TrimSpace(p.must("image", "inspect", "--format", "{{.Config.User}}", collector)); user != "65532:65532" {
			t.Errorf("collector image user %q, want 65532:65532", user)
		}
		files := p.exportedFiles(collector)
		wantFiles := []string{"etc/group", "etc/passwd", "etc/ssl/certs/ca-certificates.crt", "nodeward"}
		if !slices.Equal(files, wantFiles) {
			t.Errorf("collector image files %v, want exactly %v", files, wantFiles)
		}
		// Its own user, a read-only root: only the data directory is its.
		out := p.must("run", "--rm", "--network=none", "--read-only", collector, "--version")
		if !strings.Contains(out, version) {
			t.Errorf("collector --version: %q", out)
		}
	})
}

func readTrim(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// osReleaseField reads one field of the host's os-release, unquoted.
func osReleaseField(t *testing.T, key string) string {
	t.Helper()
	for _, p := range []string{"/etc/os-release", "/usr/lib/os-release"} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, key+"="); ok {
				return strings.Trim(v, `"'`)
			}
		}
	}
	t.Fatalf("no %s in the host's os-release", key)
	return ""
}
