package blockdev_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nodeward/nodeward/agent/hostfs"
	"github.com/nodeward/nodeward/agent/posture/blockdev"
	"github.com/nodeward/nodeward/agent/posture/blockdev/blockdevtest"
	"github.com/nodeward/nodeward/internal/testutil"
)

// LUKSImage formats a small file with the real cryptsetup (pbkdf2 with few
// iterations, so it takes a fraction of a second) and returns its path.
func luksImage(t *testing.T, typ, uuid string) string {
	t.Helper()
	if _, err := exec.LookPath("cryptsetup"); err != nil {
		testutil.Unavailable(t, "cryptsetup not installed (apt-get install cryptsetup)")
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	key := filepath.Join(dir, "key")
	if err := os.WriteFile(key, []byte("test-passphrase"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 0); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(32 << 20); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	args := []string{"luksFormat", "--batch-mode", "--type", typ, "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--uuid", uuid, "--key-file", key}
	if typ == "luks2" {
		args = append(args, "--label", "nodeward-test")
	}
	if out, err := exec.Command("cryptsetup", append(args, img)...).CombinedOutput(); err != nil {
		t.Fatalf("cryptsetup luksFormat: %v\n%s", err, out)
	}
	return img
}

// blkid is the oracle: the low-level probe of util-linux.
func blkid(t *testing.T, dev string) map[string]string {
	t.Helper()
	out, err := exec.Command("blkid", "-p", "-o", "export", dev).Output()
	if err != nil {
		t.Fatalf("blkid -p %s: %v", dev, err)
	}
	m := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			m[k] = v
		}
	}
	return m
}

func TestParseLUKSHeaderFromCryptsetup(t *testing.T) {
	for _, c := range []struct{ typ, uuid, version string }{
		{"luks2", "6d1b5e3c-0a4f-4c37-9a56-2f1d9b0c8e11", "2"},
		{"luks1", "0b7e6c1d-52a3-4e8f-b1c9-7d3f2a6e9c44", "1"},
	} {
		img := luksImage(t, c.typ, c.uuid)
		f, err := os.Open(img)
		if err != nil {
			t.Fatal(err)
		}
		h, err := blockdev.ParseLUKSHeader(f)
		_ = f.Close()
		if err != nil {
			t.Fatalf("%s: %v", c.typ, err)
		}
		want := blkid(t, img)
		if want["TYPE"] != "crypto_LUKS" || h.UUID != want["UUID"] || want["VERSION"] != c.version || h.UUID != c.uuid {
			t.Errorf("%s: parsed %+v, blkid %v", c.typ, h, want)
		}
		if c.typ == "luks2" && h.Label != "nodeward-test" {
			t.Errorf("luks2 label %q", h.Label)
		}
		if c.typ == "luks1" && !strings.HasPrefix(h.Cipher, "aes-") {
			t.Errorf("luks1 cipher %q", h.Cipher)
		}
	}
	if _, err := blockdev.ParseLUKSHeader(bytes.NewReader(make([]byte, 4096))); !errors.Is(err, blockdev.ErrNotLUKS) {
		t.Errorf("zeros: %v", err)
	}
	if _, err := blockdev.ParseLUKSHeader(bytes.NewReader([]byte("LUKS\xba\xbe\x00\x02"))); err == nil {
		t.Error("truncated header parsed")
	}
}

func FuzzParseLUKSHeader(f *testing.F) {
	hdr := make([]byte, 512)
	copy(hdr, "LUKS\xba\xbe\x00\x02")
	copy(hdr[168:], "6d1b5e3c-0a4f-4c37-9a56-2f1d9b0c8e11")
	f.Add(hdr)
	f.Add([]byte("SKUL\xba\xbe\x00\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := blockdev.ParseLUKSHeader(bytes.NewReader(b))
		if err == nil && (h.Version < 1 || h.Version > 2 || len(h.UUID) > 40) {
			t.Fatalf("bad header accepted: %+v", h)
		}
	})
}

// A LUKS image on a real loop device, read through the live root: the
// chain ends at the loop device with its backing file and header.
func TestChainLiveLoopLUKS(t *testing.T) {
	testutil.RequirePrivileged(t)
	uuid := "3f0c2a51-7b9e-4d16-8e2a-5c4b1d7f9a30"
	img := luksImage(t, "luks2", uuid)
	loop, mm := testutil.LoopDevice(t, img)
	root, err := hostfs.Open("/")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = root.Close() }()
	d, err := blockdev.Chain(root, mm)
	if err != nil {
		t.Fatal(err)
	}
	if d.Kind != blockdev.KindLoop || d.Name != filepath.Base(loop) || d.BackingFile != img {
		t.Errorf("chain %+v", d)
	}
	want := blkid(t, loop)
	if d.LUKS == nil || d.LUKS.UUID != want["UUID"] || d.HeaderErr != nil {
		t.Errorf("LUKS on %s: %+v (%v), blkid %v", loop, d.LUKS, d.HeaderErr, want)
	}
}

