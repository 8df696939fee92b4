package inventory

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nodeward/nodeward/agent/hostfs"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const (
	dpkgStatusPath  = "var/lib/dpkg/status"
	dpkgUpdatesDir  = "var/lib/dpkg/updates"
	dpkgInfoDir     = "var/lib/dpkg/info"
	dpkgLogPath     = "var/log/dpkg.log"
	maxDpkgStatus   = 256 << 20
	maxDpkgLogBytes = 256 << 20
)

// dpkgRecord is one stanza of the status file, reduced to what the
// inventory needs.
type dpkgRecord struct {
	pkg  *nodewardv1.Package
	want string
	// multiArchSame packages keep their files as info/NAME:ARCH.*.
	multiArchSame bool
}

// trimDpkgSpace trims what dpkg trims after a value: C isspace, the
// newline aside.
func trimDpkgSpace(v []byte) []byte {
	for len(v) > 0 {
		switch v[len(v)-1] {
		case ' ', '\t', '\r', '\v', '\f':
			v = v[:len(v)-1]
		default:
			return v
		}
	}
	return v
}

// dpkgField is one field of a stanza, as slices of the file.
type dpkgField struct {
	name, value []byte
	valueStart  int // offset of value in the file, for continuation lines
}

var (
	dpkgWants  = []string{"unknown", "install", "hold", "deinstall", "purge"}
	dpkgFlags  = []string{"ok", "reinstreq"}
	dpkgStates = []string{"not-installed", "config-files", "half-installed", "unpacked",
		"half-configured", "triggers-awaited", "triggers-pending", "installed"}
)

// parseDpkgStatus reads a dpkg status file (or one file of updates/) the
// way dpkg does: stanzas of "Field: value" lines separated by blank lines,
// continuation lines starting with a space or tab, field names
// case-insensitive. It returns every stanza, not-installed ones included;
// a line that is not a field, a repeated field, a stanza without Package,
// or a malformed Status or Version is an error, as it is for dpkg-query.
func parseDpkgStatus(r io.Reader) ([]dpkgRecord, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxDpkgStatus+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxDpkgStatus {
		return nil, fmt.Errorf("%w of %d bytes", hostfs.ErrTooLarge, maxDpkgStatus)
	}
	return parseDpkgStatusBytes(b)
}

// parseDpkgStatusBytes is parseDpkgStatus over a file already in memory:
// field names and values stay slices of b; only the values the inventory
// keeps are copied.
func parseDpkgStatusBytes(b []byte) ([]dpkgRecord, error) {
	var (
		out    []dpkgRecord
		fields = make([]dpkgField, 0, 32)
		lineNo int
		start  int
		// byName indexes out for dpkg's one-instance-per-name rule.
		byName = map[string][]int{}
	)
	flush := func() error {
		if len(fields) == 0 {
			return nil
		}
		rec, err := dpkgRecordFrom(fields)
		fields = fields[:0]
		if err != nil {
			return fmt.Errorf("stanza at line %d: %w", start, err)
		}
		return addDpkgInstance(&out, byName, rec)
	}
	for pos := 0; pos < len(b); {
		end := bytes.IndexByte(b[pos:], '\n')
		if end < 0 {
			return nil, fmt.Errorf("line %d: end of file in the middle of a field (missing final newline; truncated?)", lineNo+1)
		}
		end += pos
		line := b[pos:end]
		pos = end + 1
		lineNo++
		switch {
		case len(line) == 0:
			if err := flush(); err != nil {
				return nil, err
			}
		case line[0] == ' ' || line[0] == '\t':
			// A continuation line: the value runs on (Description,
			// Conffiles; in a kept field it makes the value invalid, as
			// it does for dpkg).
			if len(fields) == 0 {
				return nil, fmt.Errorf("line %d: empty field name", lineNo)
			}
			last := &fields[len(fields)-1]
			last.value = trimDpkgSpace(b[last.valueStart:end])
		default:
			colon := bytes.IndexByte(line, ':')
			if colon < 0 {
				return nil, fmt.Errorf("line %d: field name %q must be followed by a colon", lineNo, truncate(string(line), 40))
			}
			name := bytes.TrimSpace(line[:colon])
			if len(name) == 0 {
				return nil, fmt.Errorf("line %d: empty field name", lineNo)
			}
			for _, f := range fields {
				if len(f.name) == len(name) && asciiEqualFold(f.name, string(name)) {
					return nil, fmt.Errorf("line %d: duplicate value for %q field", lineNo, string(name))
				}
			}
			if len(fields) == 0 {
				start = lineNo
			}
			vs := end - len(line) + colon + 1
			for vs < end && (b[vs] == ' ' || b[vs] == '\t') {
				vs++
			}
			fields = append(fields, dpkgField{name: name, value: trimDpkgSpace(b[vs:end]), valueStart: vs})
		}
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return out, nil
}

// addDpkgInstance adds a record the way dpkg fills its package table from
// the status file: one slot per architecture, a later stanza replacing an
// earlier one in its slot, and more than one installed instance of a name
// only when every one is Multi-Arch: same.
func addDpkgInstance(out *[]dpkgRecord, byName map[string][]int, rec dpkgRecord) error {
	name := rec.pkg.Name
	if rec.pkg.State != "not-installed" {
		for _, i := range byName[name] {
			other := (*out)[i]
			if other.pkg.State == "not-installed" || (rec.multiArchSame && other.multiArchSame) {
				continue
			}
			return fmt.Errorf("package %s: multiple non-coinstallable package instances present", name)
		}
	}
	for _, i := range byName[name] {
		if (*out)[i].pkg.Arch == rec.pkg.Arch {
			(*out)[i] = rec
			return nil
		}
	}
	byName[name] = append(byName[name], len(*out))
	*out = append(*out, rec)
	return nil
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		x, y := b[i], s[i]
		if x|0x20 != y|0x20 || (x|0x20) < 'a' || (x|0x20) > 'z' {
			if x != y {
				return false
			}
		}
	}
	return true
}

