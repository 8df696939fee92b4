// Package pkgver orders package versions by the rules of the package's own
// manager: dpkg's (deb-version(7)) and rpm's (rpmvercmp). Queries such as
// "nodes with openssl older than 3.0.8" compare with it.
package pkgver

import (
	"strconv"
	"strings"

	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
)

// Version is a parsed [epoch:]version[-release]; the parts a query leaves
// out are not compared.
type Version struct {
	Epoch      uint64
	HasEpoch   bool
	Version    string
	Release    string
	HasRelease bool
}

// Parse splits s into epoch, version and release: the epoch ends at the
// first ':', the release starts after the last '-'.
func Parse(s string) Version {
	var v Version
	if i := strings.IndexByte(s, ':'); i >= 0 {
		if e, err := strconv.ParseUint(s[:i], 10, 32); err == nil {
			v.Epoch, v.HasEpoch = e, true
			s = s[i+1:]
		}
	}
	if i := strings.LastIndexByte(s, '-'); i >= 0 {
		v.Release, v.HasRelease = s[i+1:], true
		s = s[:i]
	}
	v.Version = s
	return v
}

// OfPackage is a package's own version. dpkg packages carry the full
// version string; rpm and apk packages carry epoch, version and release
// apart.
func OfPackage(p *nodewardv1.Package) Version {
	if p.GetManager() == nodewardv1.PackageManager_PACKAGE_MANAGER_DPKG {
		v := Parse(p.GetVersion())
		if !v.HasEpoch {
			v.HasEpoch = true // dpkg: no epoch is epoch 0
		}
		return v
	}
	v := Version{Version: p.GetVersion(), Release: p.GetRelease(), HasRelease: p.GetRelease() != "", HasEpoch: true}
	if p.Epoch != nil {
		v.Epoch = uint64(p.GetEpoch())
	}
	return v
}

// ComparePackage compares p's version with the query version q by p's
// manager's rules, ignoring the epoch or release when q gives none (so
// "3.0.8" matches every 3.0.8 build). apk has no comparator here: it is
// ordered by rpm's rules, which agree on the common N.N.N-rN shapes.
func ComparePackage(p *nodewardv1.Package, q Version) int {
	pv := OfPackage(p)
	cmp := RPM
	if p.GetManager() == nodewardv1.PackageManager_PACKAGE_MANAGER_DPKG {
		cmp = Dpkg
	}
	if q.HasEpoch {
		if pv.Epoch != q.Epoch {
			if pv.Epoch < q.Epoch {
				return -1
			}
			return 1
		}
	}
	if c := cmp(pv.Version, q.Version); c != 0 {
		return c
	}
	if q.HasRelease {
		return cmp(pv.Release, q.Release)
	}
	return 0
}

// Satisfies reports whether p's version relates to q as op says; an
// unspecified op matches every version.
func Satisfies(p *nodewardv1.Package, op nodewardv1.VersionOp, q Version) bool {
	if op == nodewardv1.VersionOp_VERSION_OP_UNSPECIFIED {
		return true
	}
	c := ComparePackage(p, q)
	switch op {
	case nodewardv1.VersionOp_VERSION_OP_LT:
		return c < 0
	case nodewardv1.VersionOp_VERSION_OP_LE:
		return c <= 0
	case nodewardv1.VersionOp_VERSION_OP_EQ:
		return c == 0
	case nodewardv1.VersionOp_VERSION_OP_GE:
		return c >= 0
	case nodewardv1.VersionOp_VERSION_OP_GT:
		return c > 0
	case nodewardv1.VersionOp_VERSION_OP_NE:
		return c != 0
	}
	return false
}

