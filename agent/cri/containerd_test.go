package cri

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nodeward/nodeward/internal/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The image the test builds: the sleeper binary alone, from scratch. It is
// the sandbox (pause) image too, so nothing comes from a registry.
const testImage = "localhost/nodeward-cri-sleeper:test"

const shimDir = "/run/containerd"

// containerd is a private containerd with its CRI plugin, started by the
// test: its own config, root, state and socket under a temporary host root.
type containerd struct {
	dir    string // everything the test creates lives here
	host   string // the host root the socket is discovered under
	socket string
	config string
	cmd    *exec.Cmd
	done   chan error
	rt     runtimeapi.RuntimeServiceClient
	conn   *grpc.ClientConn
	// cgroups are the pods' cgroup parents, removed once the pods are gone.
	cgroups []string
}

// startContainerd starts containerd, imports the test image into it and
// returns once its CRI service answers. Everything is undone at cleanup.
func startContainerd(t *testing.T) *containerd {
	t.Helper()
	testutil.RequirePrivileged(t)
	for _, bin := range []string{"containerd", "containerd-shim-runc-v2", "ctr", "runc", "buildah"} {
		if _, err := exec.LookPath(bin); err != nil {
			testutil.Unavailable(t, bin+" is not installed (apt-get install containerd runc buildah)")
		}
	}
	// A short directory: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "nwcri")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	c := &containerd{dir: dir, host: filepath.Join(dir, "host")}
	c.socket = filepath.Join(c.host, "run/containerd/containerd.sock")
	for _, d := range []string{filepath.Dir(c.socket), filepath.Join(c.host, "var"), filepath.Join(dir, "cni/conf"), filepath.Join(dir, "cni/bin"), filepath.Join(dir, "logs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// As on real hosts, /var/run is a link to /run.
	if err := os.Symlink("../run", filepath.Join(c.host, "var/run")); err != nil {
		t.Fatal(err)
	}
	archive := buildImage(t, dir)

	cfg := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.overlayfs", "io.containerd.internal.v1.opt", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = %[3]q
[ttrpc]
  address = "%[3]s.ttrpc"
[debug]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[4]q
  enable_selinux = false
  # Without CAP_SYS_RESOURCE (test machines, CI) the sandbox's -998 is
  # refused: keep oom_score_adj at or above containerd's own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = %[7]q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[5]q
    conf_dir = %[6]q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.socket, testImage, filepath.Join(dir, "cni/bin"), filepath.Join(dir, "cni/conf"), filepath.Join(dir, "runc"))
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	// containerd 1.6 puts its shims' sockets under /run/containerd/s
	// whatever the config says; remove that directory after, when the test
	// made it.
	if _, err := os.Stat(shimDir); errors.Is(err, os.ErrNotExist) {
		t.Cleanup(func() {
			for _, d := range []string{filepath.Join(shimDir, "s"), shimDir} {
				_ = os.Remove(d) // only when empty: never another runtime's
			}
		})
	}
	c.config = cfgPath
	c.conn, err = grpc.NewClient("unix://"+c.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	c.rt = runtimeapi.NewRuntimeServiceClient(c.conn)
	t.Cleanup(func() { c.stop(t) })
	c.launch(t)
	out, err := exec.Command("ctr", "--address", c.socket, "--namespace", "k8s.io", "images", "import", "--snapshotter", "native", archive).CombinedOutput()
	if err != nil {
		t.Fatalf("ctr images import: %v\n%s", err, out)
	}
	return c
}

// launch starts containerd and returns once its CRI service answers.
func (c *containerd) launch(t *testing.T) {
	t.Helper()
	logf, err := os.OpenFile(filepath.Join(c.dir, "containerd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("containerd", "--config", c.config)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		t.Fatalf("start containerd: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait(); _ = logf.Close() }()
	c.cmd, c.done = cmd, done
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := c.rt.Version(ctx, &runtimeapi.VersionRequest{})
		cancel()
		if err == nil {
			return
		}
		select {
		case werr := <-c.done:
			c.done <- werr
			testutil.Unavailable(t, fmt.Sprintf("containerd exited: %v\n%s", werr, c.log()))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd's CRI service did not answer: %v\n%s", err, c.log())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// halt stops containerd alone; the pods' shims and processes run on, as
// they do when a node's runtime restarts.
func (c *containerd) halt(t *testing.T) {
	t.Helper()
	if c.cmd == nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case err = <-c.done:
	case <-time.After(20 * time.Second):
		_ = c.cmd.Process.Kill()
		err = <-c.done
	}
	if err != nil {
		t.Logf("containerd stopped: %v", err)
	}
	c.cmd = nil
}

func (c *containerd) log() string {
	b, _ := os.ReadFile(filepath.Join(c.dir, "containerd.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// stop removes every pod the test left, then stops containerd and undoes
// the mounts it made under the test's directory.
func (c *containerd) stop(t *testing.T) {
	if c.rt != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if sbs, err := c.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{}); err == nil {
			for _, sb := range sbs.GetItems() {
				if _, err := c.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.GetId()}); err != nil {
					t.Errorf("cleanup: stop pod sandbox: %v", err)
				}
				if _, err := c.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.GetId()}); err != nil {
					t.Errorf("cleanup: remove pod sandbox: %v", err)
				}
			}
		}
		cancel()
		_ = c.conn.Close()
	}
	c.halt(t)
	unmountUnder(t, c.dir)
	for _, cg := range c.cgroups {
		removeCgroups(t, cg)
	}
}

// unmountUnder detaches any mount left below dir (a sandbox's /dev/shm when
// a removal failed), deepest first.
func unmountUnder(t *testing.T, dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var mounts []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			mounts = append(mounts, f[4])
		}
	}
	for i := len(mounts) - 1; i >= 0; i-- {
		if err := syscall.Unmount(mounts[i], syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
			t.Errorf("cleanup: unmount %s: %v", mounts[i], err)
		}
	}
}

