package ec2_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nodeward/nodeward/agent/posture/ec2"
	"github.com/nodeward/nodeward/agent/posture/ec2/ec2test"
)

func TestDescribeVolumesIMDSv2AndFakeEC2(t *testing.T) {
	imdsEP := startIMDS(t)
	fake := &ec2test.FakeEC2{}
	srv := httptest.NewServer(fake)
	defer srv.Close()

	vols, err := ec2.DescribeVolumes(context.Background(), ec2.Options{IMDSEndpoint: imdsEP, EC2Endpoint: srv.URL},
		[]string{"vol-0123456789abcdef0", "vol-0fedcba9876543210"})
	if err != nil {
		t.Fatal(err)
	}
	if v := vols["vol-0123456789abcdef0"]; !v.Encrypted || !strings.HasPrefix(v.KMSKeyID, "arn:aws:kms:") || v.Type != "gp3" {
		t.Errorf("encrypted volume: %+v", v)
	}
	if v := vols["vol-0fedcba9876543210"]; v.Encrypted || v.Type != "gp2" {
		t.Errorf("plain volume: %+v", v)
	}
	if len(fake.Requests) != 1 {
		t.Fatalf("%d requests", len(fake.Requests))
	}
	q := fake.Requests[0]
	if q.Get("VolumeId.1") != "vol-0123456789abcdef0" || q.Get("VolumeId.2") != "vol-0fedcba9876543210" {
		t.Errorf("request %v", q)
	}
	// The request is signed with the role credentials the simulator hands
	// out (its default role), in the region it reports.
	if a := fake.Auth[0]; !strings.Contains(a, "AWS4-HMAC-SHA256 Credential=12345678901/") || !strings.Contains(a, "/us-east-1/ec2/aws4_request") {
		t.Errorf("Authorization %q", a)
	}
	if !strings.HasPrefix(fake.Tokens[0], "TEST92test48TEST") {
		t.Errorf("session token %q", fake.Tokens[0])
	}
}

// The adapter the posture checks take answers with the same volumes.
func TestVolumeLookup(t *testing.T) {
	srv := httptest.NewServer(&ec2test.FakeEC2{})
	defer srv.Close()
	lookup := ec2.VolumeLookup(ec2.Options{IMDSEndpoint: startIMDS(t), EC2Endpoint: srv.URL})
	got, err := lookup(context.Background(), []string{"vol-0123456789abcdef0", "vol-0fedcba9876543210"})
	if err != nil {
		t.Fatal(err)
	}
	if !got["vol-0123456789abcdef0"].Encrypted || got["vol-0fedcba9876543210"].Encrypted || !strings.HasPrefix(got["vol-0123456789abcdef0"].KMSKeyID, "arn:aws:kms:") {
		t.Errorf("%+v", got)
	}
}

// IMDSv1 is refused: against a metadata service that gives no token the
// lookup fails instead of falling back.
func TestDescribeVolumesNoIMDSv1Fallback(t *testing.T) {
	v1 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		_, _ = io.WriteString(w, "us-east-1")
	}))
	defer v1.Close()
	_, err := ec2.DescribeVolumes(context.Background(), ec2.Options{IMDSEndpoint: v1.URL, EC2Endpoint: "http://127.0.0.1:1", Timeout: 5 * time.Second}, []string{"vol-1"})
	if err == nil {
		t.Fatal("lookup succeeded through IMDSv1")
	}
}
