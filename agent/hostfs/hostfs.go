// Package hostfs reads the host's filesystem through one root directory.
//
// Every path is resolved inside the root with openat2(RESOLVE_IN_ROOT): an
// absolute symlink in /host/etc points into /host, never into the agent's own
// container, and ".." cannot climb above the root. Reads are size-bounded and
// only regular files are read, so a FIFO, a device or a huge file planted in
// the host root cannot hang or exhaust the agent.
package hostfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// DefaultMaxFileSize bounds ReadFile when the caller has no better limit.
const DefaultMaxFileSize = 16 << 20

var (
	// ErrNotRegular is returned for FIFOs, sockets, devices and directories
	// where a regular file was expected.
	ErrNotRegular = errors.New("not a regular file")
	// ErrTooLarge is returned when a file exceeds the read bound.
	ErrTooLarge = errors.New("file exceeds size limit")
)

// Root is an open host root. It is safe for concurrent use.
type Root struct {
	dir string
	fd  int
}

// Open opens dir as a host root.
func Open(dir string) (*Root, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("host root %q: %w", dir, err)
	}
	fd, err := unix.Open(abs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("host root %q: %w", dir, err)
	}
	return &Root{dir: abs, fd: fd}, nil
}

// Close releases the root's directory handle.
func (r *Root) Close() error { return unix.Close(r.fd) }

// Dir is the root's absolute path on the agent's own filesystem.
func (r *Root) Dir() string { return r.dir }

// rel turns a host path ("/etc/os-release" or "etc/os-release") into a path
// relative to the root.
func rel(name string) string {
	c := path.Clean("/" + name)
	if c == "/" {
		return "."
	}
	return c[1:]
}

func (r *Root) openat(name string, flags uint64) (*os.File, error) {
	how := unix.OpenHow{
		Flags:   flags | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	}
	for {
		fd, err := unix.Openat2(r.fd, rel(name), &how)
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: name, Err: err}
		}
		return os.NewFile(uintptr(fd), name), nil
	}
}

// Open opens a regular file for reading. O_NONBLOCK keeps a FIFO from
// blocking the open; the file type is then checked before any read.
func (r *Root) Open(name string) (*os.File, error) {
	f, err := r.openat(name, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, &fs.PathError{Op: "stat", Path: name, Err: err}
	}
	if !fi.Mode().IsRegular() {
		_ = f.Close()
		return nil, &fs.PathError{Op: "open", Path: name, Err: fmt.Errorf("%w (%s)", ErrNotRegular, kind(fi.Mode()))}
	}
	return f, nil
}

// ReadFile reads a whole regular file of at most max bytes.
func (r *Root) ReadFile(name string, max int64) ([]byte, error) {
	f, err := r.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, &fs.PathError{Op: "read", Path: name, Err: err}
	}
	if int64(len(b)) > max {
		return nil, &fs.PathError{Op: "read", Path: name, Err: fmt.Errorf("%w of %d bytes", ErrTooLarge, max)}
	}
	return b, nil
}

// Stat returns the file info of name, following symlinks inside the root.
func (r *Root) Stat(name string) (fs.FileInfo, error) {
	f, err := r.openat(name, unix.O_PATH)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Stat()
}

// Exists reports whether name exists under the root, following links
// inside it; an error other than "not there" is returned, so a caller can
// tell "absent" from "could not look".
func (r *Root) Exists(name string) (bool, error) {
	_, err := r.Stat(name)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return false, err
}

// OpenFile opens name inside the root with the given open(2) flags
// (O_CLOEXEC is always added) and no check of the file's type, for callers
// that need a device node, a socket's O_PATH handle or a directory handle.
func (r *Root) OpenFile(name string, flags uint64) (*os.File, error) {
	return r.openat(name, flags)
}

// Readlink reads the link name itself, not what it points at, its parent
// resolved inside the root. A name that is not a link gives an error that
// wraps unix.EINVAL, as readlink(2) does.
func (r *Root) Readlink(name string) (string, error) {
	clean := path.Clean("/" + name)
	dir, err := r.openat(path.Dir(clean), unix.O_PATH|unix.O_DIRECTORY)
	if err != nil {
		return "", err
	}
	defer dir.Close()
	buf := make([]byte, 4096)
	n, err := unix.Readlinkat(int(dir.Fd()), path.Base(clean), buf)
	if err != nil {
		return "", &fs.PathError{Op: "readlink", Path: name, Err: err}
	}
	return string(buf[:n]), nil
}

// ReadDir lists a directory inside the root.
func (r *Root) ReadDir(name string) ([]fs.DirEntry, error) {
	f, err := r.openat(name, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.ReadDir(-1)
}

// RealPath resolves name inside the root and returns the resulting path on
// the agent's filesystem, for libraries that insist on opening paths
// themselves. The answer is only as stable as the host tree.
func (r *Root) RealPath(name string) (string, error) {
	f, err := r.openat(name, unix.O_PATH)
	if err != nil {
		return "", err
	}
	defer f.Close()
	p, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(f.Fd())))
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", name, err)
	}
	if p != r.dir && !strings.HasPrefix(p, strings.TrimSuffix(r.dir, "/")+"/") {
		return "", fmt.Errorf("resolve %s: %q is outside the host root", name, p)
	}
	return p, nil
}

func kind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m&fs.ModeNamedPipe != 0:
		return "FIFO"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeDevice != 0:
		return "device"
	default:
		return m.Type().String()
	}
}
