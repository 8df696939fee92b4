package posture

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/nodeward/nodeward/agent/posture/blockdev"
	"github.com/nodeward/nodeward/agent/posture/blockdev/blockdevtest"
	"github.com/nodeward/nodeward/internal/testutil"
	"golang.org/x/sys/unix"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/golden")

// goldenSources are the sources the golden runs use: the OS facts and the
// checks. The package and port inventories are left out so that the
// golden files follow this package alone; the checks that need those
// facts are tested with facts built in their own tests.
const goldenSources = "os,posture"

// goldenChecks are the check id prefixes these golden files cover; checks
// of the same package written elsewhere (the sshd configuration) keep
// their own tests.
var goldenChecks = []string{"selinux.", "apparmor.", "lsm.", "encryption.", "patch.", "attack-surface.", "ports.", "audit.", "ssm.", "ssh.service-enabled"}

func goldenCheck(id string) bool {
	for _, p := range goldenChecks {
		if strings.HasPrefix(id, p) {
			return true
		}
	}
	return false
}

// goldenCase is one host: a root and a /proc for the agent to read.
type goldenCase struct {
	name string
	// build fills root and proc (both exist and are empty).
	build func(t *testing.T, root, proc string)
}

func writeFiles(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for p, c := range files {
		full := filepath.Join(root, p)
		must(t, os.MkdirAll(filepath.Dir(full), 0o755))
		must(t, os.WriteFile(full, []byte(c), 0o644))
	}
}

const (
	osAL2023 = "NAME=\"Amazon Linux\"\nVERSION=\"2023\"\nID=\"amzn\"\nVERSION_ID=\"2023\"\nPRETTY_NAME=\"Amazon Linux 2023.5.20240624\"\n"
	osUbuntu = "NAME=\"Ubuntu\"\nVERSION_ID=\"22.04\"\nID=ubuntu\nID_LIKE=debian\nPRETTY_NAME=\"Ubuntu 22.04.4 LTS\"\nVERSION_CODENAME=jammy\n"
	// luksUUID is fixed so the golden output is stable.
	luksUUID = "6d1b5e3c-0a4f-4c37-9a56-2f1d9b0c8e11"
)

