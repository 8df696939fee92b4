// Package blockdev follows a mounted filesystem's block device down to the
// physical devices through sysfs under the host root: partitions to their
// disk, device-mapper targets to their slaves, with what each layer says
// about encryption (dm-crypt uuids, LUKS headers, NVMe serial and model).
package blockdev

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strconv"
	"strings"

	"github.com/nodeward/nodeward/agent/hostfs"
	"golang.org/x/sys/unix"
)

// Kinds of device.
const (
	KindPartition = "partition"
	KindDisk      = "disk"
	KindDM        = "dm"
	KindLoop      = "loop"
	KindMD        = "md"
)

// NVMe models AWS gives its devices.
const (
	ModelEBS           = "Amazon Elastic Block Store"
	ModelInstanceStore = "Amazon EC2 NVMe Instance Storage"
)

// Device is one layer of a block device chain.
type Device struct {
	Name   string
	MajMin string
	// SysPath is the device's sysfs directory, relative to the host root.
	SysPath string
	Kind    string
	// Device-mapper name and uuid (dm/name, dm/uuid).
	DMName, DMUUID string
	// NVMe (or other) controller serial and model of a whole disk.
	Serial, Model string
	// BackingFile of a loop device.
	BackingFile string
	// LUKS is the header found at the start of the device, if any.
	LUKS *LUKSHeader
	// FSCrypt: the device holds an ext4 filesystem with the "encrypt"
	// feature, so fscrypt policies may protect some of its directories (the
	// volume itself is not encrypted by it).
	FSCrypt bool
	// HeaderErr says why the device's first bytes could not be read.
	HeaderErr error
	// Parents are the devices this one is built on: the disk of a
	// partition, the slaves of a dm or md device.
	Parents []*Device
}

// DMCrypt reports whether the device is a dm-crypt mapping. dm-verity
// (CRYPT-VERITY-) protects integrity, not secrecy, and does not count.
func (d *Device) DMCrypt() bool {
	return strings.HasPrefix(d.DMUUID, "CRYPT-") && !strings.HasPrefix(d.DMUUID, "CRYPT-VERITY")
}

// EBSVolumeID turns an EBS NVMe serial ("vol0123...") into a volume id
// ("vol-0123..."); "" for other devices.
func (d *Device) EBSVolumeID() string {
	if d.Model != ModelEBS {
		return ""
	}
	s := strings.TrimSpace(d.Serial)
	if strings.HasPrefix(s, "vol-") {
		return s
	}
	if rest, ok := strings.CutPrefix(s, "vol"); ok && rest != "" {
		return "vol-" + rest
	}
	return ""
}

// InstanceStore reports whether the device is Nitro instance storage,
// which the hardware always encrypts.
func (d *Device) InstanceStore() bool { return d.Model == ModelInstanceStore }

// Walk visits d and every device below it, depth first.
func (d *Device) Walk(fn func(*Device)) {
	fn(d)
	for _, p := range d.Parents {
		p.Walk(fn)
	}
}

// maxDepth bounds a chain: a hostile sysfs tree may loop.
const maxDepth = 16

// Chain builds the chain below the device numbered majmin ("259:1").
func Chain(root *hostfs.Root, majmin string) (*Device, error) {
	return chain(root, majmin, 0)
}

func chain(root *hostfs.Root, majmin string, depth int) (*Device, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("device chain deeper than %d at %s: a loop in sysfs?", maxDepth, majmin)
	}
	if !validMajMin(majmin) {
		return nil, fmt.Errorf("bad device number %q", majmin)
	}
	link := "/sys/dev/block/" + majmin
	target, err := root.Readlink(link)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", link, err)
	}
	sys := path.Join(path.Dir(link), target)
	if path.IsAbs(target) {
		sys = path.Clean(target)
	}
	d := &Device{Name: path.Base(sys), MajMin: majmin, SysPath: sys}
	var errs []error
	if ok, _ := root.Exists(sys + "/partition"); ok {
		d.Kind = KindPartition
		disk := path.Dir(sys)
		mm, err := readAttr(root, disk+"/dev")
		if err != nil {
			errs = append(errs, err)
		} else if p, err := chain(root, mm, depth+1); err != nil {
			errs = append(errs, err)
		} else {
			d.Parents = append(d.Parents, p)
		}
	} else {
		d.Kind = KindDisk
		switch {
		case strings.HasPrefix(d.Name, "dm-"):
			d.Kind = KindDM
		case strings.HasPrefix(d.Name, "loop"):
			d.Kind = KindLoop
		case strings.HasPrefix(d.Name, "md"):
			d.Kind = KindMD
		}
	}
	if d.Kind == KindDM {
		d.DMName, _ = readAttr(root, sys+"/dm/name")
		d.DMUUID, _ = readAttr(root, sys+"/dm/uuid")
	}
	if d.Kind == KindLoop {
		d.BackingFile, _ = readAttr(root, sys+"/loop/backing_file")
	}
	if d.Kind == KindDisk {
		d.Serial, _ = readAttr(root, sys+"/device/serial")
		d.Model, _ = readAttr(root, sys+"/device/model")
	}
	slaves, err := root.ReadDir(sys + "/slaves")
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, fmt.Errorf("%s/slaves: %w", sys, err))
	}
	for i, s := range slaves {
		if i >= maxDepth {
			break
		}
		mm, err := readAttr(root, sys+"/slaves/"+s.Name()+"/dev")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		p, err := chain(root, mm, depth+1)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		d.Parents = append(d.Parents, p)
	}
	d.LUKS, d.FSCrypt, d.HeaderErr = readHeader(root, "/dev/"+d.Name)
	return d, errors.Join(errs...)
}

