package sshdconfig

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"regexp"
	"strconv"
	"strings"
)

// FS is what the evaluator reads: a host root (hostfs.Root satisfies it).
type FS interface {
	ReadFile(name string, max int64) ([]byte, error)
	ReadDir(name string) ([]fs.DirEntry, error)
}

// Profile is what one OpenSSH build compiles in: its defaults and the
// algorithms it supports, which `+`, `-` and `^` lists are resolved against.
type Profile struct {
	// Version is the upstream version, e.g. "9.2p1".
	Version string
	// Vendor is the distribution whose build this is ("debian", "ubuntu"),
	// or "" for upstream defaults.
	Vendor string
	// Package is the distribution package version, e.g. "1:9.2p1-2+deb12u10".
	Package string
	// Source says where the version was read.
	Source string
	// Verified is true when these defaults were checked against that
	// build's own `sshd -T`.
	Verified bool

	num int // 92 for 9.2

	defCiphers, defMACs, defKex string
	allCiphers, allMACs, allKex string
	kbdDefault                  bool
}

// Name is a short description, e.g. "OpenSSH 9.2p1 (debian 1:9.2p1-2+deb12u10)".
func (p *Profile) Name() string {
	s := "OpenSSH " + p.Version
	if p.Vendor != "" || p.Package != "" {
		s += " (" + strings.TrimSpace(p.Vendor+" "+p.Package) + ")"
	}
	return s
}

const (
	allCiphers = "3des-cbc,aes128-cbc,aes192-cbc,aes256-cbc,aes128-ctr,aes192-ctr,aes256-ctr,aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com"
	allMACs    = "hmac-sha1,hmac-sha1-96,hmac-sha2-256,hmac-sha2-512,hmac-md5,hmac-md5-96,umac-64@openssh.com,umac-128@openssh.com,hmac-sha1-etm@openssh.com,hmac-sha1-96-etm@openssh.com,hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com,hmac-md5-etm@openssh.com,hmac-md5-96-etm@openssh.com,umac-64-etm@openssh.com,umac-128-etm@openssh.com"
	allKex89   = "diffie-hellman-group1-sha1,diffie-hellman-group14-sha1,diffie-hellman-group14-sha256,diffie-hellman-group16-sha512,diffie-hellman-group18-sha512,diffie-hellman-group-exchange-sha1,diffie-hellman-group-exchange-sha256,ecdh-sha2-nistp256,ecdh-sha2-nistp384,ecdh-sha2-nistp521,curve25519-sha256,curve25519-sha256@libssh.org,sntrup761x25519-sha512@openssh.com"
	allKex92   = "diffie-hellman-group1-sha1,diffie-hellman-group14-sha1,diffie-hellman-group14-sha256,diffie-hellman-group16-sha512,diffie-hellman-group18-sha512,diffie-hellman-group-exchange-sha1,diffie-hellman-group-exchange-sha256,ecdh-sha2-nistp256,ecdh-sha2-nistp384,ecdh-sha2-nistp521,curve25519-sha256,curve25519-sha256@libssh.org,sntrup761x25519-sha512,sntrup761x25519-sha512@openssh.com"
	defCiphers = "chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr,aes128-gcm@openssh.com,aes256-gcm@openssh.com"
	defMACs    = "umac-64-etm@openssh.com,umac-128-etm@openssh.com,hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com,hmac-sha1-etm@openssh.com,umac-64@openssh.com,umac-128@openssh.com,hmac-sha2-256,hmac-sha2-512,hmac-sha1"
	kexTail    = "diffie-hellman-group-exchange-sha256,diffie-hellman-group16-sha512,diffie-hellman-group18-sha512,diffie-hellman-group14-sha256"
	kexEC      = "curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256,ecdh-sha2-nistp384,ecdh-sha2-nistp521"
)

// profiles are the builds whose defaults are known, keyed by
// "version/vendor". A vendor of "" holds upstream's defaults for versions
// no distribution profile covers.
var profiles = map[string]Profile{
	// Debian 12: the fixture's and this project's CI sshd -T agree.
	"9.2p1/debian": {Verified: true, num: 92, defCiphers: defCiphers, defMACs: defMACs,
		defKex:     "sntrup761x25519-sha512,sntrup761x25519-sha512@openssh.com," + kexEC + "," + kexTail,
		allCiphers: allCiphers, allMACs: allMACs, allKex: allKex92, kbdDefault: true},
	// Ubuntu 22.04: checked against the fixture's recorded sshd -T.
	"8.9p1/ubuntu": {Verified: true, num: 89, defCiphers: defCiphers, defMACs: defMACs,
		defKex:     kexEC + ",sntrup761x25519-sha512@openssh.com," + kexTail,
		allCiphers: allCiphers, allMACs: allMACs, allKex: allKex89, kbdDefault: true},
	"8.9p1/": {num: 89, defCiphers: defCiphers, defMACs: defMACs,
		defKex:     kexEC + ",sntrup761x25519-sha512@openssh.com," + kexTail,
		allCiphers: allCiphers, allMACs: allMACs, allKex: allKex89, kbdDefault: true},
	"9.2p1/": {num: 92, defCiphers: defCiphers, defMACs: defMACs,
		defKex:     "sntrup761x25519-sha512@openssh.com," + kexEC + "," + kexTail,
		allCiphers: allCiphers, allMACs: allMACs, allKex: allKex89, kbdDefault: true},
}