// dpkgStanza holds the fields of one stanza the inventory reads, found in
// one pass over the stanza.
type dpkgStanza struct {
	pkg, status, version, arch, source, multiArch, trigPending, trigAwaited string
	hasPkg, hasStatus, hasVersion                                           bool
}

func dpkgStanzaOf(fields []dpkgField) dpkgStanza {
	var s dpkgStanza
	for _, f := range fields {
		switch {
		case asciiEqualFold(f.name, "Package"):
			s.pkg, s.hasPkg = string(f.value), true
		case asciiEqualFold(f.name, "Status"):
			s.status, s.hasStatus = string(f.value), true
		case asciiEqualFold(f.name, "Version"):
			s.version, s.hasVersion = string(f.value), true
		case asciiEqualFold(f.name, "Architecture"):
			s.arch = string(f.value)
		case asciiEqualFold(f.name, "Source"):
			s.source = string(f.value)
		case asciiEqualFold(f.name, "Multi-Arch"):
			s.multiArch = string(f.value)
		case asciiEqualFold(f.name, "Triggers-Pending"):
			s.trigPending = string(f.value)
		case asciiEqualFold(f.name, "Triggers-Awaited"):
			s.trigAwaited = string(f.value)
		}
	}
	return s
}

func dpkgRecordFrom(fields []dpkgField) (dpkgRecord, error) {
	f := dpkgStanzaOf(fields)
	name, ok := f.pkg, f.hasPkg
	if !ok {
		return dpkgRecord{}, errors.New("missing Package field")
	}
	// dpkg folds package names to lower case and allows only these.
	name = strings.ToLower(name)
	if name == "" || !isAlnum(name[0]) || strings.Trim(name, "abcdefghijklmnopqrstuvwxyz0123456789-+.") != "" {
		return dpkgRecord{}, fmt.Errorf("invalid package name %q", name)
	}
	p := &nodewardv1.Package{
		Name:    name,
		Arch:    f.arch,
		Manager: nodewardv1.PackageManager_PACKAGE_MANAGER_DPKG,
	}
	rec := dpkgRecord{pkg: p, want: "unknown"}
	p.State = "not-installed"
	if st, ok := f.status, f.hasStatus; ok {
		words := strings.Fields(st)
		if len(words) != 3 {
			return rec, fmt.Errorf("package %s: Status %q: want three words", name, st)
		}
		if !slices.Contains(dpkgWants, words[0]) || !slices.Contains(dpkgFlags, words[1]) || !slices.Contains(dpkgStates, words[2]) {
			return rec, fmt.Errorf("package %s: Status %q: invalid package status", name, st)
		}
		rec.want, p.State = words[0], words[2]
	}
	if v, ok := f.version, f.hasVersion; ok {
		dv, err := parseDpkgVersion(v)
		if err != nil {
			return rec, fmt.Errorf("package %s: Version %q: %w", name, v, err)
		}
		p.Version = dv.String()
		if dv.explicitEpoch {
			e := dv.epoch
			p.Epoch = &e
		}
	} else if p.State != "not-installed" && p.State != "half-installed" {
		return rec, fmt.Errorf("package %s: missing Version field", name)
	}
	if err := checkDpkgTriggers(f.trigPending, f.trigAwaited, p.State); err != nil {
		return rec, fmt.Errorf("package %s: %w", name, err)
	}
	// ${source:Package} and ${source:Version}: the Source field's name and
	// parenthesised version, defaulting to the binary package's own.
	p.SourceName = name
	p.SourceVersion = p.Version
	rec.multiArchSame = f.multiArch == "same"
	if src := f.source; src != "" {
		p.SourceName, _, _ = strings.Cut(src, " ")
		if _, rest, ok := strings.Cut(src, "("); ok {
			v, _, _ := strings.Cut(rest, ")")
			p.SourceVersion = v
		}
	}
	return rec, nil
}

