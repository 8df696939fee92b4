package posture

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"

	"github.com/nodeward/nodeward/agent/posture/blockdev"
	"github.com/nodeward/nodeward/agent/posture/options"
	"github.com/nodeward/nodeward/agent/source"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
)

func init() {
	Register(Check{
		Name:  "encryption",
		Reads: []string{"/proc/1/mountinfo", "/sys/dev/block", "/sys/block/*/dm/uuid", "/sys/block/*/device/{serial,model}", "/dev/* (first 4 KiB)"},
		Run: func(ctx context.Context, env *source.Env, _ *nodewardv1.Snapshot) []*nodewardv1.Finding {
			return runEncryption(ctx, env, encryptionOptionsFrom(postureOptions(env)))
		},
	})
}

// VolumeInfo is what the EC2 API says of an EBS volume.
type VolumeInfo = options.Volume

// VolumeLookup asks the cloud about EBS volumes by id.
type VolumeLookup = options.VolumeLookup

// encryptionOptions configure the check. The EC2 lookup is opt-in: it
// needs the node role to allow ec2:DescribeVolumes.
type encryptionOptions struct {
	// Paths whose devices are always judged, mounted or not on their own.
	Paths []string
	// Lookup, when set, asks EC2 whether EBS volumes are encrypted.
	Lookup VolumeLookup
	// LookupDisabledReason says why Lookup is nil.
	LookupDisabledReason string
}

func defaultEncryptionOptions() encryptionOptions {
	return encryptionOptions{
		Paths:                []string{"/", "/var/lib/kubelet", "/var/lib/containerd"},
		LookupDisabledReason: "the EC2 DescribeVolumes lookup is not enabled (opt-in)",
	}
}

func encryptionOptionsFrom(p options.Posture) encryptionOptions {
	o := defaultEncryptionOptions()
	o.Lookup = p.VolumeLookup
	return o
}

const maxMountInfo = 8 << 20

func readMountInfo(procDir string) ([]blockdev.Mount, string, error) {
	p := filepath.Join(procDir, "1", "mountinfo")
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, p, err
	}
	defer func() { _ = f.Close() }()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil, p, fmt.Errorf("%s: not a regular file", p)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxMountInfo+1))
	if err != nil {
		return nil, p, err
	}
	if len(b) > maxMountInfo {
		return nil, p, fmt.Errorf("%s: larger than %d bytes", p, maxMountInfo)
	}
	m, err := blockdev.ParseMountInfo(strings.NewReader(string(b)))
	return m, p, err
}

// volume is one block device that holds mounted filesystems.
type volume struct {
	majmin      string
	mountPoints []string
	fstype      string
	chain       *blockdev.Device
	chainErr    error
}

