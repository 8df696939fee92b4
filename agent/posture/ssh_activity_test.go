package posture

import (
	"context"
	"testing"
	"time"

	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestSSHActivity(t *testing.T) {
	now := timestamppb.New(time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC))
	tests := []struct {
		name string
		a    *nodewardv1.SshActivity
		want [3]nodewardv1.FindingStatus // logins, root, password
	}{
		{"not tracked", &nodewardv1.SshActivity{Reason: "eBPF unavailable"}, [3]nodewardv1.FindingStatus{statUnknown, statUnknown, statUnknown}},
		{"missing", nil, [3]nodewardv1.FindingStatus{statUnknown, statUnknown, statUnknown}},
		{"quiet", &nodewardv1.SshActivity{Tracking: true, Since: now}, [3]nodewardv1.FindingStatus{statPass, statPass, statPass}},
		{"key login", &nodewardv1.SshActivity{Tracking: true, Since: now, Logins: 1, LastLogin: now, LastLoginUser: "ec2-user"},
			[3]nodewardv1.FindingStatus{statFail, statPass, statPass}},
		{"root with password", &nodewardv1.SshActivity{Tracking: true, Since: now, Logins: 2, RootLogins: 1, PasswordLogins: 1},
			[3]nodewardv1.FindingStatus{statFail, statFail, statFail}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := runSSHActivity(context.Background(), nil, &nodewardv1.Snapshot{SshActivity: tc.a})
			if len(got) != 3 {
				t.Fatalf("%d findings", len(got))
			}
			for i, f := range got {
				if f.GetStatus() != tc.want[i] || len(f.GetEvidence()) == 0 {
					t.Errorf("%s: status %v, want %v; evidence %v", f.GetCheckId(), f.GetStatus(), tc.want[i], f.GetEvidence())
				}
			}
		})
	}
}
