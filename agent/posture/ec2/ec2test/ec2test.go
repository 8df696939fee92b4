// Package ec2test runs AWS's IMDS simulator (amazon-ec2-metadata-mock) for
// tests and provides a FAKE of the EC2 API, which cannot be reached here.
package ec2test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nodeward/nodeward/internal/testutil"
)

// aemmVersion is AWS's IMDS simulator, built from the Go module proxy.
const aemmVersion = "v1.13.0"

var (
	aemmOnce sync.Once
	aemmBin  string
	aemmErr  error
)

// StartIMDS runs amazon-ec2-metadata-mock on a loopback port in IMDSv2-only
// mode and returns its endpoint.
func StartIMDS(t *testing.T) string {
	t.Helper()
	aemmOnce.Do(func() {
		dir, err := os.MkdirTemp("", "nodeward-aemm-")
		if err != nil {
			aemmErr = err
			return
		}
		cmd := exec.Command("go", "install", "github.com/aws/amazon-ec2-metadata-mock/cmd/ec2-metadata-mock@"+aemmVersion)
		cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=")
		if out, err := cmd.CombinedOutput(); err != nil {
			aemmErr = fmt.Errorf("go install amazon-ec2-metadata-mock: %v\n%s", err, out)
			return
		}
		aemmBin = filepath.Join(dir, "ec2-metadata-mock")
	})
	if aemmErr != nil {
		testutil.Unavailable(t, aemmErr.Error())
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command(aemmBin, "-n", "127.0.0.1", "-p", strconv.Itoa(port), "--imdsv2")
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ep := "http://127.0.0.1:" + strconv.Itoa(port)
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
			c.Close()
			return ep
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("amazon-ec2-metadata-mock did not listen")
	return ""
}

// FakeEC2 is a FAKE of the EC2 Query API (the real one cannot be reached
// from here): it answers DescribeVolumes with responses shaped as the EC2
// API documents them, and records what the client sent.
type FakeEC2 struct {
	mu       sync.Mutex
	Requests []url.Values
	Auth     []string
	Tokens   []string
}

// DescribeVolumesResponse: vol-0123456789abcdef0 encrypted with KMS,
// vol-0fedcba9876543210 not encrypted.
const DescribeVolumesResponse = `<?xml version="1.0" encoding="UTF-8"?>
<DescribeVolumesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
    <requestId>7a62c49f-347e-4fc4-9331-6e8eEXAMPLE</requestId>
    <volumeSet>
        <item>
            <volumeId>vol-0123456789abcdef0</volumeId>
            <size>80</size>
            <snapshotId>snap-0fd1b2a6f8e4c3b21</snapshotId>
            <availabilityZone>us-east-1f</availabilityZone>
            <status>in-use</status>
            <createTime>2024-06-05T10:12:44.000Z</createTime>
            <attachmentSet>
                <item>
                    <volumeId>vol-0123456789abcdef0</volumeId>
                    <instanceId>i-1234567890abcdef0</instanceId>
                    <device>/dev/xvda</device>
                    <status>attached</status>
                    <attachTime>2024-06-05T10:12:44.000Z</attachTime>
                    <deleteOnTermination>true</deleteOnTermination>
                </item>
            </attachmentSet>
            <volumeType>gp3</volumeType>
            <iops>3000</iops>
            <throughput>125</throughput>
            <encrypted>true</encrypted>
            <kmsKeyId>arn:aws:kms:us-east-1:0123456789:key/1a2b3c4d-5e6f-7a8b-9c0d-1e2f3a4b5c6d</kmsKeyId>
            <multiAttachEnabled>false</multiAttachEnabled>
        </item>
        <item>
            <volumeId>vol-0fedcba9876543210</volumeId>
            <size>100</size>
            <snapshotId/>
            <availabilityZone>us-east-1f</availabilityZone>
            <status>in-use</status>
            <createTime>2024-06-05T10:12:44.000Z</createTime>
            <volumeType>gp2</volumeType>
            <iops>300</iops>
            <encrypted>false</encrypted>
            <multiAttachEnabled>false</multiAttachEnabled>
        </item>
    </volumeSet>
</DescribeVolumesResponse>`

func (f *FakeEC2) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.Requests = append(f.Requests, r.PostForm)
	f.Auth = append(f.Auth, r.Header.Get("Authorization"))
	f.Tokens = append(f.Tokens, r.Header.Get("X-Amz-Security-Token"))
	f.mu.Unlock()
	if r.PostForm.Get("Action") != "DescribeVolumes" {
		http.Error(w, "unexpected action", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	io.WriteString(w, DescribeVolumesResponse)
}
