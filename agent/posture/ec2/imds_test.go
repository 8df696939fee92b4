package ec2_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nodeward/nodeward/agent/posture/ec2/ec2test"
	"github.com/nodeward/nodeward/internal/testutil"
)

// Test helpers that run commands live in _test.go files: no agent package
// runs commands.

// TestMain removes the simulator binary the tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	if aemmBin != "" {
		_ = os.RemoveAll(filepath.Dir(aemmBin))
	}
	os.Exit(code)
}

var (
	aemmOnce sync.Once
	aemmBin  string
	aemmErr  error
)

// startIMDS runs amazon-ec2-metadata-mock on a loopback port in IMDSv2-only
// mode and returns its endpoint.
func startIMDS(t *testing.T) string {
	t.Helper()
	aemmOnce.Do(func() {
		dir, err := os.MkdirTemp("", "nodeward-aemm-")
		if err != nil {
			aemmErr = err
			return
		}
		aemmBin = filepath.Join(dir, "ec2-metadata-mock")
		cmd := exec.Command("go", "install", ec2test.AEMMModule)
		cmd.Env = append(os.Environ(), "GOBIN="+dir, "GOFLAGS=")
		if out, err := cmd.CombinedOutput(); err != nil {
			aemmErr = fmt.Errorf("go install amazon-ec2-metadata-mock: %w\n%s", err, out)
			return
		}
	})
	if aemmErr != nil {
		testutil.Unavailable(t, aemmErr.Error())
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	cmd := exec.Command(aemmBin, "-n", "127.0.0.1", "-p", strconv.Itoa(port), "--imdsv2")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ep := "http://127.0.0.1:" + strconv.Itoa(port)
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
			_ = c.Close()
			return ep
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("amazon-ec2-metadata-mock did not listen")
	return ""
}