func runEncryption(ctx context.Context, env *source.Env, opts encryptionOptions) []*nodewardv1.Finding {
	f := &nodewardv1.Finding{
		CheckId:     "encryption.volumes",
		Title:       "Every block device holding a mounted filesystem is encrypted at rest",
		Severity:    sevHigh,
		Remediation: "Use EBS volumes encrypted with KMS (enable EBS encryption by default for the account and region, and set encrypted: true in the launch template's block device mappings); for other disks, put the filesystem on dm-crypt/LUKS.",
		References: []*nodewardv1.Reference{
			{Framework: eksBP, Title: "Encryption at rest", Url: eksBPEncryptionURL},
			refSTIG("AZLX-23-000100", "Local disk partitions must implement cryptographic mechanisms to prevent unauthorized disclosure or modification of information at rest"),
		},
	}
	mounts, src, err := readMountInfo(env.Proc)
	if err != nil {
		f.Status = statUnknown
		f.Evidence = []*nodewardv1.Evidence{evd(src, "", "cannot list the host's mounts: "+err.Error())}
		return []*nodewardv1.Finding{f}
	}
	vols := map[string]*volume{}
	add := func(m blockdev.Mount, as string) {
		if !m.BlockBacked() {
			return
		}
		v := vols[m.MajMin]
		if v == nil {
			v = &volume{majmin: m.MajMin, fstype: m.FSType}
			vols[m.MajMin] = v
		}
		if !slices.Contains(v.mountPoints, as) {
			v.mountPoints = append(v.mountPoints, as)
		}
	}
	for _, m := range mounts {
		add(m, m.MountPoint)
	}
	for _, p := range opts.Paths {
		if m, ok := blockdev.Containing(mounts, p); ok && m.MountPoint != p {
			if !m.BlockBacked() {
				f.Evidence = append(f.Evidence, evd(src, p+" on "+m.FSType, "not on a block device"))
			}
			add(m, p+" (on "+m.MountPoint+")")
		}
	}
	if len(vols) == 0 {
		f.Status = statNA
		f.Evidence = append(f.Evidence, evd(src, fmt.Sprintf("%d mounts", len(mounts)), "no mount is backed by a block device"))
		return []*nodewardv1.Finding{f}
	}
	keys := make([]string, 0, len(vols))
	for k := range vols {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return vols[keys[i]].mountPoints[0] < vols[keys[j]].mountPoints[0] })

	// Build every chain first, so EBS volumes are looked up in one call.
	var ebsIDs []string
	for _, k := range keys {
		v := vols[k]
		v.chain, v.chainErr = blockdev.Chain(env.Root, v.majmin)
		if v.chain != nil {
			v.chain.Walk(func(d *blockdev.Device) {
				if id := d.EBSVolumeID(); id != "" && !slices.Contains(ebsIDs, id) {
					ebsIDs = append(ebsIDs, id)
				}
			})
		}
	}
	var ebs map[string]VolumeInfo
	var ebsErr error
	if len(ebsIDs) > 0 && opts.Lookup != nil {
		ebs, ebsErr = opts.Lookup(ctx, ebsIDs)
	}

	worst, judged := statPass, false
	rank := map[nodewardv1.FindingStatus]int{statPass: 0, statUnknown: 1, statError: 1, statFail: 2}
	for _, k := range keys {
		v := vols[k]
		st, e := judgeVolume(v, ebs, ebsErr, opts)
		f.Evidence = append(f.Evidence, e...)
		if st == statNA {
			continue
		}
		judged = true
		if rank[st] > rank[worst] {
			worst = st
		}
	}
	if !judged {
		worst = statNA
	}
	if worst == statError {
		worst = statUnknown
	}
	f.Status = worst
	return []*nodewardv1.Finding{f}
}

