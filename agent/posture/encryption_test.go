package posture

import (
	"context"
	"errors"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nodeward/nodeward/agent/hostfs"
	"github.com/nodeward/nodeward/agent/posture/blockdev"
	"github.com/nodeward/nodeward/agent/posture/blockdev/blockdevtest"
	"github.com/nodeward/nodeward/agent/posture/ec2"
	"github.com/nodeward/nodeward/agent/posture/ec2/ec2test"
	"github.com/nodeward/nodeward/agent/source"
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

	// Opted in: IMDSv2 from AWS's simulator, EC2 from a FAKE with a
	// documented response: the second volume is not encrypted.
	fake := &ec2test.FakeEC2{}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	o.Lookup = EC2VolumeLookup(ec2.Options{IMDSEndpoint: startIMDS(t), EC2Endpoint: srv.URL})
	f = runEncryption(ctx, env, o)[0]
	ev := evidenceText(f)
	if f.GetStatus() != statFail || !strings.Contains(ev, "vol-0123456789abcdef0 | Encrypted=true KmsKeyId=arn:aws:kms:") || !strings.Contains(ev, "vol-0fedcba9876543210 | Encrypted=false") {
		t.Errorf("lookup: %v\n%s", f.GetStatus(), ev)
	}
	if len(fake.Requests) != 1 || fake.Requests[0].Get("VolumeId.1") == "" || fake.Requests[0].Get("VolumeId.2") == "" {
		t.Errorf("want one DescribeVolumes call for both volumes, got %v", fake.Requests)
	}
}

func TestEncryptionNoMounts(t *testing.T) {
	env := rootWith(t, nil)
	f := runEncryption(context.Background(), env, defaultEncryptionOptions())[0]
	if f.GetStatus() != statUnknown || !strings.Contains(evidenceText(f), "cannot list the host's mounts") {
		t.Errorf("%v\n%s", f.GetStatus(), evidenceText(f))
	}
}
