package sshtrace

import (
	"testing"

	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
)

func TestOtherAccess(t *testing.T) {
	proc := func(file string, args ...string) *nodewardv1.Process {
		return &nodewardv1.Process{Filename: file, Args: append([]string{file}, args...), ExecId: "n:b:1:" + file}
	}
	tests := []struct {
		name string
		ex   *nodewardv1.ExecEvent
		want nodewardv1.SessionKind
	}{
		{"ssm shell", &nodewardv1.ExecEvent{Process: proc("/usr/bin/id"), Parent: proc("/bin/sh"),
			Ancestors: []*nodewardv1.Process{proc("/usr/bin/ssm-session-worker", "sess-1")}}, nodewardv1.SessionKind_SESSION_KIND_SSM},
		{"nsenter into the host", &nodewardv1.ExecEvent{Process: proc("/bin/bash"), Parent: proc("/usr/bin/nsenter", "-t", "1", "-m", "-u", "-i", "-n", "-p", "--", "bash")},
			nodewardv1.SessionKind_SESSION_KIND_NSENTER},
		{"nsenter elsewhere", &nodewardv1.ExecEvent{Process: proc("/bin/bash"), Parent: proc("/usr/bin/nsenter", "-t", "4242", "-n")},
			nodewardv1.SessionKind_SESSION_KIND_UNSPECIFIED},
		{"kubectl debug node", &nodewardv1.ExecEvent{Process: &nodewardv1.Process{Filename: "/bin/sh",
			Pod: &nodewardv1.Pod{Uid: "u1", Name: "node-debugger-ip-10-0-0-1-abcde", Namespace: "default"}}},
			nodewardv1.SessionKind_SESSION_KIND_KUBECTL_DEBUG},
		{"an ordinary exec", &nodewardv1.ExecEvent{Process: proc("/usr/bin/true"), Parent: proc("/usr/lib/systemd/systemd")},
			nodewardv1.SessionKind_SESSION_KIND_UNSPECIFIED},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := otherAccess(tc.ex)
			if s.GetKind() != tc.want {
				t.Fatalf("kind = %v, want %v", s.GetKind(), tc.want)
			}
			if s != nil && s.GetId() == "" {
				t.Error("session without an id")
			}
		})
	}
}
