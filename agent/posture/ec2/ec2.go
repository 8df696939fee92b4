// Package ec2 asks the EC2 API whether the node's EBS volumes are
// encrypted, with the node's instance-role credentials taken from IMDSv2.
// EBS encryption is invisible inside the guest; this is the only way to
// know it, and it needs ec2:DescribeVolumes on the node role, so callers
// use it only when the operator opted in.
package ec2

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials/ec2rolecreds"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	awsec2 "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/nodeward/nodeward/agent/posture/options"
)

// Options say where IMDS and EC2 are. Zero values mean the real ones: IMDS
// at its link-local address, EC2 at the region's endpoint.
type Options struct {
	// IMDSEndpoint, e.g. "http://169.254.169.254".
	IMDSEndpoint string
	// EC2Endpoint overrides the regional endpoint (a VPC endpoint, or a
	// test server).
	EC2Endpoint string
	// Region overrides the region IMDS reports.
	Region string
	// Timeout bounds the whole lookup; default 10 s.
	Timeout time.Duration
	// HTTPClient, when set, carries every request.
	HTTPClient *http.Client
}

// Volume is what EC2 says of one volume.
type Volume struct {
	ID        string
	Encrypted bool
	KMSKeyID  string
	Type      string
}

// DescribeVolumes looks the volumes up. IMDS is used in version 2 only
// (a session token first; no fallback to the unauthenticated v1).
func DescribeVolumes(ctx context.Context, o Options, ids []string) (map[string]Volume, error) {
	if len(ids) == 0 {
		return map[string]Volume{}, nil
	}
	timeout := o.Timeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	imdsOpts := imds.Options{Endpoint: o.IMDSEndpoint, ClientEnableState: imds.ClientEnabled, EnableFallback: aws.FalseTernary}
	if o.HTTPClient != nil {
		imdsOpts.HTTPClient = o.HTTPClient
	}
	meta := imds.New(imdsOpts)
	region := o.Region
	if region == "" {
		r, err := meta.GetRegion(ctx, &imds.GetRegionInput{})
		if err != nil {
			return nil, fmt.Errorf("IMDSv2 region: %w", err)
		}
		region = r.Region
	}
	// The role's credentials, fetched once: the lookup is short-lived.
	creds, err := ec2rolecreds.New(func(po *ec2rolecreds.Options) { po.Client = meta }).Retrieve(ctx)
	if err != nil {
		return nil, fmt.Errorf("IMDSv2 instance-role credentials: %w", err)
	}
	cfg := aws.Config{
		Region:           region,
		Credentials:      staticCreds(creds),
		RetryMaxAttempts: 3,
	}
	if o.HTTPClient != nil {
		cfg.HTTPClient = o.HTTPClient
	}
	client := awsec2.NewFromConfig(cfg, func(eo *awsec2.Options) {
		if o.EC2Endpoint != "" {
			eo.BaseEndpoint = aws.String(o.EC2Endpoint)
		}
	})
	out, err := client.DescribeVolumes(ctx, &awsec2.DescribeVolumesInput{VolumeIds: ids})
	if err != nil {
		return nil, fmt.Errorf("ec2:DescribeVolumes in %s: %w", region, err)
	}
	vols := make(map[string]Volume, len(out.Volumes))
	for _, v := range out.Volumes {
		id := aws.ToString(v.VolumeId)
		if id == "" {
			continue
		}
		vols[id] = Volume{ID: id, Encrypted: aws.ToBool(v.Encrypted), KMSKeyID: aws.ToString(v.KmsKeyId), Type: string(v.VolumeType)}
	}
	if len(vols) == 0 {
		return vols, errors.New("ec2:DescribeVolumes returned no volumes")
	}
	return vols, nil
}

// VolumeLookup is the posture checks' opt-in EBS lookup backed by
// DescribeVolumes.
func VolumeLookup(o Options) options.VolumeLookup {
	return func(ctx context.Context, ids []string) (map[string]options.Volume, error) {
		vols, err := DescribeVolumes(ctx, o, ids)
		if err != nil {
			return nil, err
		}
		out := make(map[string]options.Volume, len(vols))
		for id, v := range vols {
			out[id] = options.Volume{Encrypted: v.Encrypted, KMSKeyID: v.KMSKeyID}
		}
		return out, nil
	}
}

// staticCreds hands the credentials read from IMDS to the client as they
// are; the lookup ends long before they expire.
type staticCreds aws.Credentials

func (c staticCreds) Retrieve(context.Context) (aws.Credentials, error) {
	return aws.Credentials(c), nil
}
