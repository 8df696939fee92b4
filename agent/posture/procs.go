package posture

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// hostProc is a process found in the host's /proc.
type hostProc struct {
	Pid  int
	Comm string
	Exe  string
}

func (p hostProc) String() string {
	s := fmt.Sprintf("pid %d comm %s", p.Pid, p.Comm)
	if p.Exe != "" {
		s += " exe " + p.Exe
	}
	return s
}

// maxProcScan bounds the walk of /proc on a hostile or huge tree.
const maxProcScan = 1 << 17

// findProcs lists the processes in procDir whose comm is one of comms
// (comm is cut at 15 bytes by the kernel, so compare those bytes).
func findProcs(procDir string, comms ...string) ([]hostProc, error) {
	entries, err := os.ReadDir(procDir)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", procDir, err)
	}
	want := make([]string, len(comms))
	for i, c := range comms {
		want[i] = c[:min(len(c), 15)]
	}
	var out []hostProc
	for i, e := range entries {
		if i >= maxProcScan {
			return out, fmt.Errorf("%s: more than %d entries, scan stopped", procDir, maxProcScan)
		}
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		b, err := readBounded(filepath.Join(procDir, e.Name(), "comm"), 64)
		if err != nil {
			continue // the process exited, or this is no procfs
		}
		comm := strings.TrimSpace(string(b))
		if !slices.Contains(want, comm) {
			continue
		}
		p := hostProc{Pid: pid, Comm: comm}
		if exe, err := os.Readlink(filepath.Join(procDir, e.Name(), "exe")); err == nil {
			p.Exe = exe
		}
		out = append(out, p)
	}
	return out, nil
}

// readBounded reads at most n bytes of a file outside the host root (the
// host's /proc).
func readBounded(name string, n int) ([]byte, error) {
	// O_NONBLOCK: a FIFO planted in a fake /proc must not hang the check.
	f, err := os.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", name)
	}
	buf := make([]byte, n)
	m, err := f.Read(buf)
	if err != nil && m == 0 {
		return nil, err
	}
	if m == 0 {
		return nil, errors.New("empty")
	}
	return buf[:m], nil
}