func validMajMin(s string) bool {
	a, b, ok := strings.Cut(s, ":")
	if !ok {
		return false
	}
	_, e1 := strconv.ParseUint(a, 10, 32)
	_, e2 := strconv.ParseUint(b, 10, 32)
	return e1 == nil && e2 == nil
}

// readAttr reads a small sysfs attribute.
func readAttr(root *hostfs.Root, name string) (string, error) {
	b, err := root.ReadFile(name, 4096)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// HeaderSize is how much of a device is read to look for a LUKS header.
const HeaderSize = 4096

// readHeader opens a device node (or, in a test tree, a regular file
// standing for one) under the root and parses its first bytes.
func readHeader(root *hostfs.Root, name string) (*LUKSHeader, bool, error) {
	f, err := root.OpenFile(name, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY)
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	fd := int(f.Fd())
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, false, &fs.PathError{Op: "stat", Path: name, Err: err}
	}
	if t := st.Mode & unix.S_IFMT; t != unix.S_IFBLK && t != unix.S_IFREG {
		return nil, false, &fs.PathError{Op: "open", Path: name, Err: errors.New("neither a block device nor a regular file")}
	}
	buf := make([]byte, HeaderSize)
	n, err := unix.Pread(fd, buf, 0)
	if err != nil {
		return nil, false, &fs.PathError{Op: "read", Path: name, Err: err}
	}
	h, err := ParseLUKSHeader(bytes.NewReader(buf[:n]))
	if errors.Is(err, ErrNotLUKS) {
		return nil, Ext4Encrypt(buf[:n]), nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", name, err)
	}
	return h, false, nil
}

// Ext4 superblock fields (fs/ext4/ext4.h): the superblock starts at byte
// 1024, its magic is at 0x38 and the incompatible feature set at 0x60.
const (
	ext4SuperOffset    = 1024
	ext4Magic          = 0xEF53
	ext4IncompatCrypt  = 0x10000
	ext4MagicOffset    = 0x38
	ext4IncompatOffset = 0x60
)

// Ext4Encrypt reports whether b, a device's first bytes, hold an
// ext2/3/4 superblock with the "encrypt" (fscrypt) feature.
func Ext4Encrypt(b []byte) bool {
	if len(b) < ext4SuperOffset+ext4IncompatOffset+4 {
		return false
	}
	sb := b[ext4SuperOffset:]
	if binary.LittleEndian.Uint16(sb[ext4MagicOffset:]) != ext4Magic {
		return false
	}
	return binary.LittleEndian.Uint32(sb[ext4IncompatOffset:])&ext4IncompatCrypt != 0
}

// LUKSHeader is what the binary LUKS header says.
type LUKSHeader struct {
	Version uint16
	UUID    string
	// Label (LUKS2 only).
	Label string
	// Cipher as "name-mode" (LUKS1 only; LUKS2 keeps it in its JSON area).
	Cipher string
}

// ErrNotLUKS says the bytes carry no LUKS magic.
var ErrNotLUKS = errors.New("no LUKS header")

// ParseLUKSHeader parses the binary header at the start of a LUKS device
// (LUKS1 and LUKS2 share the magic, the version and the uuid offset).
func ParseLUKSHeader(r io.Reader) (*LUKSHeader, error) {
	var buf [512]byte
	n, err := io.ReadFull(bufio.NewReader(r), buf[:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, err
	}
	b := buf[:n]
	if len(b) < 6 || (!bytes.Equal(b[:6], []byte("LUKS\xba\xbe")) && !bytes.Equal(b[:6], []byte("SKUL\xba\xbe"))) {
		return nil, ErrNotLUKS
	}
	if len(b) < 208 {
		return nil, fmt.Errorf("LUKS header truncated at %d bytes", len(b))
	}
	h := &LUKSHeader{Version: binary.BigEndian.Uint16(b[6:8]), UUID: cstr(b[168:208])}
	switch h.Version {
	case 1:
		h.Cipher = cstr(b[8:40]) + "-" + cstr(b[40:72])
	case 2:
		h.Label = cstr(b[24:72])
	default:
		return nil, fmt.Errorf("LUKS header version %d unknown", h.Version)
	}
	return h, nil
}

// cstr reads a NUL-terminated field, keeping printable ASCII only.
func cstr(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return -1
		}
		return r
	}, string(b))
}
