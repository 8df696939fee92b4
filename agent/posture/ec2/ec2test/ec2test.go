// Package ec2test provides a FAKE of the EC2 API, which cannot be reached
// from tests, and the command that runs AWS's own IMDS simulator
// (amazon-ec2-metadata-mock) in them.
package ec2test

import (
	"io"
	"net/http"
	"net/url"
	"sync"
)

// AEMMModule is AWS's IMDS simulator at the version the tests build with
// "go install MODULE" (tests run it with -n 127.0.0.1 -p PORT --imdsv2).
const AEMMModule = "github.com/aws/amazon-ec2-metadata-mock/cmd/ec2-metadata-mock@v1.13.0"

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
	_, _ = io.WriteString(w, DescribeVolumesResponse)
}
