package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/protobuf/proto"
)

// TestVerbs drives the CLI verbs against a real collector holding one
// node's snapshot and a few events.
func TestVerbs(t *testing.T) {
	addr := startCollector(t, &serveOptions{store: "sqlite:" + filepath.Join(t.TempDir(), "db")})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	agent, err := connectAgent(ctx, addr, "ip-10-0-0-9.ec2.internal", 8, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer agent.close()
	snap := simSnapshot(newRand(), "ip-10-0-0-9.ec2.internal")
	snap.Packages.Packages[0] = &nodewardv1.Package{Name: "openssl-libs", Version: "3.0.2", Release: "1.amzn2023", Epoch: proto.Uint32(1), Arch: "x86_64", Manager: nodewardv1.PackageManager_PACKAGE_MANAGER_RPM, State: "installed"}
	snap.Findings[0].Status = nodewardv1.FindingStatus_FINDING_STATUS_FAIL
	if err := agent.send(ctx, &nodewardv1.ConnectRequest{Payload: &nodewardv1.ConnectRequest_Snapshot{Snapshot: snap}}, 0); err != nil {
		t.Fatal(err)
	}
	sendEvents(t, ctx, agent, 2, execEvent("/usr/bin/curl", "curl", "-s", "https://example.com"), execEvent("/bin/sh", "sh"))

	cli := func(args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		if code := runTo(ctx, append(args, "--server", addr), &out, &errb); code != 0 {
			t.Fatalf("nodeward %s: exit %d: %s", strings.Join(args, " "), code, errb.String())
		}
		return out.String()
	}
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"nodes"}, []string{"ip-10-0-0-9.ec2.internal", "SCORE", "Amazon Linux 2023"}},
		{[]string{"node", "ip-10-0-0-9.ec2.internal"}, []string{"Posture", "failing first", "fail ", "ssh.permit-root-login", "Listening ports", "10250", "Packages (300", "openssl-libs"}},
		{[]string{"packages", "--name", "openssl-libs", "--version", "<3.0.8"}, []string{"ip-10-0-0-9.ec2.internal", "1:3.0.2-1.amzn2023"}},
		{[]string{"ports", "--port", "10250", "--exposed"}, []string{"kubelet", "any"}},
		{[]string{"findings", "--status", "fail", "--severity", "high"}, []string{"ssh.permit-root-login"}},
		{[]string{"events", "--binary", "^/usr/bin/curl$"}, []string{"/usr/bin/curl", "prod/api-0"}},
	} {
		out := cli(c.args...)
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("nodeward %s: output lacks %q:\n%s", strings.Join(c.args, " "), w, out)
			}
		}
	}
	if out := cli("packages", "--name", "openssl-libs", "--version", "<3.0.2"); !strings.Contains(out, "No packages match") {
		t.Errorf("openssl-libs < 3.0.2 matched: %s", out)
	}
	var node map[string]any
	if err := json.Unmarshal([]byte(cli("node", "ip-10-0-0-9.ec2.internal", "-o", "json")), &node); err != nil {
		t.Fatalf("node -o json: %v", err)
	}
	if node["node"].(map[string]any)["name"] != "ip-10-0-0-9.ec2.internal" {
		t.Fatalf("node -o json: %v", node)
	}
	// Events print one JSON object per line.
	lines := strings.Split(strings.TrimSpace(cli("events", "-o", "json")), "\n")
	if len(lines) != 2 {
		t.Fatalf("events -o json: %d lines, want 2", len(lines))
	}
	var out, errb bytes.Buffer
	if code := runTo(ctx, []string{"events", "--kind", "bogus", "--server", addr}, &out, &errb); code == 0 || !strings.Contains(errb.String(), "unknown event kind") {
		t.Fatalf("bad --kind: exit %d, %q", code, errb.String())
	}
}