var ownCases = []goldenCase{
	{"selinux-enforcing", func(t *testing.T, root, _ string) {
		writeFiles(t, root, map[string]string{
			"etc/os-release":            osAL2023,
			"sys/fs/selinux/enforce":    "1",
			"sys/fs/selinux/policyvers": "33\n",
			"etc/selinux/config":        "# This file controls the state of SELinux on the system.\nSELINUX=enforcing\nSELINUXTYPE=targeted\n",
		})
	}},
	{"selinux-permissive", func(t *testing.T, root, _ string) {
		writeFiles(t, root, map[string]string{
			"etc/os-release":         osAL2023,
			"sys/fs/selinux/enforce": "0",
			"etc/selinux/config":     "SELINUX=permissive\nSELINUXTYPE=targeted\n",
		})
	}},
	{"selinux-mismatch", func(t *testing.T, root, _ string) {
		// setenforce 0 on a node configured enforcing: permissive until
		// the next boot.
		writeFiles(t, root, map[string]string{
			"etc/os-release":         osAL2023,
			"sys/fs/selinux/enforce": "0",
			"etc/selinux/config":     "SELINUX=enforcing\nSELINUXTYPE=targeted\n",
		})
	}},
	{"apparmor-profiles", func(t *testing.T, root, _ string) {
		writeFiles(t, root, map[string]string{
			"etc/os-release":                         osUbuntu,
			"sys/module/apparmor/parameters/enabled": "Y\n",
			"sys/kernel/security/apparmor/profiles": "cri-containerd.apparmor.d (enforce)\n/usr/sbin/tcpdump (enforce)\n" +
				"/usr/lib/snapd/snap-confine//mount-namespace-capture-helper (enforce)\nnvidia_modprobe (complain)\n" +
				"unprivileged_userns (unconfined)\nsandbox (kill)\n",
		})
	}},
	{"apparmor-complain-only", func(t *testing.T, root, _ string) {
		writeFiles(t, root, map[string]string{
			"etc/os-release":                         osUbuntu,
			"sys/module/apparmor/parameters/enabled": "Y\n",
			"sys/kernel/security/apparmor/profiles":  "/usr/bin/man (complain)\n",
		})
	}},
	{"luks-dm-crypt", func(t *testing.T, root, proc string) {
		// A LUKS2 volume made by the real cryptsetup on a loop device; the
		// host's sysfs shows it opened as dm-0 over vdb (device-mapper
		// cannot run here), and /dev/vdb is a device node for the loop.
		writeFiles(t, root, map[string]string{"etc/os-release": osUbuntu})
		tr := blockdevtest.New(t, root)
		tr.Virtio("vda", "254:0")
		tr.Virtio("vdb", "254:16")
		tr.DM("dm-0", "253:0", "luks-data", "CRYPT-LUKS2-"+strings.ReplaceAll(luksUUID, "-", "")+"-luks-data", "vdb")
		luksDeviceNode(t, filepath.Join(root, "dev/vdb"))
		ext4EncryptHead(t, filepath.Join(root, "dev/vda"))
		blockdevtest.MountInfo(t, proc, "254:0 / ext4 /dev/vda", "253:0 /var/lib/containerd xfs /dev/mapper/luks-data")
	}},
	{"ebs-nvme-instance-store", func(t *testing.T, root, proc string) {
		// A Nitro node: the root on an EBS volume's partition, containerd
		// on instance storage, kubelet on a dm-crypt volume over a second
		// EBS volume.
		writeFiles(t, root, map[string]string{"etc/os-release": osAL2023})
		tr := blockdevtest.New(t, root)
		tr.NVMe("nvme0n1", "259:0", "vol0123456789abcdef0", blockdev.ModelEBS)
		tr.Partition("nvme0n1", "nvme0n1p1", "259:1")
		tr.NVMe("nvme1n1", "259:2", "AWS2C1F1A5E5B8C7D9F0", blockdev.ModelInstanceStore)
		tr.NVMe("nvme2n1", "259:3", "vol0fedcba9876543210", blockdev.ModelEBS)
		tr.DM("dm-0", "253:0", "kubelet", "CRYPT-PLAIN-kubelet", "nvme2n1")
		blockdevtest.MountInfo(t, proc, "259:1 / xfs /dev/nvme0n1p1", "259:2 /var/lib/containerd xfs /dev/nvme1n1",
			"253:0 /var/lib/kubelet ext4 /dev/mapper/kubelet", "0:25 /run tmpfs tmpfs")
	}},
	{"reboot-required", func(t *testing.T, root, _ string) {
		writeFiles(t, root, map[string]string{
			"etc/os-release":               osUbuntu,
			"var/run/reboot-required":      "*** System restart required ***\n",
			"var/run/reboot-required.pkgs": "linux-image-6.8.0-1021-aws\nlibc6\n",
		})
	}},
	{"eks-release", func(t *testing.T, root, _ string) {
		writeFiles(t, root, map[string]string{
			"etc/os-release": osAL2023,
			"etc/eks/release": "BASE_AMI_ID=\"ami-0c0b5b7f3c9a8e6d1\"\nBUILD_TIME=\"Tue Jun  4 21:57:37 UTC 2024\"\n" +
				"BUILD_KERNEL=\"6.1.92-99.174.amzn2023.x86_64\"\nARCH=\"x86_64\"\nAMI_NAME=\"amazon-eks-node-al2023-x86_64-standard-1.30-v20240605\"\n",
			"usr/bin/amazon-ssm-agent":                                            "",
			"usr/lib/systemd/system/amazon-ssm-agent.service":                     "[Service]\n",
			"etc/systemd/system/multi-user.target.wants/amazon-ssm-agent.service": "",
		})
	}},
	{"hostile", func(t *testing.T, root, proc string) {
		writeFiles(t, root, map[string]string{
			"etc/os-release":                         osUbuntu,
			"sys/module/apparmor/parameters/enabled": "Y\n",
			"sys/kernel/security/apparmor/profiles":  "\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x03\x00>\x00",
			"sys/fs/selinux/enforce":                 "\xff\xfe garbage",
			"etc/audit/audit.rules":                  strings.Repeat("\x00\x01", 100),
		})
		// A 1 GiB (sparse) SELinux config: read bounded, reported, not loaded.
		must(t, os.MkdirAll(filepath.Join(root, "etc/selinux"), 0o755))
		f, err := os.Create(filepath.Join(root, "etc/selinux/config"))
		if err == nil {
			err = f.Truncate(1 << 30)
			_ = f.Close()
		}
		must(t, err)
		must(t, os.MkdirAll(filepath.Join(root, "etc/eks"), 0o755))
		// Links that point outside the root resolve inside it (and miss).
		must(t, os.Symlink("/../../../../../etc/passwd", filepath.Join(root, "etc/eks/release")))
		must(t, os.MkdirAll(filepath.Join(root, "etc/systemd/system"), 0o755))
		must(t, os.Symlink("../../../../../../../../etc", filepath.Join(root, "etc/systemd/system/multi-user.target.wants")))
		must(t, os.MkdirAll(filepath.Join(root, "var/run"), 0o755))
		must(t, unix.Mkfifo(filepath.Join(root, "var/run/reboot-required"), 0o644))
		must(t, os.MkdirAll(filepath.Join(root, "etc/systemd/journald.conf.d"), 0o755))
		must(t, unix.Mkfifo(filepath.Join(root, "etc/systemd/journald.conf.d/x.conf"), 0o644))
		must(t, os.MkdirAll(filepath.Join(proc, "1"), 0o755))
		must(t, os.WriteFile(filepath.Join(proc, "1/mountinfo"), []byte("garbage\x00\n1 2 3\n"), 0o644))
		must(t, os.MkdirAll(filepath.Join(proc, "42"), 0o755))
		must(t, unix.Mkfifo(filepath.Join(proc, "42/comm"), 0o644))
	}},
}

