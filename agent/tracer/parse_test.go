package tracer

import (
	"bytes"
	"encoding/binary"
	"slices"
	"strings"
	"testing"
	"unsafe"
)

func TestParseStat(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     procStat
		err      bool
	}{
		{"plain", "1234 (bash) S 1200 1234 1234 34816 1300 4194304 1862 4420 0 0 2 1 3 1 20 0 1 0 137217 9261056 1287 18446744073709551615 1 1 0 0 0 0 65536 3686404 1266761467 0 0 0 17 1 0 0 0 0 0\n",
			procStat{"bash", 1200, 137217}, false},
		{"comm with spaces and parens", "77 (a) b (c)) R 1 77 77 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 42 0 0 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n",
			procStat{"a) b (c)", 1, 42}, false},
		{"kernel thread", "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 1 0 0 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n",
			procStat{"kthreadd", 0, 1}, false},
		{"truncated", "1 (init) S 0 1 1", procStat{}, true},
		{"no comm", "1 init S 0", procStat{}, true},
		{"bad ppid", "1 (x) S -3 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 5 0 0", procStat{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStat(strings.NewReader(tc.in))
			if (err != nil) != tc.err {
				t.Fatalf("err = %v, want error %v", err, tc.err)
			}
			if !tc.err && got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseStatus(t *testing.T) {
	in := "Name:\tsudo\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t1000\t0\t0\t0\nGid:\t1000\t27\t27\t27\nGroups:\t27 1000\n"
	got, err := parseStatus(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if want := (procStatus{uid: 1000, euid: 0, gid: 1000}); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	for _, bad := range []string{"Name:\tx\n", "Uid:\t1\nGid:\t1 2 3 4\n", "Uid:\tx y z w\nGid:\t1 1 1 1\n"} {
		if _, err := parseStatus(strings.NewReader(bad)); err == nil {
			t.Errorf("parseStatus(%q): no error", bad)
		}
	}
}

func TestParseCgroupMounts(t *testing.T) {
	hybrid := `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`
	v2only := "26 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n"
	v1 := "30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw shared:7 - cgroup cgroup rw,cpu,cpuacct\n33 25 0:29 / /sys/fs/cgroup/memory\\040x rw shared:10 - cgroup cgroup rw,memory\n"
	for _, tc := range []struct {
		name, in string
		want     [numHier]string
	}{
		{"hybrid", hybrid, [numHier]string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup/memory"}},
		{"v2", v2only, [numHier]string{"/sys/fs/cgroup", ""}},
		{"v1 escaped", v1, [numHier]string{"", "/sys/fs/cgroup/memory x"}},
		{"garbage", "no separator here\n - \n", [numHier]string{}},
	} {
		got, err := parseCgroupMounts(strings.NewReader(tc.in))
		if err != nil || got != tc.want {
			t.Errorf("%s: got %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
}

func TestRelCgroupPath(t *testing.T) {
	const host = "/proc/1/root/sys/fs/cgroup/memory"
	for _, tc := range []struct{ link, want string }{
		{"/proc/1/root/sys/fs/cgroup/memory/kubepods/pod1", "/kubepods/pod1"},
		{"/proc/1/root/sys/fs/cgroup/memory", "/"},
		{"/sys/fs/cgroup/memory/a", "/a"},
		{"/sys/fs/cgroup/memoryx/a", "/sys/fs/cgroup/memoryx/a"},
	} {
		if got := relCgroupPath(tc.link, host, "/sys/fs/cgroup/memory"); got != tc.want {
			t.Errorf("relCgroupPath(%q) = %q, want %q", tc.link, got, tc.want)
		}
	}
}

// execRecord builds an exec record the way the BPF program lays it out.
func execRecord(hdr bpfExecEvent, filename string, cwdLeafFirst []string, args []string) []byte {
	var tail bytes.Buffer
	tail.WriteString(filename)
	tail.WriteByte(0)
	hdr.FilenameLen = uint16(tail.Len())
	for _, c := range cwdLeafFirst {
		tail.WriteString(c)
		tail.WriteByte(0)
	}
	hdr.CwdLen = uint16(tail.Len()) - hdr.FilenameLen
	for _, a := range args {
		tail.WriteString(a)
		tail.WriteByte(0)
	}
	hdr.ArgsLen = uint16(tail.Len()) - hdr.FilenameLen - hdr.CwdLen
	hdr.Type = eventExec
	rec := make([]byte, execHeaderLen)
	copy(rec, unsafe.Slice((*byte)(unsafe.Pointer(&hdr)), execHeaderLen))
	return append(rec, tail.Bytes()...)
}

func TestDecodeExec(t *testing.T) {
	rec := execRecord(bpfExecEvent{Pid: 42, Ppid: 1, Uid: 1000, StartTicks: 99, Comm: [16]uint8{'c', 'u', 'r', 'l'}},
		"/usr/bin/curl", []string{"src", "me", "home"}, []string{"curl", "-s", "", "https://x"})
	var x rawExec
	if err := decodeExec(rec, &x, nil); err != nil {
		t.Fatal(err)
	}
	if x.hdr.Pid != 42 || x.hdr.Ppid != 1 || x.hdr.Uid != 1000 || x.hdr.StartTicks != 99 || interner(nil).get(x.hdr.Comm[:]) != "curl" {
		t.Errorf("header %+v", x.hdr)
	}
	if x.filename != "/usr/bin/curl" || x.cwd != "/home/me/src" || !slices.Equal(x.args, []string{"curl", "-s", "", "https://x"}) {
		t.Errorf("strings: %q %q %q", x.filename, x.cwd, x.args)
	}
	// cut short
	if err := decodeExec(rec[:len(rec)-3], &x, nil); err == nil {
		t.Error("no error for a cut record")
	}
	if err := decodeExec(rec[:10], &x, nil); err == nil {
		t.Error("no error for a record shorter than its header")
	}
}

func TestCwdAndArgs(t *testing.T) {
	if got := cwdFromComponents(nil, false); got != "/" {
		t.Errorf("root cwd = %q", got)
	}
	if got := cwdFromComponents([]byte("c\x00b\x00"), true); got != "…/b/c" {
		t.Errorf("truncated cwd = %q", got)
	}
	// A last argument cut by the size bound has no NUL.
	if got := splitArgs([]byte("a\x00bb\x00cc")); !slices.Equal(got, []string{"a", "bb", "cc"}) {
		t.Errorf("splitArgs = %q", got)
	}
	if got := splitArgs(nil); got != nil {
		t.Errorf("splitArgs(nil) = %q", got)
	}
}

func TestRedactor(t *testing.T) {
	r := DefaultRedactor()
	for _, tc := range []struct{ in, want []string }{
		{[]string{"mysql", "--password=hunter2", "db"}, []string{"mysql", "--password=****", "db"}},
		{[]string{"app", "--db-password", "hunter2", "--port", "5"}, []string{"app", "--db-password", "hunter2", "--port", "5"}},
		{[]string{"app", "--password", "hunter2", "--port", "5"}, []string{"app", "--password", "****", "--port", "5"}},
		{[]string{"env", "AWS_SECRET_ACCESS_KEY=abc/def", "AWS_REGION=eu-west-1"}, []string{"env", "AWS_SECRET_ACCESS_KEY=****", "AWS_REGION=eu-west-1"}},
		{[]string{"git", "clone", "https://bob:s3cret@example.com/r.git"}, []string{"git", "clone", "https://bob:****@example.com/r.git"}},
		{[]string{"curl", "-H", "Authorization: Bearer eyJhbGciOi.abc"}, []string{"curl", "-H", "Authorization: Bearer ****"}},
		{[]string{"kubectl", "--token=abc", "get", "pods"}, []string{"kubectl", "--token=****", "get", "pods"}},
		{[]string{"go", "build", "-p", "4", "-o", "x"}, []string{"go", "build", "-p", "4", "-o", "x"}},
		{[]string{"/bin/true", "plain", "a=b"}, []string{"/bin/true", "plain", "a=b"}},
		{[]string{"--password=x"}, []string{"--password=x"}}, // argv[0] is the program
	} {
		in := slices.Clone(tc.in)
		got := r.Args(in)
		if !slices.Equal(got, tc.want) {
			t.Errorf("Args(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if !slices.Equal(in, tc.in) {
			t.Errorf("Args modified its input: %q", in)
		}
	}
	custom, err := NewRedactor([]string{`^--db-url=\w+://\w+:(\w+)@`}, []string{"--vault-token"})
	if err != nil {
		t.Fatal(err)
	}
	got := custom.Args([]string{"app", "--db-url=pg://u:pw@h", "--vault-token", "t0k"})
	if want := []string{"app", "--db-url=pg://u:****@h", "--vault-token", "****"}; !slices.Equal(got, want) {
		t.Errorf("custom = %q, want %q", got, want)
	}
	if _, err := NewRedactor([]string{"("}, nil); err == nil {
		t.Error("no error for a bad pattern")
	}
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte("1234 (bash) S 1200 1234 1234 34816 1300 4194304 1862 4420 0 0 2 1 3 1 20 0 1 0 137217 9261056 1287"))
	f.Add([]byte("1 ((x)) S 0"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := parseStat(bytes.NewReader(b))
		if err != nil {
			return
		}
		// comm is what stands between the first '(' and the last ')', made
		// valid UTF-8.
		raw := string(b[bytes.IndexByte(b, '(')+1 : bytes.LastIndexByte(b, ')')])
		if s.comm != validUTF8(raw) {
			t.Errorf("comm %q, want %q from %q", s.comm, validUTF8(raw), b)
		}
	})
}

func FuzzParseStatus(f *testing.F) {
	f.Add([]byte("Uid:\t1000\t0\t0\t0\nGid:\t1000\t27\t27\t27\n"))
	f.Fuzz(func(t *testing.T, b []byte) { _, _ = parseStatus(bytes.NewReader(b)) })
}

func FuzzParseCgroupMounts(f *testing.F) {
	f.Add([]byte("41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n35 31 0:32 / /sys/fs/cgroup/memory\\040x rw - cgroup cgroup rw,memory\n"))
	f.Fuzz(func(t *testing.T, b []byte) { _, _ = parseCgroupMounts(bytes.NewReader(b)) })
}

// FuzzDecodeExec feeds arbitrary records to the decoder: it must reject or
// decode, never panic or read past the record.
func FuzzDecodeExec(f *testing.F) {
	f.Add(execRecord(bpfExecEvent{Pid: 1}, "/bin/true", []string{"tmp"}, []string{"true", "x"}))
	f.Add(make([]byte, execHeaderLen))
	f.Fuzz(func(t *testing.T, rec []byte) {
		var x, y rawExec
		err := decodeExec(rec, &x, nil)
		if yerr := decodeExec(rec, &y, interner{}); (err != nil) != (yerr != nil) || x.filename != y.filename {
			t.Fatalf("with an interner: %v %q, without: %v %q", yerr, y.filename, err, x.filename)
		}
		if err != nil {
			return
		}
		if len(rec) < execHeaderLen {
			t.Fatal("decoded a record shorter than its header")
		}
		n := int(binary.LittleEndian.Uint16(rec[2:])) + int(binary.LittleEndian.Uint16(rec[4:])) + int(binary.LittleEndian.Uint16(rec[6:]))
		if n > len(rec)-execHeaderLen {
			t.Fatalf("decoded strings of %d bytes from a %d-byte tail", n, len(rec)-execHeaderLen)
		}
	})
}

// cwdSplit is cwdFromComponents written plainly, for the fuzzer to hold it to.
func cwdSplit(b []byte, truncated bool) string {
	if len(b) == 0 && !truncated {
		return "/"
	}
	parts := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
	if len(b) == 0 {
		parts = nil
	}
	out := ""
	if truncated {
		out = "…"
	}
	for i := len(parts) - 1; i >= 0; i-- {
		out += "/" + parts[i]
	}
	return out
}

func FuzzCwdFromComponents(f *testing.F) {
	f.Add([]byte("src\x00me\x00home\x00"), false)
	f.Add([]byte("c\x00\x00b"), true)
	f.Add([]byte{}, true)
	f.Fuzz(func(t *testing.T, b []byte, truncated bool) {
		if got, want := cwdFromComponents(b, truncated), cwdSplit(b, truncated); got != want {
			t.Fatalf("cwdFromComponents(%q, %v) = %q, want %q", b, truncated, got, want)
		}
	})
}

func FuzzRedact(f *testing.F) {
	f.Add("--password=x", "y")
	f.Add("https://a:b@c", "Bearer abcdefghijkl")
	r := DefaultRedactor()
	f.Fuzz(func(t *testing.T, a, b string) {
		in := []string{"prog", a, b}
		out := r.Args(in)
		if len(out) != len(in) || in[1] != a || in[2] != b {
			t.Fatalf("Args changed its input or length: %q -> %q", in, out)
		}
		if again := r.Args(out); !slices.Equal(again, out) {
			t.Fatalf("masking is not stable: %q -> %q -> %q", in, out, again)
		}
	})
}
