package sshdconfig

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"testing/fstest"
)

func TestSplitLines(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []string
	}{
		{"plain", "a b\nc d\n", []string{"a b", "c d", ""}},
		{"leading blanks and CR", " \t\rPort 22\r\n", []string{"Port 22\r", ""}},
		{"no final newline", "Port 22", []string{"Port 22"}},
		{"NUL ends the line and joins the next", "Port 2\x002\nX11Forwarding yes\n", []string{"Port 2X11Forwarding yes", ""}},
		{"empty", "", []string{""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := SplitLines(strings.NewReader(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("SplitLines(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestStrdelim(t *testing.T) {
	for _, tc := range []struct {
		in, tok, rest string
		ok            bool
	}{
		{"Port 22", "Port", "22", true},
		{"Port=22", "Port", "22", true},
		{"Port = 22", "Port", "22", true},
		{"Port  =  22", "Port", "22", true},
		{"Port==22", "Port", "=22", true},
		{`"a b" c`, "a b", "c", true},
		{`x"a b" c`, "xa b", "c", true},
		{`"open`, "", "", false},
		{"word", "word", "", true},
		{" lead", "", "lead", true},
	} {
		tok, rest, ok, _ := strdelim(tc.in)
		if tok != tc.tok || rest != tc.rest || ok != tc.ok {
			t.Errorf("strdelim(%q) = %q, %q, %v; want %q, %q, %v", tc.in, tok, rest, ok, tc.tok, tc.rest, tc.ok)
		}
	}
}

func TestArgvSplit(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		err  bool
	}{
		{"a b  c", []string{"a", "b", "c"}, false},
		{`"a b" 'c d'`, []string{"a b", "c d"}, false},
		{`a\ b`, []string{"a b"}, false},
		{`a\"b \\ \x`, []string{`a"b`, `\`, `\x`}, false},
		{"a # comment", []string{"a"}, false},
		{"a#b", []string{"a#b"}, false},
		{`"unterminated`, nil, true},
		{`x"y`, nil, true},
		{"", nil, false},
	} {
		got, err := argvSplit(tc.in)
		if (err != nil) != tc.err || (!tc.err && !reflect.DeepEqual(got, tc.want)) {
			t.Errorf("argvSplit(%q) = %q, %v; want %q, err %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestMatchPatternList(t *testing.T) {
	for _, tc := range []struct {
		s, list string
		lower   bool
		want    int
	}{
		{"alice", "alice", false, 1},
		{"alice", "a*", false, 1},
		{"alice", "al?ce", false, 1},
		{"alice", "bob,carol", false, 0},
		{"alice", "*,!alice", false, -1},
		{"Alice", "alice", false, 0},
		{"Host.Example.COM", "*.example.com", true, 1},
		{"", "*", false, 1},
	} {
		if got := matchPatternList(tc.s, tc.list, tc.lower); got != tc.want {
			t.Errorf("matchPatternList(%q, %q) = %d, want %d", tc.s, tc.list, got, tc.want)
		}
	}
}

func TestAddrMatchList(t *testing.T) {
	for _, tc := range []struct {
		addr, list string
		want       int
	}{
		{"10.1.2.3", "10.0.0.0/8", 1},
		{"10.1.2.3", "10.0.0.0/8,!10.1.0.0/16", -1},
		{"192.168.1.7", "192.168.1.*", 1},
		{"2001:db8::1", "2001:db8::/32", 1},
		{"2001:db8::1", "10.0.0.0/8", 0},
		{"10.0.0.1", "10.0.0.1/8", -2}, // host bits set
		{"10.0.0.1", "10.0.0.0/33", -2},
		{"10.0.0.1", "a,,b", -2},
		{"not-an-ip", "*", 0},
		{"", "10.0.0.0/8", 0},
	} {
		if got := addrMatchList(tc.addr, tc.list); got != tc.want {
			t.Errorf("addrMatchList(%q, %q) = %d, want %d", tc.addr, tc.list, got, tc.want)
		}
	}
}

func TestConvtime(t *testing.T) {
	for in, want := range map[string]int{"120": 120, "1m30s": 90, "2h": 7200, "1w": 604800, "1W1d": 691200, "": -1, "5x": -1, "m": -1, "99999999999": -1} {
		if got := convtime(in); got != want {
			t.Errorf("convtime(%q) = %d, want %d", in, got, want)
		}
	}
}

func TestAssemble(t *testing.T) {
	for _, tc := range []struct{ list, want string }{
		{"-*-cbc,aes128*", "chacha20-poly1305@openssh.com,aes192-ctr,aes256-ctr,aes256-gcm@openssh.com"},
		{"+3des-cbc", defCiphers + ",3des-cbc"},
		{"^3des-cbc", "3des-cbc," + defCiphers},
		{"aes256-ctr,aes256-ctr", "aes256-ctr"},
	} {
		got, err := assemble(tc.list, defCiphers, allCiphers)
		if err != nil || got != tc.want {
			t.Errorf("assemble(%q) = %q, %v; want %q", tc.list, got, err, tc.want)
		}
	}
}

func TestDpkgVersion(t *testing.T) {
	status := "Package: openssh-client\nStatus: install ok installed\nVersion: 1:9.2p1-2\n\n" +
		"Package: openssh-server\nStatus: deinstall ok config-files\nVersion: 1:8.0p1-1\n\n" +
		"Package: openssh-server\nStatus: install ok installed\nVersion: 1:9.2p1-2+deb12u10\n"
	v, ok := dpkgVersion(strings.NewReader(status), "openssh-server")
	if !ok || v != "1:9.2p1-2+deb12u10" || upstreamFromDpkg(v) != "9.2p1" {
		t.Errorf("dpkgVersion = %q, %v (upstream %q)", v, ok, upstreamFromDpkg(v))
	}
}

// mapFS serves an in-memory tree to the evaluator, for fuzzing.
type mapFS struct{ m fstest.MapFS }

func (f mapFS) ReadFile(name string, max int64) ([]byte, error) {
	b, err := f.m.ReadFile(strings.TrimPrefix(name, "/"))
	if err == nil && int64(len(b)) > max {
		return nil, ErrTooLarge
	}
	return b, err
}

func (f mapFS) ReadDir(name string) ([]fs.DirEntry, error) {
	n := strings.Trim(name, "/")
	if n == "" {
		n = "."
	}
	return f.m.ReadDir(n)
}

// FuzzEvaluate feeds arbitrary bytes as sshd_config and as an included
// file: the evaluator must answer (config or error) and never panic.
func FuzzEvaluate(f *testing.F) {
	cases, _ := filepath.Glob("testdata/cases/*/etc/ssh/sshd_config")
	for _, c := range cases {
		if b, err := os.ReadFile(c); err == nil {
			f.Add(b, []byte("PasswordAuthentication yes\nMatch User alice\nPermitRootLogin yes\n"), "user=alice,addr=10.0.0.1,lport=22")
		}
	}
	f.Add([]byte("Include /etc/ssh/d/*.conf\nInclude d/x.conf\n"), []byte("Include /etc/ssh/d/x.conf\n"), "")
	f.Add([]byte("\x00\xff\xfe Match\tAll\n\"\n="), []byte("Port 0"), "lport=x")
	f.Fuzz(func(t *testing.T, main, inc []byte, spec string) {
		fsys := mapFS{fstest.MapFS{
			"etc/ssh/sshd_config": {Data: main},
			"etc/ssh/d/x.conf":    {Data: inc},
			"etc/passwd":          {Data: []byte("root:x:0:0::/root:/bin/sh\nalice:x:1:1::/home/alice:/bin/sh\n")},
			"etc/group":           {Data: []byte("admins:x:5:alice\n")},
		}}
		prof, err := ProfileFor("9.2p1", "debian", "", "fuzz")
		if err != nil {
			t.Fatal(err)
		}
		var ci *ConnInfo
		if spec != "" {
			if ci, err = ParseConnSpec(spec, nil); err != nil {
				return
			}
		}
		cfg, err := Evaluate(fsys, prof, ci)
		if err == nil {
			_ = cfg.Lines()
		}
	})
}

func TestProfileFor(t *testing.T) {
	for _, tc := range []struct {
		version, vendor string
		verified        bool
		num             int
		unknown         bool
	}{
		{"9.2p1", "debian", true, 92, false},
		{"8.9p1", "ubuntu", true, 89, false},
		{"8.7p1", "amzn", false, 87, false},
		{"9.6p1", "ubuntu", false, 96, false},
		{"9.2p1", "", false, 92, false},
		{"7.4p1", "amzn", false, 0, true},
		{"10.0p1", "debian", false, 0, true},
		{"garbage", "", false, 0, true},
	} {
		p, err := ProfileFor(tc.version, tc.vendor, "", "test")
		if tc.unknown {
			if !errors.Is(err, ErrUnknownVersion) {
				t.Errorf("%s/%s: err = %v, want ErrUnknownVersion", tc.version, tc.vendor, err)
			}
			continue
		}
		if err != nil || p.Verified != tc.verified || p.num != tc.num {
			t.Errorf("%s/%s: %+v, %v; want verified %v num %d", tc.version, tc.vendor, p, err, tc.verified, tc.num)
		}
	}
}

// TestUnverifiedBuildSkipsUnknownKeywords: a vendor build we have not
// verified may know keywords we do not; they are listed, not fatal. A
// verified build refuses them as its sshd does.
func TestUnverifiedBuildSkipsUnknownKeywords(t *testing.T) {
	fsys := mapFS{fstest.MapFS{"etc/ssh/sshd_config": {Data: []byte("GSSAPIEnablek5users yes\nRequiredRSASize 2048\nPermitRootLogin no\n")}}}
	amzn, err := ProfileFor("8.7p1", "amzn", "", "test")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Evaluate(fsys, amzn, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Unrecognised) != 2 || cfg.Value("permitrootlogin") != "no" {
		t.Errorf("unrecognised %q, permitrootlogin %q", cfg.Unrecognised, cfg.Value("permitrootlogin"))
	}
	deb, _ := ProfileFor("9.2p1", "debian", "", "test")
	if _, err := Evaluate(fsys, deb, nil); err == nil || !strings.Contains(err.Error(), "Bad configuration option: GSSAPIEnablek5users") {
		t.Errorf("verified build: err = %v", err)
	}
}

// TestHostilePatternsStayFast: sshd's recursive wildcard match is
// exponential in stars; ours must answer a hostile pattern at once.
func TestHostilePatternsStayFast(t *testing.T) {
	user := strings.Repeat("a", 200)
	pat := strings.Repeat("*a", 100) + "z"
	if matchPattern(user, pat) {
		t.Error("matched a pattern ending in z")
	}
	if !matchPattern(user, strings.Repeat("*a", 100)) {
		t.Error("did not match")
	}
	for _, tc := range []struct {
		s, p string
		want bool
	}{
		{"abc", "a*c", true}, {"abc", "a?c", true}, {"ac", "a?c", false}, {"abc", "*", true},
		{"", "?", false}, {"aXbXc", "a*b*c", true}, {"abcb", "*b", true}, {"abcd", "*b", false},
	} {
		if got := matchPattern(tc.s, tc.p); got != tc.want {
			t.Errorf("matchPattern(%q, %q) = %v", tc.s, tc.p, got)
		}
	}
}
