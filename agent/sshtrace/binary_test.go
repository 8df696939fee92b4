package sshtrace

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

func TestIsSSHDBinary(t *testing.T) {
	for _, c := range []struct {
		path string
		want bool
	}{
		{"/usr/sbin/sshd", true},
		{"/usr/bin/ssh", false},
		{"/bin/bash", false},
		{os.Args[0], false}, // a Go binary holding the marks as data
	} {
		f, err := os.Open(c.path)
		if err != nil {
			if c.want {
				t.Skipf("%s: %v", c.path, err)
			}
			continue
		}
		got, err := IsSSHDBinary(f)
		f.Close()
		if err != nil || got != c.want {
			t.Errorf("IsSSHDBinary(%s) = %v, %v; want %v", c.path, got, err, c.want)
		}
	}
	// A mark split across two reads is still found.
	pad := strings.Repeat("x", 256<<10-10)
	data := pad + "OpenSSH_9.9 Server listening on %s port %s"
	if ok, _ := IsSSHDBinary(bytes.NewReader([]byte(data))); !ok {
		t.Error("a mark across the read boundary was missed")
	}
}
