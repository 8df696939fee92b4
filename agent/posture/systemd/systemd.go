// Package systemd asks the host's systemd about units: over the host's
// system D-Bus when it is reachable under the host root, otherwise from the
// unit files and symlinks on disk, saying which of the two answered.
package systemd

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"time"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
	"github.com/nodeward/nodeward/agent/hostfs"
	"golang.org/x/sys/unix"
)

// SystemBusPath is where the system bus listens, relative to the host root.
const SystemBusPath = "/run/dbus/system_bus_socket"

// Unit is what is known of one unit.
type Unit struct {
	Name string
	// LoadState: loaded, not-found, masked, ... ("" when unknown).
	LoadState string
	// ActiveState: active, inactive, failed, activating, ... ("" offline).
	ActiveState string
	SubState    string
	// UnitFileState: enabled, disabled, masked, static, ... ("" when the
	// unit has no file).
	UnitFileState string
	// Via says where the answer came from: "dbus" or "unit files".
	Via string
}

// Exists reports whether the unit has a unit file or is loaded.
func (u Unit) Exists() bool {
	return u.UnitFileState != "" || (u.LoadState != "" && u.LoadState != "not-found")
}

// Active reports whether systemd runs the unit (or is starting it).
func (u Unit) Active() bool {
	return u.ActiveState == "active" || u.ActiveState == "activating" || u.ActiveState == "reloading"
}

// Enabled reports whether the unit starts at boot.
func (u Unit) Enabled() bool {
	return strings.HasPrefix(u.UnitFileState, "enabled") || u.UnitFileState == "alias"
}

// Masked reports whether the unit is masked.
func (u Unit) Masked() bool {
	return strings.HasPrefix(u.UnitFileState, "masked") || u.LoadState == "masked"
}

// String is one line of evidence.
func (u Unit) String() string {
	var parts []string
	add := func(k, v string) {
		if v != "" {
			parts = append(parts, k+"="+v)
		}
	}
	add("LoadState", u.LoadState)
	add("ActiveState", u.ActiveState)
	add("SubState", u.SubState)
	add("UnitFileState", u.UnitFileState)
	if len(parts) == 0 {
		return "no unit file"
	}
	return strings.Join(parts, " ")
}

// ErrNoBus says the host root holds no system bus socket.
var ErrNoBus = errors.New("no system D-Bus socket")

// Query asks the host's systemd over D-Bus about units. The bus socket is
// found under the host root and connected through an O_PATH handle, so a
// symlink cannot lead the agent to another bus. Errors wrap ErrNoBus when
// the socket is missing.
func Query(ctx context.Context, root *hostfs.Root, units []string) ([]Unit, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	f, err := root.OpenFile(SystemBusPath, unix.O_PATH)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w at %s: %w", ErrNoBus, SystemBusPath, err)
		}
		return nil, fmt.Errorf("open %s: %w", SystemBusPath, err)
	}
	defer f.Close()
	fd := int(f.Fd())
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("stat %s: %w", SystemBusPath, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return nil, fmt.Errorf("%w: %s is not a socket", ErrNoBus, SystemBusPath)
	}
	addr := "unix:path=/proc/self/fd/" + strconv.Itoa(fd)
	conn, err := sdbus.NewConnection(func() (*dbus.Conn, error) {
		c, err := dbus.Dial(addr, dbus.WithContext(ctx))
		if err != nil {
			return nil, err
		}
		if err := c.Auth(nil); err != nil {
			_ = c.Close()
			return nil, err
		}
		if err := c.Hello(); err != nil {
			_ = c.Close()
			return nil, err
		}
		return c, nil
	})
	if err != nil {
		return nil, fmt.Errorf("connect to the system bus at %s: %w", SystemBusPath, err)
	}
	defer conn.Close()
	statuses, err := conn.ListUnitsByNamesContext(ctx, units)
	if err != nil {
		return nil, fmt.Errorf("systemd ListUnitsByNames: %w", err)
	}
	out := make([]Unit, 0, len(units))
	seen := map[string]bool{}
	for _, s := range statuses {
		// An alias (Debian's sshd.service) answers with its unit's name.
		if seen[s.Name] {
			continue
		}
		seen[s.Name] = true
		u := Unit{Name: s.Name, LoadState: s.LoadState, ActiveState: s.ActiveState, SubState: s.SubState, Via: "dbus"}
		if s.LoadState != "not-found" {
			p, err := conn.GetUnitPropertyContext(ctx, s.Name, "UnitFileState")
			if err != nil {
				return nil, fmt.Errorf("systemd %s UnitFileState: %w", s.Name, err)
			}
			if v, ok := p.Value.Value().(string); ok {
				u.UnitFileState = v
			}
		}
		out = append(out, u)
	}
	return out, nil
}

// Unit file search path, in systemd's order of precedence.
var unitDirs = []string{"/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system"}

// Offline reads what the disk says of a unit without systemd: its unit
// file, a mask (a link to /dev/null or an empty file in /etc), and enabling
// links in any *.wants or *.requires directory under /etc/systemd/system.
// ActiveState stays empty: only systemd knows it.
func Offline(root *hostfs.Root, name string) (Unit, error) {
	u := Unit{Name: name, Via: "unit files"}
	found := false
	for _, d := range unitDirs[:2] {
		p := d + "/" + name
		target, isLink, err := readlinkIn(root, p)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return u, fmt.Errorf("%s: %w", p, err)
		}
		if isLink && target == "/dev/null" {
			u.UnitFileState, u.LoadState = "masked", "masked"
			return u, nil
		}
		if err == nil {
			found = true
			break
		}
	}
	if !found {
		for _, d := range unitDirs[2:] {
			if _, err := root.Stat(d + "/" + name); err == nil {
				found = true
				break
			} else if !errors.Is(err, fs.ErrNotExist) {
				return u, fmt.Errorf("%s/%s: %w", d, name, err)
			}
		}
	}
	if !found {
		u.LoadState = "not-found"
		return u, nil
	}
	u.LoadState = "loaded"
	u.UnitFileState = "disabled"
	entries, err := root.ReadDir("/etc/systemd/system")
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return u, fmt.Errorf("/etc/systemd/system: %w", err)
	}
	for _, e := range entries {
		if !e.IsDir() || (!strings.HasSuffix(e.Name(), ".wants") && !strings.HasSuffix(e.Name(), ".requires")) {
			continue
		}
		if _, _, err := readlinkIn(root, "/etc/systemd/system/"+e.Name()+"/"+name); err == nil {
			u.UnitFileState = "enabled"
			break
		}
	}
	return u, nil
}

// readlinkIn reads the link name itself under the root, its parent
// resolved inside the root; isLink is false, with no error, for a name that
// is there but not a link. A missing name gives fs.ErrNotExist.
func readlinkIn(root *hostfs.Root, name string) (target string, isLink bool, err error) {
	target, err = root.Readlink(name)
	if errors.Is(err, unix.EINVAL) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return target, true, nil
}

// State answers for units: over D-Bus when the bus answers, else from the
// unit files. busErr says why D-Bus was not used (nil when it was).
func State(ctx context.Context, root *hostfs.Root, units []string) (out []Unit, busErr error, err error) {
	out, busErr = Query(ctx, root, units)
	if busErr == nil {
		return out, nil, nil
	}
	out = out[:0]
	var errs []error
	for _, n := range units {
		u, err := Offline(root, n)
		if err != nil {
			errs = append(errs, err)
		}
		out = append(out, u)
	}
	return out, busErr, errors.Join(errs...)
}