// checkDpkgTriggers applies dpkg's rules tying the trigger fields to the
// status: pending triggers only in triggers-pending or -awaited, awaited
// ones only between half-installed and triggers-awaited, and those two
// states only with their field.
func checkDpkgTriggers(pending, awaited, state string) error {
	switch {
	case pending != "" && state != "triggers-pending" && state != "triggers-awaited":
		return fmt.Errorf("package has status %s but triggers are pending", state)
	case awaited != "" && (state == "not-installed" || state == "config-files" || state == "triggers-pending" || state == "installed"):
		return fmt.Errorf("package has status %s but triggers are awaited", state)
	case state == "triggers-pending" && pending == "":
		return errors.New("package has status triggers-pending but no triggers pending")
	case state == "triggers-awaited" && awaited == "":
		return errors.New("package has status triggers-awaited but no triggers awaited")
	}
	return nil
}

// dpkgVersion is [epoch:]upstream[-revision].
type dpkgVersion struct {
	epoch         uint32
	explicitEpoch bool
	upstream      string
	revision      string
}

// parseDpkgVersion splits a version as dpkg's parseversion does: the epoch
// before the first colon, the revision after the last hyphen.
func parseDpkgVersion(s string) (dpkgVersion, error) {
	var v dpkgVersion
	s = strings.TrimSpace(s)
	if s == "" {
		return v, errors.New("version string is empty")
	}
	if strings.ContainsAny(s, " \t\n") {
		return v, errors.New("version string has embedded spaces")
	}
	if e, rest, ok := strings.Cut(s, ":"); ok {
		if e == "" {
			return v, errors.New("epoch in version is empty")
		}
		n, err := strconv.ParseUint(e, 10, 31)
		if err != nil {
			return v, fmt.Errorf("epoch in version is not a number: %w", err)
		}
		if rest == "" {
			return v, errors.New("nothing after colon in version number")
		}
		v.epoch, v.explicitEpoch, s = uint32(n), true, rest
	}
	if i := strings.LastIndexByte(s, '-'); i >= 0 {
		v.upstream, v.revision = s[:i], s[i+1:]
		if v.revision == "" {
			return v, errors.New("revision number is empty")
		}
	} else {
		v.upstream = s
	}
	if v.upstream == "" {
		return v, errors.New("version number is empty")
	}
	return v, nil
}

// String prints the version as dpkg-query's ${Version} does: the epoch
// only when non-zero or when a colon elsewhere would make it ambiguous.
func (v dpkgVersion) String() string {
	var sb strings.Builder
	if v.epoch != 0 || strings.Contains(v.upstream, ":") || strings.Contains(v.revision, ":") {
		sb.WriteString(strconv.FormatUint(uint64(v.epoch), 10))
		sb.WriteByte(':')
	}
	sb.WriteString(v.upstream)
	if v.revision != "" {
		sb.WriteByte('-')
		sb.WriteString(v.revision)
	}
	return sb.String()
}