// The device under this machine's own / has the dependencies lsblk sees.
func TestChainLiveRoot(t *testing.T) {
	if _, err := exec.LookPath("lsblk"); err != nil {
		testutil.Unavailable(t, "lsblk not installed")
	}
	b, err := os.ReadFile("/proc/1/mountinfo")
	if err != nil {
		testutil.Unavailable(t, "no /proc/1/mountinfo")
	}
	mounts, err := blockdev.ParseMountInfo(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	m, ok := blockdev.Containing(mounts, "/")
	if !ok || !m.BlockBacked() {
		testutil.Unavailable(t, "/ is not on a block device here")
	}
	root, _ := hostfs.Open("/")
	defer func() { _ = root.Close() }()
	d, err := blockdev.Chain(root, m.MajMin)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	d.Walk(func(x *blockdev.Device) { got = append(got, x.Name) })
	out, err := exec.Command("lsblk", "-s", "-n", "-r", "-o", "KNAME", "/dev/"+d.Name).Output()
	if err != nil {
		t.Fatalf("lsblk: %v", err)
	}
	want := strings.Fields(string(out))
	slices.Sort(got)
	slices.Sort(want)
	want = slices.Compact(want)
	got = slices.Compact(got)
	if !slices.Equal(got, want) {
		t.Errorf("chain %v, lsblk -s %v", got, want)
	}
}

func TestChainTree(t *testing.T) {
	dir := t.TempDir()
	tr := blockdevtest.New(t, dir)
	tr.NVMe("nvme0n1", "259:0", "vol0123456789abcdef0", blockdev.ModelEBS)
	tr.Partition("nvme0n1", "nvme0n1p1", "259:1")
	tr.NVMe("nvme1n1", "259:2", "AWS1234567890ABCDEF", blockdev.ModelInstanceStore)
	tr.DM("dm-0", "253:0", "data", "CRYPT-LUKS2-6d1b5e3c0a4f4c379a562f1d9b0c8e11-data", "nvme1n1")
	tr.DM("dm-1", "253:1", "root", "CRYPT-VERITY-0123-root", "nvme0n1p1")
	root, err := hostfs.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = root.Close() }()

	p, err := blockdev.Chain(root, "259:1")
	if err != nil {
		t.Fatal(err)
	}
	if p.Kind != blockdev.KindPartition || len(p.Parents) != 1 || p.Parents[0].EBSVolumeID() != "vol-0123456789abcdef0" {
		t.Errorf("partition chain %+v", p)
	}
	c, err := blockdev.Chain(root, "253:0")
	if err != nil {
		t.Fatal(err)
	}
	if !c.DMCrypt() || c.DMName != "data" || len(c.Parents) != 1 || !c.Parents[0].InstanceStore() {
		t.Errorf("dm-crypt chain %+v", c)
	}
	v, err := blockdev.Chain(root, "253:1")
	if err != nil {
		t.Fatal(err)
	}
	if v.DMCrypt() {
		t.Error("dm-verity counted as encryption")
	}
}

