package inventory

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nodeward/nodeward/agent/hostfs"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
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

// dpkgSpace is what dpkg trims around values (C isspace, newline aside).
const dpkgSpace = " \t\r\v\f"

// dpkgField is one field of a stanza, as slices of the file.
type dpkgField struct {
	name, value []byte
	valueStart  int // offset of value in the file, for continuation lines
}

var (
	dpkgWants  = []string{"unknown", "install", "hold", "deinstall", "purge"}
	dpkgFlags  = []string{"ok", "reinstreq", "hold", "hold-reinstreq"}
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
			last.value = bytes.TrimRight(b[last.valueStart:end], dpkgSpace)
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
				if bytes.EqualFold(f.name, name) {
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
			fields = append(fields, dpkgField{name: name, value: bytes.TrimRight(b[vs:end], dpkgSpace), valueStart: vs})
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

// dpkgValue returns the value of a field of the stanza.
func dpkgValue(fields []dpkgField, name string) (string, bool) {
	for _, f := range fields {
		if asciiEqualFold(f.name, name) {
			return string(f.value), true
		}
	}
	return "", false
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

func dpkgRecordFrom(f []dpkgField) (dpkgRecord, error) {
	name, ok := dpkgValue(f, "Package")
	if !ok {
		return dpkgRecord{}, errors.New("missing Package field")
	}
	// dpkg folds package names to lower case and allows only these.
	name = strings.ToLower(name)
	if name == "" || !isAlnum(name[0]) || strings.Trim(name, "abcdefghijklmnopqrstuvwxyz0123456789-+.") != "" {
		return dpkgRecord{}, fmt.Errorf("invalid package name %q", name)
	}
	arch, _ := dpkgValue(f, "Architecture")
	p := &nodewardv1.Package{
		Name:    name,
		Arch:    arch,
		Manager: nodewardv1.PackageManager_PACKAGE_MANAGER_DPKG,
	}
	rec := dpkgRecord{pkg: p, want: "unknown"}
	p.State = "not-installed"
	if st, ok := dpkgValue(f, "Status"); ok {
		words := strings.Fields(st)
		if len(words) != 3 {
			return rec, fmt.Errorf("package %s: Status %q: want three words", name, st)
		}
		if !slices.Contains(dpkgWants, words[0]) || !slices.Contains(dpkgFlags, words[1]) || !slices.Contains(dpkgStates, words[2]) {
			return rec, fmt.Errorf("package %s: Status %q: invalid package status", name, st)
		}
		rec.want, p.State = words[0], words[2]
	}
	if v, ok := dpkgValue(f, "Version"); ok {
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
	if err := checkDpkgTriggers(f, p.State); err != nil {
		return rec, fmt.Errorf("package %s: %w", name, err)
	}
	// ${source:Package} and ${source:Version}: the Source field's name and
	// parenthesised version, defaulting to the binary package's own.
	p.SourceName = name
	p.SourceVersion = p.Version
	if ma, _ := dpkgValue(f, "Multi-Arch"); ma == "same" {
		rec.multiArchSame = true
	}
	if src, _ := dpkgValue(f, "Source"); src != "" {
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
func checkDpkgTriggers(f []dpkgField, state string) error {
	pending, _ := dpkgValue(f, "Triggers-Pending")
	awaited, _ := dpkgValue(f, "Triggers-Awaited")
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
	b, err := root.ReadFile(dpkgStatusPath, maxDpkgStatus)
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
	var missing []*nodewardv1.Package
	for _, r := range recs {
		p := r.pkg
		switch p.State {
		case "config-files", "half-installed":
			continue // no file list: nothing of the package is installed
		}
		// dpkg names the files NAME:ARCH.* for Multi-Arch: same packages,
		// NAME.* otherwise; the other name is tried only if that fails.
		names := []string{p.Name + ".list", p.Name + ":" + p.Arch + ".list"}
		if r.multiArchSame {
			names[0], names[1] = names[1], names[0]
		}
		var fi fs.FileInfo
		err := fs.ErrNotExist
		for _, n := range names {
			if fi, err = root.Stat(dpkgInfoDir + "/" + n); err == nil {
				break
			}
		}
		if err == nil && fi.Mode().IsRegular() {
			p.InstallTime = timestamppb.New(fi.ModTime())
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