// readDpkg reads the status file and the journal in updates/ that dpkg
// applies over it, and returns the packages dpkg-query -W lists: every one
// not in state not-installed. Install times come from the info files'
// mtimes, else from dpkg.log.
func readDpkg(root *hostfs.Root) ([]*nodewardv1.Package, error) {
	b, err := readWhole(root, dpkgStatusPath, maxDpkgStatus)
	if err != nil {
		return nil, err
	}
	recs, err := parseDpkgStatusBytes(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dpkgStatusPath, err)
	}
	recs, err = applyDpkgUpdates(root, recs)
	if err != nil {
		return nil, err
	}
	var listed []dpkgRecord
	for _, r := range recs {
		if r.pkg.State != "not-installed" {
			listed = append(listed, r)
		}
	}
	dpkgInstallTimes(root, listed)
	pkgs := make([]*nodewardv1.Package, len(listed))
	for i, r := range listed {
		pkgs[i] = r.pkg
	}
	return pkgs, nil
}

// readWhole reads a regular file through the host root into a buffer
// sized by its length, in one read where the kernel allows.
func readWhole(root *hostfs.Root, name string, max int64) ([]byte, error) {
	f, err := root.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if fi.Size() > max {
		return nil, fmt.Errorf("%s: %w of %d bytes", name, hostfs.ErrTooLarge, max)
	}
	// One byte more than the size shows a file that grew meanwhile.
	b := make([]byte, 0, fi.Size()+1)
	for {
		n, err := f.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if errors.Is(err, io.EOF) || (err == nil && n == 0) {
			return b, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if len(b) == cap(b) {
			if int64(len(b)) > max {
				return nil, fmt.Errorf("%s: %w of %d bytes", name, hostfs.ErrTooLarge, max)
			}
			b = append(b, 0)[:len(b)]
		}
	}
}

// applyDpkgUpdates overlays the numbered journal files dpkg leaves in
// updates/ after an interrupted run; dpkg-query reads them too.
func applyDpkgUpdates(root *hostfs.Root, recs []dpkgRecord) ([]dpkgRecord, error) {
	ents, err := root.ReadDir(dpkgUpdatesDir)
	if errors.Is(err, fs.ErrNotExist) {
		return recs, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		if n := e.Name(); n != "" && strings.Trim(n, "0123456789") == "" {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return recs, nil
	}
	slices.Sort(names)
	index := map[string]int{}
	for i, r := range recs {
		index[r.pkg.Name+":"+r.pkg.Arch] = i
	}
	for _, n := range names {
		p := dpkgUpdatesDir + "/" + n
		b, err := root.ReadFile(p, maxDpkgStatus)
		if err != nil {
			return nil, err
		}
		upd, err := parseDpkgStatusBytes(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		for _, u := range upd {
			k := u.pkg.Name + ":" + u.pkg.Arch
			if i, ok := index[k]; ok {
				recs[i] = u
			} else {
				index[k] = len(recs)
				recs = append(recs, u)
			}
		}
	}
	return recs, nil
}

// dpkgInstallTimes sets each package's install time from the mtime of its
// info/NAME.list (or NAME:ARCH.list) file, which dpkg rewrites on every
// unpack; packages without one fall back to their last "status installed"
// line in dpkg.log. Missing evidence leaves the time unset.
func dpkgInstallTimes(root *hostfs.Root, recs []dpkgRecord) {
	info, err := openInfoDir(root)
	switch {
	case err == nil:
		defer info.Close()
	case errors.Is(err, fs.ErrNotExist):
		info = &dpkgInfoDirFD{fd: -1} // no info directory: no file to stat
	}
	var missing []*nodewardv1.Package
	for _, r := range recs {
		p := r.pkg
		switch p.State {
		case "config-files", "half-installed":
			continue // no file list: nothing of the package is installed
		}
		// dpkg names the files NAME:ARCH.* for Multi-Arch: same packages,
		// NAME.* otherwise; the other name is tried only if that fails.
		names := [2]string{p.Name + ".list", p.Name + ":" + p.Arch + ".list"}
		if r.multiArchSame {
			names[0], names[1] = names[1], names[0]
		}
		var (
			mtime time.Time
			found bool
		)
		for _, n := range names {
			if mtime, found = info.mtime(root, n); found {
				break
			}
		}
		if found {
			p.InstallTime = timestamppb.New(mtime)
			p.InstallTimeSource = nodewardv1.InstallTimeSource_INSTALL_TIME_SOURCE_DPKG_INFO_MTIME
			continue
		}
		missing = append(missing, p)
	}
	if len(missing) == 0 {
		return
	}
	f, err := root.Open(dpkgLogPath)
	if err != nil {
		return
	}
	defer f.Close()
	times, err := parseDpkgLog(io.LimitReader(f, maxDpkgLogBytes), hostLocation(root))
	if err != nil {
		return
	}
	for _, p := range missing {
		if t, ok := times[p.Name+":"+p.Arch+" "+p.Version]; ok {
			p.InstallTime = timestamppb.New(t)
			p.InstallTimeSource = nodewardv1.InstallTimeSource_INSTALL_TIME_SOURCE_DPKG_LOG
		}
	}
}

// dpkgInfoDir is an O_PATH descriptor of dpkg's info directory, so each
// package's file costs one fstatat. Nil when it could not be opened (mtime
// then falls back to hostfs.Root.Stat); fd -1 when there is none.
type dpkgInfoDirFD struct{ fd int }

// openInfoDir opens the info directory that hostfs resolves inside the
// host root, and checks after opening that the descriptor is still that
// directory (a symlink swapped in between cannot lead it outside the
// root). File names come from package names, a single path component,
// and are stat'ed without following symlinks.
func openInfoDir(root *hostfs.Root) (*dpkgInfoDirFD, error) {
	p, err := root.RealPath(dpkgInfoDir)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Open(p, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if got, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd)); err != nil || got != p {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("%s moved while opening it", dpkgInfoDir)
	}
	return &dpkgInfoDirFD{fd}, nil
}

func (d *dpkgInfoDirFD) Close() {
	if d.fd >= 0 {
		_ = unix.Close(d.fd)
	}
}

// mtime returns the modification time of the regular file name in the
// info directory.
func (d *dpkgInfoDirFD) mtime(root *hostfs.Root, name string) (time.Time, bool) {
	if strings.ContainsRune(name, '/') || name == ".." || name == "." {
		return time.Time{}, false
	}
	if d != nil && d.fd < 0 {
		return time.Time{}, false
	}
	if d == nil {
		fi, err := root.Stat(dpkgInfoDir + "/" + name)
		if err != nil || !fi.Mode().IsRegular() {
			return time.Time{}, false
		}
		return fi.ModTime(), true
	}
	var st unix.Stat_t
	for {
		err := unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
			return time.Time{}, false
		}
		return time.Unix(st.Mtim.Unix()), true
	}
}

// hostLocation is the host's time zone (etc/localtime), which dpkg.log's
// times are written in; UTC when it cannot be read.
func hostLocation(root *hostfs.Root) *time.Location {
	b, err := root.ReadFile("/etc/localtime", 1<<20)
	if err != nil {
		return time.UTC
	}
	loc, err := time.LoadLocationFromTZData("localtime", b)
	if err != nil {
		return time.UTC
	}
	return loc
}

// parseDpkgLog returns, for each "NAME:ARCH VERSION", the time of its last
// "status installed" line. Lines that are not status lines are skipped.
func parseDpkgLog(r io.Reader, loc *time.Location) (map[string]time.Time, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	out := map[string]time.Time{}
	for sc.Scan() {
		line := sc.Text()
		// "2024-01-31 12:00:00 status installed bash:amd64 5.2.15-2+b13"
		if len(line) < 20 || !strings.HasPrefix(line[19:], " status installed ") {
			continue
		}
		rest := line[len("2024-01-31 12:00:00 status installed "):]
		pkg, ver, ok := strings.Cut(rest, " ")
		if !ok || strings.Contains(ver, " ") || !strings.Contains(pkg, ":") {
			continue
		}
		t, err := time.ParseInLocation(time.DateTime, line[:19], loc)
		if err != nil {
			continue
		}
		out[pkg+" "+ver] = t
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("dpkg.log: %w", err)
	}
	return out, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
