package posture

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nodeward/nodeward/agent/hostfs"
	"github.com/nodeward/nodeward/agent/posture/blockdev"
	"github.com/nodeward/nodeward/agent/posture/blockdev/blockdevtest"
	"github.com/nodeward/nodeward/agent/source"
	"github.com/nodeward/nodeward/internal/testutil"
)

// ebsNode is a Nitro node with two EBS volumes: / on the first, the
// kubelet's directory on the second.
func ebsNode(t *testing.T) *source.Env {
	t.Helper()
	dir := t.TempDir()
	root, proc := filepath.Join(dir, "root"), filepath.Join(dir, "proc")
	tr := blockdevtest.New(t, root)
	tr.NVMe("nvme0n1", "259:0", "vol0123456789abcdef0", blockdev.ModelEBS)
	tr.Partition("nvme0n1", "nvme0n1p1", "259:1")
	tr.NVMe("nvme1n1", "259:2", "vol0fedcba9876543210", blockdev.ModelEBS)
	blockdevtest.MountInfo(t, proc, "259:1 / xfs /dev/nvme0n1p1", "259:2 /var/lib/kubelet xfs /dev/nvme1n1")
	r, err := hostfs.Open(root)
	must(t, err)
	t.Cleanup(func() { _ = r.Close() })
	return &source.Env{Root: r, Proc: proc}
}

func TestEncryptionEBSLookup(t *testing.T) {
	ctx := context.Background()
	env := ebsNode(t)

	// Not opted in: unknown, and why.
	f := runEncryption(ctx, env, defaultEncryptionOptions())[0]
	if f.GetStatus() != statUnknown || !strings.Contains(evidenceText(f), "not enabled (opt-in)") {
		t.Errorf("no lookup: %v\n%s", f.GetStatus(), evidenceText(f))
	}

	// Opted in, the API failing: unknown with the error.
	o := defaultEncryptionOptions()
	o.Lookup = func(context.Context, []string) (map[string]VolumeInfo, error) { return nil, errors.New("AccessDenied") }
	f = runEncryption(ctx, env, o)[0]
	if f.GetStatus() != statUnknown || !strings.Contains(evidenceText(f), "AccessDenied") {
		t.Errorf("failing lookup: %v\n%s", f.GetStatus(), evidenceText(f))
	}

	// Opted in: one lookup for both volumes; the second is not encrypted.
	// (agent/posture/ec2 tests the real lookup against AWS's IMDS
	// simulator and a fake EC2.)
	var calls [][]string
	answer := map[string]VolumeInfo{
		"vol-0123456789abcdef0": {Encrypted: true, KMSKeyID: "arn:aws:kms:us-east-1:0123456789:key/1a2b"},
		"vol-0fedcba9876543210": {Encrypted: false},
	}
	o.Lookup = func(_ context.Context, ids []string) (map[string]VolumeInfo, error) {
		calls = append(calls, ids)
		return answer, nil
	}
	f = runEncryption(ctx, env, o)[0]
	ev := evidenceText(f)
	if f.GetStatus() != statFail || !strings.Contains(ev, "vol-0123456789abcdef0 | Encrypted=true KmsKeyId=arn:aws:kms:") || !strings.Contains(ev, "vol-0fedcba9876543210 | Encrypted=false") {
		t.Errorf("lookup: %v\n%s", f.GetStatus(), ev)
	}
	if len(calls) != 1 || len(calls[0]) != 2 {
		t.Errorf("want one lookup for both volumes, got %v", calls)
	}
	// Both encrypted: pass.
	answer["vol-0fedcba9876543210"] = VolumeInfo{Encrypted: true}
	if f = runEncryption(ctx, env, o)[0]; f.GetStatus() != statPass {
		t.Errorf("both encrypted: %v\n%s", f.GetStatus(), evidenceText(f))
	}
	// The API leaving a volume out: unknown for it.
	delete(answer, "vol-0fedcba9876543210")
	if f = runEncryption(ctx, env, o)[0]; f.GetStatus() != statUnknown || !strings.Contains(evidenceText(f), "did not return this volume") {
		t.Errorf("missing volume: %v\n%s", f.GetStatus(), evidenceText(f))
	}
}

func TestEncryptionNoMounts(t *testing.T) {
	env := rootWith(t, nil)
	f := runEncryption(context.Background(), env, defaultEncryptionOptions())[0]
	if f.GetStatus() != statUnknown || !strings.Contains(evidenceText(f), "cannot list the host's mounts") {
		t.Errorf("%v\n%s", f.GetStatus(), evidenceText(f))
	}
}

// A real loop device over a file is judged with the volume holding the
// file, and a device mounted in many places is named with a few of them.
func TestEncryptionLoopAndManyMounts(t *testing.T) {
	testutil.RequirePrivileged(t)
	img := filepath.Join(t.TempDir(), "snap.img")
	must(t, os.WriteFile(img, make([]byte, 1<<20), 0o644))
	loop, mm := testutil.LoopDevice(t, img)
	proc := t.TempDir()
	lines := []string{mm + " /snap/core/1 squashfs " + loop}
	for i := 0; i < 6; i++ {
		lines = append(lines, fmt.Sprintf("%s /var/lib/kubelet/pods/p%d/volumes/x squashfs %s", mm, i, loop))
	}
	blockdevtest.MountInfo(t, proc, lines...)
	live, err := hostfs.Open("/")
	must(t, err)
	defer func() { _ = live.Close() }()
	f := runEncryption(context.Background(), &source.Env{Root: live, Proc: proc}, defaultEncryptionOptions())[0]
	ev := evidenceText(f)
	if f.GetStatus() != statNA || !strings.Contains(ev, img) || !strings.Contains(ev, "and 3 more") {
		t.Errorf("%v\n%s", f.GetStatus(), ev)
	}
}
