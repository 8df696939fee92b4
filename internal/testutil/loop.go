package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// LoopDevice attaches img to a free loop device, detached when t ends, and
// returns the device's path and its major:minor. It needs root and
// losetup(8).
func LoopDevice(t testing.TB, img string) (dev, majmin string) {
	t.Helper()
	RequirePrivileged(t)
	out, err := exec.Command("losetup", "-f", "--show", img).Output()
	if err != nil {
		Unavailable(t, "losetup: "+err.Error())
	}
	dev = strings.TrimSpace(string(out))
	t.Cleanup(func() { _ = exec.Command("losetup", "-d", dev).Run() })
	mm, err := os.ReadFile("/sys/block/" + filepath.Base(dev) + "/dev")
	if err != nil {
		t.Fatal(err)
	}
	return dev, strings.TrimSpace(string(mm))
}