// ext4EncryptHead writes to path the first 4 KiB of an ext4 filesystem
// made by the real mkfs.ext4 with the "encrypt" (fscrypt) feature.
func ext4EncryptHead(t *testing.T, path string) {
	t.Helper()
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		testutil.Unavailable(t, "mkfs.ext4 not installed (apt-get install e2fsprogs)")
	}
	img := filepath.Join(t.TempDir(), "fs.img")
	f, err := os.Create(img)
	must(t, err)
	must(t, f.Truncate(16<<20))
	_ = f.Close()
	// Fixed uuid and hash seed keep the superblock the same run to run.
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-O", "encrypt", "-U", "3b0f5d4e-8a61-4c2f-9e7d-1a2b3c4d5e6f",
		"-E", "hash_seed=3b0f5d4e-8a61-4c2f-9e7d-1a2b3c4d5e6f", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	b, err := os.ReadFile(img)
	must(t, err)
	must(t, os.MkdirAll(filepath.Dir(path), 0o755))
	must(t, os.WriteFile(path, b[:blockdev.HeaderSize], 0o644))
}

// luksDeviceNode formats a loop file with cryptsetup, attaches it to a loop
// device and makes node a block device node for it.
func luksDeviceNode(t *testing.T, node string) {
	t.Helper()
	testutil.RequirePrivileged(t)
	for _, tool := range []string{"cryptsetup", "losetup"} {
		if _, err := exec.LookPath(tool); err != nil {
			testutil.Unavailable(t, tool+" not installed (apt-get install cryptsetup util-linux)")
		}
	}
	dir := t.TempDir()
	img, key := filepath.Join(dir, "disk.img"), filepath.Join(dir, "key")
	must(t, os.WriteFile(key, []byte("test-passphrase"), 0o600))
	f, err := os.Create(img)
	must(t, err)
	must(t, f.Truncate(32<<20))
	_ = f.Close()
	if out, err := exec.Command("cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2",
		"--pbkdf-force-iterations", "1000", "--uuid", luksUUID, "--label", "data", "--key-file", key, img).CombinedOutput(); err != nil {
		t.Fatalf("cryptsetup luksFormat: %v\n%s", err, out)
	}
	loop, _ := testutil.LoopDevice(t, img)
	var st unix.Stat_t
	must(t, unix.Stat(loop, &st))
	must(t, os.MkdirAll(filepath.Dir(node), 0o755))
	must(t, unix.Mknod(node, unix.S_IFBLK|0o600, int(st.Rdev)))
}