// ErrUnknownVersion is returned when the root's OpenSSH build has no known
// defaults.
var ErrUnknownVersion = errors.New("no known defaults for this OpenSSH build")

// DetectProfile finds the OpenSSH server installed on the root: the dpkg
// status of openssh-server first, then the version string inside the sshd
// binary. The vendor comes from os-release.
func DetectProfile(root FS) (*Profile, error) {
	vendor := osID(root)
	var version, pkg, src string
	if b, err := root.ReadFile("/var/lib/dpkg/status", 64<<20); err == nil {
		if v, ok := dpkgVersion(bytes.NewReader(b), "openssh-server"); ok {
			pkg, src = v, "/var/lib/dpkg/status (openssh-server "+v+")"
			version = upstreamFromDpkg(v)
		}
	}
	if version == "" {
		for _, bin := range []string{"/usr/sbin/sshd", "/usr/bin/sshd", "/sbin/sshd"} {
			b, err := root.ReadFile(bin, 32<<20)
			if err != nil {
				continue
			}
			if m := sshdVersionRE.FindSubmatch(b); m != nil {
				version, src = string(m[1]), bin+" ("+string(m[0])+")"
				break
			}
		}
	}
	if version == "" {
		return nil, errors.New("openssh-server not found: no dpkg record and no sshd binary with a version string")
	}
	return ProfileFor(version, vendor, pkg, src)
}

// ProfileFor returns the profile of an upstream version built by vendor:
// the vendor's own build when it is known, else upstream's defaults for
// the same release series (8.7-8.9, 9.0-9.8), marked unverified. Older
// releases tokenise differently and newer ones changed defaults: unknown.
func ProfileFor(version, vendor, pkg, src string) (*Profile, error) {
	num, ok := versionNum(version)
	if !ok {
		return nil, fmt.Errorf("%w: cannot read OpenSSH version %q (%s)", ErrUnknownVersion, version, src)
	}
	p, ok := profiles[version+"/"+vendor]
	if !ok {
		vendor = ""
		switch {
		case num >= 87 && num <= 89:
			p, ok = profiles["8.9p1/"]
		case num >= 90 && num <= 98:
			p, ok = profiles["9.2p1/"]
		}
	}
	if !ok {
		return nil, fmt.Errorf("%w: OpenSSH %s (%s)", ErrUnknownVersion, version, src)
	}
	p.Version, p.Vendor, p.Package, p.Source, p.num = version, vendor, pkg, src, num
	return &p, nil
}

// versionNum turns "9.2p1" into 92.
func versionNum(v string) (int, bool) {
	base, _, _ := strings.Cut(v, "p")
	maj, minor, ok := strings.Cut(base, ".")
	if !ok {
		return 0, false
	}
	a, err1 := strconv.Atoi(maj)
	b, err2 := strconv.Atoi(minor)
	if err1 != nil || err2 != nil || a < 0 || b < 0 || b > 9 {
		return 0, false
	}
	return a*10 + b, true
}

var sshdVersionRE = regexp.MustCompile(`OpenSSH_([0-9]+\.[0-9]+p[0-9]+)`)

// upstreamFromDpkg turns "1:9.2p1-2+deb12u10" into "9.2p1".
func upstreamFromDpkg(v string) string {
	if _, rest, ok := strings.Cut(v, ":"); ok {
		v = rest
	}
	if i := strings.LastIndexByte(v, '-'); i >= 0 {
		v = v[:i]
	}
	return v
}

// dpkgVersion finds an installed package's version in a dpkg status file.
func dpkgVersion(r io.Reader, name string) (string, bool) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	var pkg, ver, status string
	flush := func() (string, bool) {
		if pkg == name && ver != "" && strings.HasSuffix(status, " installed") {
			return ver, true
		}
		return "", false
	}
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			if v, ok := flush(); ok {
				return v, true
			}
			pkg, ver, status = "", "", ""
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch k {
		case "Package":
			pkg = strings.TrimSpace(v)
		case "Version":
			ver = strings.TrimSpace(v)
		case "Status":
			status = strings.TrimSpace(v)
		}
	}
	return flush()
}

func osID(root FS) string {
	for _, p := range []string{"/etc/os-release", "/usr/lib/os-release"} {
		b, err := root.ReadFile(p, 64<<10)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "ID="); ok {
				if u, err := strconv.Unquote(v); err == nil {
					v = u
				}
				return strings.Trim(v, `'"`)
			}
		}
	}
	return ""
}