// Hostile trees: a slave loop, links pointing outside the root, bad
// numbers. Each gives an error, never a panic or an escape.
func TestChainHostile(t *testing.T) {
	dir := t.TempDir()
	tr := blockdevtest.New(t, dir)
	tr.Virtio("vda", "254:0")
	tr.DM("dm-0", "253:0", "a", "LVM-x", "vda")
	// dm-0 lists itself as its own slave.
	if err := os.Symlink("../../dm-0", filepath.Join(dir, "sys/devices/virtual/block/dm-0/slaves/dm-0")); err != nil {
		t.Fatal(err)
	}
	// An absolute link that would leave the root if followed outside it.
	if err := os.Symlink("/../../../../etc", filepath.Join(dir, "sys/dev/block/1:1")); err != nil {
		t.Fatal(err)
	}
	// A device node that is a FIFO must not hang the header read.
	if err := os.MkdirAll(filepath.Join(dir, "dev"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := exec.Command("mkfifo", filepath.Join(dir, "dev/vda")).Run(); err != nil {
		t.Fatal(err)
	}
	root, _ := hostfs.Open(dir)
	defer func() { _ = root.Close() }()
	d, err := blockdev.Chain(root, "253:0")
	if err == nil || !strings.Contains(err.Error(), "deeper than") {
		t.Errorf("slave loop: %v", err)
	}
	if d == nil {
		t.Fatal("no partial chain")
	}
	d.Walk(func(x *blockdev.Device) {
		if x.Name == "vda" && x.HeaderErr == nil {
			t.Error("FIFO read as a device")
		}
	})
	if d, err := blockdev.Chain(root, "1:1"); err == nil && d.SysPath != "/etc" {
		t.Errorf("absolute link: %+v", d)
	}
	for _, bad := range []string{"", "x:y", "../../etc", "1:1:1"} {
		if _, err := blockdev.Chain(root, bad); err == nil {
			t.Errorf("Chain(%q) accepted", bad)
		}
	}
}

func TestParseMountInfo(t *testing.T) {
	in := "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n" +
		"36 27 259:1 /var/lib /var/lib/kubelet rw master:1 shared:2 - xfs /dev/nvme0n1p1 rw\n" +
		"40 27 0:45 / /run/with\\040space rw - tmpfs tmpfs rw\n"
	m, err := blockdev.ParseMountInfo(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 3 || m[1].MajMin != "259:1" || m[1].FSType != "xfs" || m[1].Source != "/dev/nvme0n1p1" || m[2].MountPoint != "/run/with space" || m[2].BlockBacked() {
		t.Errorf("%+v", m)
	}
	if c, _ := blockdev.Containing(m, "/var/lib/kubelet/pods"); c.MountPoint != "/var/lib/kubelet" {
		t.Errorf("Containing: %+v", c)
	}
	if c, _ := blockdev.Containing(m, "/var/lib/containerd"); c.MountPoint != "/" {
		t.Errorf("Containing: %+v", c)
	}
	for _, bad := range []string{"1 2 3\n", "1 2 x:y / / rw - ext4 /dev/x rw\n", "1 2 8:1 / / rw shared:1\n"} {
		if _, err := blockdev.ParseMountInfo(strings.NewReader(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func FuzzParseMountInfo(f *testing.F) {
	f.Add("27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n")
	f.Add("36 27 259:1 /a /b\\040c rw master:1 - xfs /dev/x rw\n")
	f.Fuzz(func(t *testing.T, s string) {
		ms, err := blockdev.ParseMountInfo(strings.NewReader(s))
		if err != nil {
			return
		}
		for _, m := range ms {
			if m.MajMin == "" || m.FSType == "" {
				t.Fatalf("incomplete mount accepted: %+v", m)
			}
		}
	})
}

// The "encrypt" feature is read from superblocks the real mkfs.ext4 wrote,
// with dumpe2fs as the oracle.
func TestExt4EncryptFromMkfs(t *testing.T) {
	for _, tool := range []string{"mkfs.ext4", "dumpe2fs"} {
		if _, err := exec.LookPath(tool); err != nil {
			testutil.Unavailable(t, tool+" not installed (apt-get install e2fsprogs)")
		}
	}
	for _, opts := range [][]string{{"-O", "encrypt"}, {}} {
		img := filepath.Join(t.TempDir(), "fs.img")
		f, err := os.Create(img)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(16 << 20); err != nil {
			t.Fatal(err)
		}
		_ = f.Close()
		args := append(append([]string{"-q", "-F"}, opts...), img)
		if out, err := exec.Command("mkfs.ext4", args...).CombinedOutput(); err != nil {
			t.Fatalf("mkfs.ext4 %v: %v\n%s", args, err, out)
		}
		out, err := exec.Command("dumpe2fs", "-h", img).Output()
		if err != nil {
			t.Fatalf("dumpe2fs: %v", err)
		}
		want := false
		for _, l := range strings.Split(string(out), "\n") {
			if rest, ok := strings.CutPrefix(l, "Filesystem features:"); ok {
				want = slices.Contains(strings.Fields(rest), "encrypt")
			}
		}
		b, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		if got := blockdev.Ext4Encrypt(b[:blockdev.HeaderSize]); got != want {
			t.Errorf("mkfs.ext4 %v: Ext4Encrypt %v, dumpe2fs says encrypt=%v", opts, got, want)
		}
	}
	if blockdev.Ext4Encrypt(make([]byte, 100)) || blockdev.Ext4Encrypt(make([]byte, 4096)) {
		t.Error("encrypt found in zeros")
	}
}