// ParseOp reads a version constraint such as "<3.0.8", ">=1:2.0-1" or
// "3.0.8" (equal).
func ParseOp(s string) (nodewardv1.VersionOp, string) {
	for _, c := range []struct {
		p  string
		op nodewardv1.VersionOp
	}{
		{"<=", nodewardv1.VersionOp_VERSION_OP_LE}, {">=", nodewardv1.VersionOp_VERSION_OP_GE},
		{"!=", nodewardv1.VersionOp_VERSION_OP_NE}, {"==", nodewardv1.VersionOp_VERSION_OP_EQ},
		{"<", nodewardv1.VersionOp_VERSION_OP_LT}, {">", nodewardv1.VersionOp_VERSION_OP_GT},
		{"=", nodewardv1.VersionOp_VERSION_OP_EQ},
	} {
		if strings.HasPrefix(s, c.p) {
			return c.op, strings.TrimSpace(s[len(c.p):])
		}
	}
	return nodewardv1.VersionOp_VERSION_OP_EQ, strings.TrimSpace(s)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isAlpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// dpkgOrder is dpkg's weight of a non-digit character: '~' before the end,
// the end before letters, letters before everything else.
func dpkgOrder(s string, i int) int {
	if i >= len(s) {
		return 0
	}
	c := s[i]
	switch {
	case isDigit(c):
		return 0
	case isAlpha(c):
		return int(c)
	case c == '~':
		return -1
	}
	return int(c) + 256
}

// Dpkg compares two upstream versions or two revisions as dpkg's
// verrevcmp does.
func Dpkg(a, b string) int {
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		firstDiff := 0
		for (i < len(a) && !isDigit(a[i])) || (j < len(b) && !isDigit(b[j])) {
			ac, bc := dpkgOrder(a, i), dpkgOrder(b, j)
			if ac != bc {
				return sign(ac - bc)
			}
			i++
			j++
		}
		for i < len(a) && a[i] == '0' {
			i++
		}
		for j < len(b) && b[j] == '0' {
			j++
		}
		for i < len(a) && isDigit(a[i]) && j < len(b) && isDigit(b[j]) {
			if firstDiff == 0 {
				firstDiff = int(a[i]) - int(b[j])
			}
			i++
			j++
		}
		if i < len(a) && isDigit(a[i]) {
			return 1
		}
		if j < len(b) && isDigit(b[j]) {
			return -1
		}
		if firstDiff != 0 {
			return sign(firstDiff)
		}
	}
	return 0
}

// DpkgFull compares two whole dpkg versions, epoch and revision included.
func DpkgFull(a, b string) int {
	va, vb := Parse(a), Parse(b)
	if va.Epoch != vb.Epoch {
		if va.Epoch < vb.Epoch {
			return -1
		}
		return 1
	}
	if c := Dpkg(va.Version, vb.Version); c != 0 {
		return c
	}
	return Dpkg(va.Release, vb.Release)
}

func sign(n int) int {
	switch {
	case n < 0:
		return -1
	case n > 0:
		return 1
	}
	return 0
}

func rpmSep(c byte) bool { return !isDigit(c) && !isAlpha(c) && c != '~' && c != '^' }

// RPM compares two version or release strings as rpm's rpmvercmp does,
// tilde (sorts before anything) and caret (sorts after the base, before
// anything longer) included.
func RPM(a, b string) int {
	if a == b {
		return 0
	}
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		for i < len(a) && rpmSep(a[i]) {
			i++
		}
		for j < len(b) && rpmSep(b[j]) {
			j++
		}
		if (i < len(a) && a[i] == '~') || (j < len(b) && b[j] == '~') {
			if i >= len(a) || a[i] != '~' {
				return 1
			}
			if j >= len(b) || b[j] != '~' {
				return -1
			}
			i++
			j++
			continue
		}
		if (i < len(a) && a[i] == '^') || (j < len(b) && b[j] == '^') {
			if i >= len(a) {
				return -1
			}
			if j >= len(b) {
				return 1
			}
			if a[i] != '^' {
				return 1
			}
			if b[j] != '^' {
				return -1
			}
			i++
			j++
			continue
		}
		if i >= len(a) || j >= len(b) {
			break
		}
		si, sj := i, j
		num := isDigit(a[i])
		if num {
			for i < len(a) && isDigit(a[i]) {
				i++
			}
			for j < len(b) && isDigit(b[j]) {
				j++
			}
		} else {
			for i < len(a) && isAlpha(a[i]) {
				i++
			}
			for j < len(b) && isAlpha(b[j]) {
				j++
			}
		}
		sa, sb := a[si:i], b[sj:j]
		if sb == "" {
			// Numeric segments are newer than alphabetic ones.
			if num {
				return 1
			}
			return -1
		}
		if num {
			sa = strings.TrimLeft(sa, "0")
			sb = strings.TrimLeft(sb, "0")
			if len(sa) != len(sb) {
				if len(sa) < len(sb) {
					return -1
				}
				return 1
			}
		}
		if c := strings.Compare(sa, sb); c != 0 {
			return c
		}
	}
	if i >= len(a) && j >= len(b) {
		return 0
	}
	if i >= len(a) {
		return -1
	}
	return 1
}