func TestGolden(t *testing.T) {
	bin := testutil.BuildBinary(t, "./agent", "nodeward-agent")
	var uts unix.Utsname
	must(t, unix.Uname(&uts))
	kernel := unix.ByteSliceToString(uts.Release[:])

	cases := append([]goldenCase{}, ownCases...)
	if hosts, err := os.ReadDir(filepath.Join(testutil.FixturesDir(t), "hosts")); err == nil {
		for _, h := range hosts {
			name := h.Name()
			cases = append(cases, goldenCase{"fixture-" + name, func(t *testing.T, root, _ string) {
				src := testutil.CopyFixtureRoot(t, name)
				must(t, os.Remove(root))
				must(t, os.Rename(src, root))
			}})
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			root, proc := filepath.Join(dir, "root"), filepath.Join(dir, "proc")
			must(t, os.Mkdir(root, 0o755))
			must(t, os.Mkdir(proc, 0o755))
			c.build(t, root, proc)
			cmd := exec.Command(bin, "report", "--root", root, "--proc", proc, "--only", goldenSources, "--node-name", "golden", "-o", "json")
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("nodeward-agent report: %v\n%s", err, stderr.Bytes())
			}
			got := normalizeReport(t, out, map[string]string{root: "<root>", proc: "<proc>", kernel: "<running-kernel>"})
			path := filepath.Join("testdata", "golden", c.name+".json")
			if *update {
				must(t, os.MkdirAll(filepath.Dir(path), 0o755))
				must(t, os.WriteFile(path, got, 0o644))
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("findings differ from %s (run with -update if the change is intended):\n%s", path, lineDiff(string(want), string(got)))
			}
		})
	}
}

var daysRE = regexp.MustCompile(`\b\d+ days ago\b`)

// normalizeReport keeps the findings of a report, sorted, with what varies
// from run to run or machine to machine replaced: ages in days, the
// temporary directories, the running kernel. It fails the test on a
// panicked check or a failed posture source.
func normalizeReport(t *testing.T, out []byte, replace map[string]string) []byte {
	t.Helper()
	var snap struct {
		Findings []map[string]any `json:"findings"`
		Sources  []struct {
			Name  string `json:"name"`
			Ok    bool   `json:"ok"`
			Error string `json:"error"`
		} `json:"sources"`
	}
	must(t, json.Unmarshal(out, &snap))
	for _, s := range snap.Sources {
		if s.Name == "posture" && !s.Ok {
			t.Errorf("posture source failed: %s", s.Error)
		}
	}
	kept := snap.Findings[:0]
	for _, f := range snap.Findings {
		delete(f, "changed_at")
		delete(f, "node_name")
		id, _ := f["check_id"].(string)
		if strings.HasSuffix(id, ".internal") {
			t.Errorf("a check panicked: %v", f["evidence"])
		}
		if goldenCheck(id) {
			kept = append(kept, f)
		}
	}
	snap.Findings = kept
	sort.SliceStable(snap.Findings, func(i, j int) bool {
		return snap.Findings[i]["check_id"].(string) < snap.Findings[j]["check_id"].(string)
	})
	b, err := json.MarshalIndent(snap.Findings, "", "  ")
	must(t, err)
	s := string(b)
	// Longest first, so a path is replaced before a prefix of it.
	keys := make([]string, 0, len(replace))
	for k := range replace {
		if k != "" {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool { return len(keys[i]) > len(keys[j]) })
	for _, k := range keys {
		s = strings.ReplaceAll(s, k, replace[k])
	}
	s = daysRE.ReplaceAllString(s, "N days ago")
	return []byte(s + "\n")
}

// lineDiff shows the lines that differ, numbered, enough to see what moved.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	n := max(len(w), len(g))
	shown := 0
	for i := 0; i < n && shown < 40; i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			b.WriteString(strconv.Itoa(i+1) + " -" + wl + "\n" + strconv.Itoa(i+1) + " +" + gl + "\n")
			shown++
		}
	}
	return b.String()
}
