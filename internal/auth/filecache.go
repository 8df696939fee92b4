package auth

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"
)

// maxCredentialFile bounds every credential file read: certificates, keys,
// token lists and key sets are all far smaller.
const maxCredentialFile = 4 << 20

// recheck is how often a cached file is stat'ed for a change. Kubernetes
// swaps mounted Secrets by renaming a symlink, which changes what stat sees.
const recheck = time.Second

// fileCache holds what load made of one or more files and loads it again when
// any of them changes. A reload that fails keeps the previous value and is
// logged, so a half-written rotation never takes the collector down.
type fileCache[T any] struct {
	paths []string
	load  func(contents [][]byte) (T, error)
	log   *slog.Logger
	now   func() time.Time

	mu      sync.Mutex
	val     T
	stamp   string
	checked time.Time
}

func newFileCache[T any](log *slog.Logger, load func([][]byte) (T, error), paths ...string) (*fileCache[T], error) {
	c := &fileCache[T]{paths: paths, load: load, log: log, now: time.Now}
	stamp, err := c.stampNow()
	if err != nil {
		return nil, err
	}
	v, err := c.read()
	if err != nil {
		return nil, err
	}
	c.val, c.stamp, c.checked = v, stamp, c.now()
	return c, nil
}

func (c *fileCache[T]) stampNow() (string, error) {
	s := ""
	for _, p := range c.paths {
		fi, err := os.Stat(p)
		if err != nil {
			return "", fmt.Errorf("stat %s: %w", p, err)
		}
		var ino uint64
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			ino = st.Ino
		}
		s += fmt.Sprintf("%d.%d.%d/", fi.ModTime().UnixNano(), fi.Size(), ino)
	}
	return s, nil
}

func (c *fileCache[T]) read() (T, error) {
	var zero T
	contents := make([][]byte, len(c.paths))
	for i, p := range c.paths {
		b, err := readBounded(p)
		if err != nil {
			return zero, err
		}
		contents[i] = b
	}
	return c.load(contents)
}

// get returns the current value, reloading it first if a file changed.
func (c *fileCache[T]) get() T {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if now.Sub(c.checked) < recheck {
		return c.val
	}
	c.checked = now
	stamp, err := c.stampNow()
	if err != nil {
		c.log.Warn("credential file unreadable, keeping the loaded one", "err", err)
		return c.val
	}
	if stamp == c.stamp {
		return c.val
	}
	v, err := c.read()
	if err != nil {
		c.log.Warn("credential file changed but does not load, keeping the loaded one", "err", err)
		return c.val
	}
	c.val, c.stamp = v, stamp
	c.log.Info("credential file reloaded", "files", c.paths)
	return c.val
}

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxCredentialFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > maxCredentialFile {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxCredentialFile)
	}
	if len(b) == 0 {
		return nil, fmt.Errorf("%s: %w", path, errEmpty)
	}
	return b, nil
}

var errEmpty = errors.New("empty file")
