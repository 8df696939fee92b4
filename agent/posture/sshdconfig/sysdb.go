package sshdconfig

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// sysDB is what sshd asks the name service for, read from the root's own
// files: users and groups for Match Group and "~" paths, /etc/hosts for
// ListenAddress names, /etc/services for port names.
type sysDB struct {
	users    []passwdEntry
	groups   []groupEntry
	hosts    map[string][]netip.Addr
	services map[string]int
}

type passwdEntry struct {
	name string
	uid  int
	gid  int
	home string
}

type groupEntry struct {
	name    string
	gid     int
	members []string
}

const maxSysFile = 16 << 20

func loadSysDB(root FS) *sysDB {
	db := &sysDB{hosts: map[string][]netip.Addr{}, services: map[string]int{}}
	if b, err := root.ReadFile("/etc/passwd", maxSysFile); err == nil {
		db.users = ParsePasswd(strings.NewReader(string(b)))
	}
	if b, err := root.ReadFile("/etc/group", maxSysFile); err == nil {
		db.groups = ParseGroup(strings.NewReader(string(b)))
	}
	if b, err := root.ReadFile("/etc/hosts", maxSysFile); err == nil {
		db.hosts = ParseHosts(strings.NewReader(string(b)))
	}
	if b, err := root.ReadFile("/etc/services", maxSysFile); err == nil {
		db.services = ParseServices(strings.NewReader(string(b)))
	}
	return db
}

func colonLines(r io.Reader, fields int, fn func([]string)) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, ":")
		if len(f) < fields {
			continue
		}
		fn(f)
	}
}

// ParsePasswd parses /etc/passwd; malformed lines are skipped, as glibc does.
func ParsePasswd(r io.Reader) []passwdEntry {
	var out []passwdEntry
	colonLines(r, 7, func(f []string) {
		uid, err1 := strconv.Atoi(f[2])
		gid, err2 := strconv.Atoi(f[3])
		if err1 != nil || err2 != nil || f[0] == "" {
			return
		}
		out = append(out, passwdEntry{name: f[0], uid: uid, gid: gid, home: f[5]})
	})
	return out
}

// ParseGroup parses /etc/group.
func ParseGroup(r io.Reader) []groupEntry {
	var out []groupEntry
	colonLines(r, 4, func(f []string) {
		gid, err := strconv.Atoi(f[2])
		if err != nil || f[0] == "" {
			return
		}
		var members []string
		for _, m := range strings.Split(f[3], ",") {
			if m = strings.TrimSpace(m); m != "" {
				members = append(members, m)
			}
		}
		out = append(out, groupEntry{name: f[0], gid: gid, members: members})
	})
	return out
}

// ParseHosts parses /etc/hosts into name -> addresses in file order.
func ParseHosts(r io.Reader) map[string][]netip.Addr {
	out := map[string][]netip.Addr{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		a, err := netip.ParseAddr(f[0])
		if err != nil {
			continue
		}
		for _, n := range f[1:] {
			n = strings.ToLower(n)
			out[n] = append(out[n], a)
		}
	}
	return out
}

// ParseServices parses /etc/services for tcp ports by name and alias.
func ParseServices(r io.Reader) map[string]int {
	out := map[string]int{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		num, proto, ok := strings.Cut(f[1], "/")
		if !ok || proto != "tcp" {
			continue
		}
		p, err := strconv.Atoi(num)
		if err != nil || p < 0 || p > 65535 {
			continue
		}
		for _, n := range append([]string{f[0]}, f[2:]...) {
			if _, dup := out[n]; !dup {
				out[n] = p
			}
		}
	}
	return out
}

func (db *sysDB) user(name string) (passwdEntry, bool) {
	for _, u := range db.users {
		if u.name == name {
			return u, true
		}
	}
	return passwdEntry{}, false
}

// userInGroups is sshd's match_cfg_line_group: the user's groups (primary
// and supplementary, by name) against a pattern list; a negated match wins.
func (db *sysDB) userInGroups(user, patterns string) bool {
	pw, ok := db.user(user)
	if !ok {
		return false
	}
	var names []string
	seen := map[int]bool{}
	add := func(gid int) {
		if seen[gid] {
			return
		}
		seen[gid] = true
		for _, g := range db.groups {
			if g.gid == gid {
				names = append(names, g.name)
				return
			}
		}
	}
	add(pw.gid)
	for _, g := range db.groups {
		for _, m := range g.members {
			if m == user {
				add(g.gid)
			}
		}
	}
	found := false
	for _, n := range names {
		switch matchPatternList(n, patterns, false) {
		case -1:
			return false
		case 1:
			found = true
		}
	}
	return found
}

// tildeExpand is sshd's tilde_expand_filename for uid 0 (sshd -T runs as
// root): "~" and "~/x" use root's home, "~user/x" that user's.
func (db *sysDB) tildeExpand(p string) (string, error) {
	if !strings.HasPrefix(p, "~") {
		return p, nil
	}
	name, rest, hasSlash := strings.Cut(p[1:], "/")
	var pw passwdEntry
	var ok bool
	if name == "" {
		for _, u := range db.users {
			if u.uid == 0 {
				pw, ok = u, true
				break
			}
		}
	} else {
		pw, ok = db.user(name)
	}
	if !ok {
		return "", fmt.Errorf("tilde_expand_filename: No such user %s", name)
	}
	if !hasSlash {
		return pw.home, nil
	}
	sep := "/"
	if strings.HasSuffix(pw.home, "/") {
		sep = ""
	}
	return pw.home + sep + rest, nil
}

// Services reads the root's /etc/services for -C lport names.
func Services(root FS) map[string]int {
	b, err := root.ReadFile("/etc/services", maxSysFile)
	if err != nil {
		return map[string]int{}
	}
	return ParseServices(strings.NewReader(string(b)))
}