// buildImage builds the static sleeper and packs it into an OCI archive with
// buildah, in a private storage under dir.
func buildImage(t *testing.T, dir string) string {
	t.Helper()
	ctx := filepath.Join(dir, "image")
	if err := os.MkdirAll(ctx, 0o755); err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", filepath.Join(ctx, "sleeper"), "./testdata/sleeper")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build sleeper: %v\n%s", err, out)
	}
	files := map[string]string{
		"Containerfile":   "FROM scratch\nCOPY sleeper /sleeper\nENTRYPOINT [\"/sleeper\"]\n",
		"containers.conf": "[containers]\nnetns = \"none\"\n[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
		"storage.conf": fmt.Sprintf("[storage]\ndriver = \"vfs\"\nrunroot = %q\ngraphroot = %q\n",
			filepath.Join(dir, "buildah/run"), filepath.Join(dir, "buildah/storage")),
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(ctx, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	env := append(os.Environ(),
		"CONTAINERS_CONF="+filepath.Join(ctx, "containers.conf"),
		"CONTAINERS_STORAGE_CONF="+filepath.Join(ctx, "storage.conf"))
	archive := filepath.Join(dir, "sleeper-oci.tar")
	for _, args := range [][]string{
		{"bud", "--isolation", "chroot", "-f", filepath.Join(ctx, "Containerfile"), "-t", testImage, ctx},
		{"push", testImage, "oci-archive:" + archive + ":" + testImage},
	} {
		cmd := exec.Command("buildah", args...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("buildah %s: %v\n%s", args[0], err, out)
		}
	}
	return archive
}

// pod is a pod sandbox and one container the test runs through the CRI API.
type pod struct {
	uid, name, namespace string
	sandboxID            string
	containerID          string
	container            string
}

// runPod creates a pod sandbox in the node's network namespace (no CNI),
// with a kubelet-like cgroup parent, and starts one container in it.
func (c *containerd) runPod(t *testing.T, name, namespace, container string) *pod {
	t.Helper()
	p := &pod{uid: newUID(t), name: name, namespace: namespace, container: container}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sbCfg := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Uid: p.uid, Namespace: namespace},
		LogDirectory: filepath.Join(c.dir, "logs", p.uid),
		Labels:       map[string]string{labelPodName: name, labelPodNamespace: namespace, labelPodUID: p.uid},
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: "/kubepods/besteffort/pod" + p.uid,
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE},
			},
		},
	}
	c.cgroups = append(c.cgroups, "kubepods/besteffort/pod"+p.uid)
	sb, err := c.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sbCfg, RuntimeHandler: "runc"})
	if err != nil {
		testutil.Unavailable(t, fmt.Sprintf("containerd cannot run a pod sandbox here: %v\n%s", err, c.log()))
	}
	p.sandboxID = sb.GetPodSandboxId()
	ct, err := c.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId: p.sandboxID,
		Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: container},
			Image:    &runtimeapi.ImageSpec{Image: testImage},
			// A listener in the node's network namespace, for the ports source.
			Command: []string{"/sleeper", "listen", "127.0.0.1:0"},
			LogPath: container + ".log",
			Labels: map[string]string{
				labelPodName: name, labelPodNamespace: namespace, labelPodUID: p.uid,
				"io.kubernetes.container.name": container,
			},
		},
		SandboxConfig: sbCfg,
	})
	if err != nil {
		t.Fatalf("CreateContainer: %v\n%s", err, c.log())
	}
	p.containerID = ct.GetContainerId()
	if _, err := c.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: p.containerID}); err != nil {
		t.Fatalf("StartContainer: %v\n%s", err, c.log())
	}
	return p
}

// removeCgroups removes the pod's cgroup in every hierarchy once the pod is
// gone, then its kubepods parents where they are empty (a real node's are
// not, and stay).
func removeCgroups(t *testing.T, rel string) {
	hs, err := os.ReadDir("/sys/fs/cgroup")
	if err != nil {
		return
	}
	for _, h := range hs {
		base := filepath.Join("/sys/fs/cgroup", h.Name())
		for p := rel; p != "." && p != "/"; p = filepath.Dir(p) {
			d := filepath.Join(base, p)
			if err := os.Remove(d); err != nil && !errors.Is(err, os.ErrNotExist) {
				if p == rel {
					t.Errorf("cleanup: remove cgroup %s: %v", d, err)
				}
				break
			}
		}
	}
}

func newUID(t *testing.T) string {
	b, err := os.ReadFile("/proc/sys/kernel/random/uuid")
	if err != nil {
		t.Fatal(err)
	}
	return string(bytes.TrimSpace(b))
}
