package blockdev

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Mount is one line of /proc/PID/mountinfo.
type Mount struct {
	MajMin     string
	Root       string
	MountPoint string
	FSType     string
	Source     string
}

// BlockBacked reports whether the mount's device number names a block
// device (major 0 is the kernel's anonymous devices: tmpfs, overlay, proc).
func (m Mount) BlockBacked() bool {
	maj, _, _ := strings.Cut(m.MajMin, ":")
	return maj != "0" && maj != ""
}

// ParseMountInfo parses proc(5) mountinfo. It is written here rather than
// taken from procfs because the agent must bound what it reads from a
// host tree; the format is the kernel's:
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
func ParseMountInfo(r io.Reader) ([]Mount, error) {
	var out []Mount
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.Fields(line)
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+1 >= len(f) {
			return out, fmt.Errorf("mountinfo line %d: %d fields, no \" - \" separator", n, len(f))
		}
		m := Mount{MajMin: f[2], Root: unescape(f[3]), MountPoint: unescape(f[4]), FSType: f[sep+1]}
		if sep+2 < len(f) {
			m.Source = unescape(f[sep+2])
		}
		if !validMajMin(m.MajMin) {
			return out, fmt.Errorf("mountinfo line %d: bad device number %q", n, m.MajMin)
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("mountinfo: %w", err)
	}
	return out, nil
}

// unescape undoes the kernel's octal escapes (\040 for a space, ...).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Containing returns the mount that holds path: the mount with the longest mount point that is path or a parent of it, the last
// one mounted winning among equals.
func Containing(mounts []Mount, p string) (Mount, bool) {
	var best Mount
	found := false
	for _, m := range mounts {
		mp := m.MountPoint
		if p != mp && mp != "/" && !strings.HasPrefix(p, strings.TrimSuffix(mp, "/")+"/") {
			continue
		}
		if !found || len(mp) >= len(best.MountPoint) {
			best, found = m, true
		}
	}
	return best, found
}