// judgeVolume decides one device from the top of its chain down.
func judgeVolume(v *volume, ebs map[string]VolumeInfo, ebsErr error, opts encryptionOptions) (nodewardv1.FindingStatus, []*nodewardv1.Evidence) {
	mps := v.mountPoints
	if len(mps) > 4 {
		// A PV mounted for many pods: name a few.
		mps = append(mps[:4:4], fmt.Sprintf("and %d more", len(v.mountPoints)-4))
	}
	where := fmt.Sprintf("%s (%s %s)", strings.Join(mps, ", "), v.majmin, v.fstype)
	if v.chain == nil {
		return statUnknown, []*nodewardv1.Evidence{evd(where, "", "cannot follow the device in sysfs: "+v.chainErr.Error())}
	}
	var layers []string
	var crypt, luks, fscrypt, headerErrs []string
	var ebsVols, instStore, leaves []*blockdev.Device
	v.chain.Walk(func(d *blockdev.Device) {
		layers = append(layers, describeDevice(d))
		if d.DMCrypt() {
			crypt = append(crypt, fmt.Sprintf("%s is dm-crypt (%s)", d.Name, d.DMUUID))
		}
		if d.FSCrypt {
			fscrypt = append(fscrypt, d.Name)
		}
		if d.HeaderErr != nil && !errors.Is(d.HeaderErr, fs.ErrNotExist) {
			headerErrs = append(headerErrs, d.HeaderErr.Error())
		}
		if d.LUKS != nil {
			luks = append(luks, fmt.Sprintf("LUKS%d header uuid %s on /dev/%s", d.LUKS.Version, d.LUKS.UUID, d.Name))
		}
		switch {
		case d.EBSVolumeID() != "":
			ebsVols = append(ebsVols, d)
		case d.InstanceStore():
			instStore = append(instStore, d)
		}
		if len(d.Parents) == 0 {
			leaves = append(leaves, d)
		}
	})
	chainEv := evd(where, strings.Join(layers, " <- "), "device chain from sysfs")
	out := []*nodewardv1.Evidence{chainEv}
	if len(fscrypt) > 0 {
		// fscrypt protects chosen directories, not the volume: noted, not
		// counted.
		out = append(out, evd(where, strings.Join(fscrypt, ","), "ext4 \"encrypt\" feature on: fscrypt may protect some directories; the volume is not encrypted by it"))
	}
	if v.chainErr != nil {
		chainEv.Reason += " (partly: " + v.chainErr.Error() + ")"
	}
	if len(headerErrs) > 0 {
		chainEv.Reason += "; LUKS headers unreadable: " + strings.Join(headerErrs, "; ")
	}
	switch {
	case len(crypt) > 0:
		r := strings.Join(crypt, "; ")
		if len(luks) > 0 {
			r += "; " + strings.Join(luks, "; ")
		}
		return statPass, append(out, evd(where, "dm-crypt", "encrypted in the guest: "+r))
	case len(luks) > 0:
		// A LUKS header below a mounted filesystem without a dm-crypt
		// layer in between cannot be: the filesystem is not on it.
		return statUnknown, append(out, evd(where, "LUKS", strings.Join(luks, "; ")+", but no dm-crypt mapping above it"))
	case allLoopFiles(leaves):
		// A loop device over a file (a snap, an image) is as encrypted as
		// the volume holding that file, which is judged on its own.
		return statNA, append(out, evd(where, leaves[0].BackingFile, "a loop device backed by a file: judged with the volume that holds the file"))
	case len(instStore) > 0 && len(instStore) == len(leaves):
		return statPass, append(out, evd(where, modelLine(instStore), "NVMe instance storage is encrypted by the Nitro hardware with a per-volume key"))
	case len(ebsVols) > 0:
		st := statPass
		for _, d := range ebsVols {
			id := d.EBSVolumeID()
			switch info, ok := ebs[id]; {
			case opts.Lookup == nil:
				out = append(out, evd(where, id, "EBS volume: its encryption is not visible inside the guest, and "+opts.LookupDisabledReason))
				st = worse(st, statUnknown)
			case ebsErr != nil:
				out = append(out, evd("ec2:DescribeVolumes "+id, "", "lookup failed: "+ebsErr.Error()))
				st = worse(st, statUnknown)
			case !ok:
				out = append(out, evd("ec2:DescribeVolumes "+id, "", "the EC2 API did not return this volume"))
				st = worse(st, statUnknown)
			case info.Encrypted:
				out = append(out, evd("ec2:DescribeVolumes "+id, "Encrypted=true KmsKeyId="+info.KMSKeyID, "the EBS volume is encrypted"))
			default:
				out = append(out, evd("ec2:DescribeVolumes "+id, "Encrypted=false", "the EBS volume is NOT encrypted"))
				st = worse(st, statFail)
			}
		}
		return st, out
	}
	var names []string
	for _, l := range leaves {
		names = append(names, l.Name)
	}
	return statUnknown, append(out, evd(where, strings.Join(names, ","), "no dm-crypt or LUKS layer in the guest; whether the platform encrypts this disk cannot be seen from inside"))
}

func allLoopFiles(ds []*blockdev.Device) bool {
	for _, d := range ds {
		if d.Kind != blockdev.KindLoop || d.BackingFile == "" {
			return false
		}
	}
	return len(ds) > 0
}

func worse(a, b nodewardv1.FindingStatus) nodewardv1.FindingStatus {
	rank := map[nodewardv1.FindingStatus]int{statPass: 0, statUnknown: 1, statFail: 2}
	if rank[b] > rank[a] {
		return b
	}
	return a
}

// modelLine names devices with their model, for evidence.
func modelLine(ds []*blockdev.Device) string {
	var parts []string
	for _, d := range ds {
		parts = append(parts, d.Name+" "+d.Model)
	}
	return strings.Join(parts, ", ")
}

func describeDevice(d *blockdev.Device) string {
	var attrs []string
	attrs = append(attrs, d.Kind)
	if d.DMName != "" {
		attrs = append(attrs, "name="+d.DMName)
	}
	if d.DMUUID != "" {
		attrs = append(attrs, "uuid="+truncate(d.DMUUID, 80))
	}
	if d.Model != "" {
		attrs = append(attrs, "model="+truncate(d.Model, 60))
	}
	if d.Serial != "" {
		attrs = append(attrs, "serial="+truncate(d.Serial, 40))
	}
	if d.BackingFile != "" {
		attrs = append(attrs, "backing="+truncate(d.BackingFile, 120))
	}
	if d.LUKS != nil {
		attrs = append(attrs, fmt.Sprintf("luks%d", d.LUKS.Version))
	}
	if d.FSCrypt {
		attrs = append(attrs, "ext4-encrypt")
	}
	return fmt.Sprintf("%s[%s]", d.Name, strings.Join(attrs, " "))
}
