// Package blockdevtest writes sysfs trees, laid out as the kernel lays them
// out, for tests of device chains: NVMe disks with their controller's serial
// and model, virtio disks, partitions, device-mapper devices with slaves.
package blockdevtest

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Tree is a host root being filled with a sysfs tree.
type Tree struct {
	t    testing.TB
	Root string
	// sys maps a device name to its sysfs directory (relative to Root).
	sys map[string]string
}

// New starts a tree in root (created if needed).
func New(t testing.TB, root string) *Tree {
	return &Tree{t: t, Root: root, sys: map[string]string{}}
}

func (tr *Tree) write(rel, content string) {
	tr.t.Helper()
	p := filepath.Join(tr.Root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		tr.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		tr.t.Fatal(err)
	}
}

func (tr *Tree) link(rel, target string) {
	tr.t.Helper()
	p := filepath.Join(tr.Root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		tr.t.Fatal(err)
	}
	if err := os.Symlink(target, p); err != nil {
		tr.t.Fatal(err)
	}
}

// relLink is the relative link from the directory of rel to target (both
// relative to Root), as sysfs writes them.
func relLink(rel, target string) string {
	r, _ := filepath.Rel(filepath.Dir("/"+rel), "/"+target)
	return r
}

func (tr *Tree) device(name, majmin, sysdir string) {
	tr.sys[name] = sysdir
	tr.write(sysdir+"/dev", majmin+"\n")
	tr.link("sys/dev/block/"+majmin, relLink("sys/dev/block/"+majmin, sysdir))
	tr.link("sys/block/"+name, relLink("sys/block/"+name, sysdir))
}

// NVMe adds an NVMe namespace ("nvme0n1") of a controller with a serial and
// model, e.g. "vol0123456789abcdef0" and "Amazon Elastic Block Store".
func (tr *Tree) NVMe(name, majmin, serial, model string) {
	ctrl, _, _ := strings.Cut(name, "n1")
	base := "sys/devices/pci0000:00/0000:00:1f.0/nvme/" + ctrl
	tr.write(base+"/serial", serial+"\n")
	tr.write(base+"/model", model+"\n")
	tr.device(name, majmin, base+"/"+name)
	tr.link(base+"/"+name+"/device", "../../"+ctrl)
}

// Virtio adds a virtio disk ("vda"), which has no serial.
func (tr *Tree) Virtio(name, majmin string) {
	tr.device(name, majmin, "sys/devices/pci0000:00/0000:00:05.0/virtio2/block/"+name)
}

// Partition adds partition part of disk.
func (tr *Tree) Partition(disk, part, majmin string) {
	dir := tr.sys[disk] + "/" + part
	tr.device(part, majmin, dir)
	tr.write(dir+"/partition", "1\n")
}

// DM adds a device-mapper device with its dm name, uuid and slaves.
func (tr *Tree) DM(name, majmin, dmName, uuid string, slaves ...string) {
	dir := "sys/devices/virtual/block/" + name
	tr.device(name, majmin, dir)
	tr.write(dir+"/dm/name", dmName+"\n")
	tr.write(dir+"/dm/uuid", uuid+"\n")
	if err := os.MkdirAll(filepath.Join(tr.Root, dir, "slaves"), 0o755); err != nil {
		tr.t.Fatal(err)
	}
	for _, s := range slaves {
		tr.link(dir+"/slaves/"+s, relLink(dir+"/slaves/"+s, tr.sys[s]))
	}
}

// MountInfo writes proc/1/mountinfo under procDir from "majmin mountpoint
// fstype source" lines.
func MountInfo(t testing.TB, procDir string, mounts ...string) {
	t.Helper()
	var b strings.Builder
	for i, m := range mounts {
		f := strings.Fields(m)
		b.WriteString(strings.Join([]string{strconv.Itoa(20 + i), "1", f[0], "/", f[1], "rw,relatime", "shared:1", "-", f[2], f[3], "rw"}, " ") + "\n")
	}
	p := filepath.Join(procDir, "1", "mountinfo")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}
