package inventory

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"

	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
)

const (
	apkInstalledPath = "lib/apk/db/installed"
	maxAPKInstalled  = 256 << 20
)

// errAPKFormat is apk's own "database file format error": apk refuses the
// whole database, and so do we.
var errAPKFormat = errors.New("database file format error")

// apkInfoFields are the package fields apk-tools 2 knows (apk_pkg_add_info);
// apkFDBFields are the installed-database fields that follow them (files,
// directories, ACLs, checksums, replaces...).
const (
	apkInfoFields = "PVTULADCSIpiomtck"
	apkFDBFields  = "FMRZrqasf"
)

// parseAPKInstalled reads lib/apk/db/installed with the rules apk-tools 2
// applies when it opens the database (apk_db_fdb_read): lines of "X:value",
// a line shorter than two bytes ends a package, every package needs P and
// V, file entries need their directory (R after F, Z and a after R, M after
// F), and an unknown field after the file list means a newer apk wrote it.
// Any breach refuses the whole database, as apk does, with the line.
func parseAPKInstalled(r io.Reader) ([]*nodewardv1.Package, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	var (
		out     []*nodewardv1.Package
		cur     *nodewardv1.Package
		hasName bool
		hasVer  bool
		inFDB   bool // the package has reached its file list
		hasDir  bool
		hasFile bool // apk keeps the last file across packages
		lineNo  int
	)
	finish := func() error {
		if cur == nil {
			return nil
		}
		if !hasName {
			return fmt.Errorf("line %d: %w: a package has no name (P:)", lineNo, errAPKFormat)
		}
		if !hasVer {
			return fmt.Errorf("line %d: %w: package %q has no version (V:)", lineNo, errAPKFormat, cur.Name)
		}
		out = append(out, cur)
		cur = nil
		return nil
	}
	for sc.Scan() {
		lineNo++
		l := sc.Bytes()
		if len(l) < 2 {
			if err := finish(); err != nil {
				return nil, err
			}
			continue
		}
		if l[1] != ':' {
			return nil, fmt.Errorf("line %d: %w: %q is not a field", lineNo, errAPKFormat, truncate(string(l), 40))
		}
		field, value := l[0], string(l[2:])
		if cur == nil {
			cur = &nodewardv1.Package{Manager: nodewardv1.PackageManager_PACKAGE_MANAGER_APK, State: "installed"}
			hasName, hasVer, inFDB, hasDir = false, false, false, false
		}
		switch {
		case strings.IndexByte(apkInfoFields, field) >= 0:
			switch field {
			case 'P':
				cur.Name, hasName = value, true
			case 'V':
				cur.Version, hasVer = value, true
			case 'A':
				cur.Arch = value
			case 'o':
				cur.SourceName = value
			}
			continue
		case strings.IndexByte(apkFDBFields, field) >= 0:
			inFDB = true
		default:
			// Unknown fields are ignored before the file list and refused
			// after it (apk: "This apk-tools is too old").
			if !inFDB {
				continue
			}
			return nil, fmt.Errorf("line %d: %w: unknown field %q in package %s (written by a newer apk?)", lineNo, errAPKFormat, field, cur.Name)
		}
		bad := false
		switch field {
		case 'F':
			bad = !hasName
			hasDir = true
		case 'R':
			bad = !hasDir
			hasFile = hasDir
		case 'M':
			bad = !hasDir
		case 'a':
			bad = !hasFile || !hasDir
		case 'Z':
			bad = !hasFile
		}
		if bad {
			return nil, fmt.Errorf("line %d: %w: FDB entry '%c' out of place in package %s", lineNo, errAPKFormat, field, cur.Name)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("line %d: %w", lineNo+1, err)
	}
	if err := finish(); err != nil {
		return nil, err
	}
	for _, p := range out {
		// Subpackages share their origin's pkgver-pkgrel, so the origin's
		// version is the package's.
		if p.SourceName != "" {
			p.SourceVersion = p.Version
		}
	}
	return out, nil
}
