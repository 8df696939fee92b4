package inventory

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nodeward/nodeward/agent/hostfs"
	"github.com/nodeward/nodeward/agent/source"
	"github.com/nodeward/nodeward/internal/testutil"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"golang.org/x/sys/unix"
)

// portsHelperEnv makes the test binary a helper process that listens inside
// the network namespace it was started in (by ip netns exec).
const portsHelperEnv = "NODEWARD_PORTS_HELPER"

func init() {
	switch os.Getenv(portsHelperEnv) {
	case "1", "loopback":
		os.Exit(portsHelper())
	case "scan":
		os.Exit(scanHelper())
	}
}

// scanHelper runs ScanPorts and prints each host-namespace port as
// "PROTOCOL ADDRESS PORT INODE", then each error as "error ...".
func scanHelper() int {
	inv, err := ScanPorts(context.Background(), &source.Env{Proc: "/proc"})
	for _, p := range inv.GetPorts() {
		if p.GetHostNetns() {
			fmt.Println(p.GetProtocol(), p.GetAddress(), p.GetPort(), p.GetSocketInode())
		}
	}
	if err != nil {
		fmt.Println("error", err)
	}
	return 0
}

// portsHelper listens on TCP [::] and UDP 0.0.0.0 (on loopback when
// NODEWARD_PORTS_HELPER is "loopback"), prints the ports, and holds them
// until its stdin closes.
func portsHelper() int {
	tcpAddr, udpAddr := "[::]:0", "0.0.0.0:0"
	if os.Getenv(portsHelperEnv) == "loopback" {
		tcpAddr, udpAddr = "[::1]:0", "127.0.0.1:0"
	}
	tcp, err := net.Listen("tcp6", tcpAddr)
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	udp, err := net.ListenPacket("udp4", udpAddr)
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("ready", tcp.Addr().(*net.TCPAddr).Port, udp.LocalAddr().(*net.UDPAddr).Port)
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	return 0
}

func TestExposureOf(t *testing.T) {
	for addr, want := range map[string]nodewardv1.Exposure{
		"0.0.0.0":          nodewardv1.Exposure_EXPOSURE_ANY,
		"::":               nodewardv1.Exposure_EXPOSURE_ANY,
		"::ffff:0.0.0.0":   nodewardv1.Exposure_EXPOSURE_ANY,
		"127.0.0.1":        nodewardv1.Exposure_EXPOSURE_LOOPBACK,
		"127.0.0.53":       nodewardv1.Exposure_EXPOSURE_LOOPBACK,
		"::1":              nodewardv1.Exposure_EXPOSURE_LOOPBACK,
		"::ffff:127.0.0.1": nodewardv1.Exposure_EXPOSURE_LOOPBACK,
		"10.0.1.17":        nodewardv1.Exposure_EXPOSURE_SPECIFIC,
		"169.254.20.10":    nodewardv1.Exposure_EXPOSURE_SPECIFIC,
		"fe80::1":          nodewardv1.Exposure_EXPOSURE_SPECIFIC,
	} {
		if got := exposureOf(netip.MustParseAddr(addr)); got != want {
			t.Errorf("exposureOf(%s) = %v, want %v", addr, got, want)
		}
	}
}

func TestParseNSLink(t *testing.T) {
	tests := []struct {
		in, kind string
		want     uint64
		ok       bool
	}{
		{"net:[4026531833]", "net", 4026531833, true},
		{"socket:[42708]", "socket", 42708, true},
		{"socket:[42708]", "net", 0, false},
		{"pipe:[42708]", "socket", 0, false},
		{"anon_inode:[eventpoll]", "anon_inode", 0, false},
		{"socket:[]", "socket", 0, false},
		{"socket:[0]", "socket", 0, false},
		{"socket:[+5]", "socket", 0, false},
		{"socket:[5", "socket", 0, false},
		{"/dev/null", "socket", 0, false},
		{"socket:[99999999999999999999999]", "socket", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseNSLink([]byte(tt.in), tt.kind)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseNSLink(%q, %q) = %d, %v; want %d, %v", tt.in, tt.kind, got, ok, tt.want, tt.ok)
		}
	}
}

func TestParseFD(t *testing.T) {
	for in, want := range map[string]int{"0": 0, "7": 7, "65535": 65535, "2147483647": 2147483647} {
		if got, ok := parseFD([]byte(in)); !ok || got != want {
			t.Errorf("parseFD(%q) = %d, %v", in, got, ok)
		}
	}
	for _, in := range []string{"", ".", "..", "-1", "1a", "2147483648", "99999999999"} {
		if got, ok := parseFD([]byte(in)); ok {
			t.Errorf("parseFD(%q) = %d, want rejected", in, got)
		}
	}
}

func TestSplitCmdline(t *testing.T) {
	for in, want := range map[string][]string{
		"":                         nil,
		"/usr/sbin/sshd\x00-D\x00": {"/usr/sbin/sshd", "-D"},
		"nginx: master process":    {"nginx: master process"},
		"a\x00\x00b\x00":           {"a", "", "b"},
	} {
		if got := splitCmdline([]byte(in)); !slices.Equal(got, want) {
			t.Errorf("splitCmdline(%q) = %q, want %q", in, got, want)
		}
	}
}

// dirent builds one struct linux_dirent64.
func dirent(name string) []byte {
	reclen := (19 + len(name) + 1 + 7) &^ 7
	b := make([]byte, reclen)
	binary.NativeEndian.PutUint64(b, 1)
	binary.NativeEndian.PutUint16(b[16:], uint16(reclen))
	b[18] = unix.DT_LNK
	copy(b[19:], name)
	return b
}

func TestWalkDirents(t *testing.T) {
	var buf []byte
	for _, n := range []string{".", "..", "0", "1", "1023"} {
		buf = append(buf, dirent(n)...)
	}
	var got []string
	if err := walkDirents(buf, func(name []byte) bool { got = append(got, string(name)); return true }); err != nil {
		t.Fatal(err)
	}
	if want := []string{".", "..", "0", "1", "1023"}; !slices.Equal(got, want) {
		t.Errorf("names = %q, want %q", got, want)
	}
	got = nil
	_ = walkDirents(buf, func(name []byte) bool { got = append(got, string(name)); return len(got) < 2 })
	if len(got) != 2 {
		t.Errorf("walk did not stop when told: %q", got)
	}
	bad := dirent("5")
	binary.NativeEndian.PutUint16(bad[16:], 200)
	if err := walkDirents(bad, func([]byte) bool { return true }); err == nil {
		t.Error("record longer than the buffer accepted")
	}
	if err := walkDirents(buf[:10], func([]byte) bool { return true }); err == nil {
		t.Error("truncated record accepted")
	}
	// The real thing: getdents64 on this process's own fd directory.
	fd, err := unix.Open("/proc/self/fd", unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	b := make([]byte, 8192)
	n, err := unix.Getdents(fd, b)
	if err != nil {
		t.Fatal(err)
	}
	got = nil
	if err := walkDirents(b[:n], func(name []byte) bool { got = append(got, string(name)); return true }); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(got, strconv.Itoa(fd)) || !slices.Contains(got, "0") {
		t.Errorf("own fd directory read as %q, lacks fd %d", got, fd)
	}
}

func FuzzWalkDirents(f *testing.F) {
	f.Add(append(dirent("."), dirent("12")...))
	f.Add(dirent("socket"))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		total := 0
		_ = walkDirents(b, func(name []byte) bool {
			total += 19 + len(name)
			if _, ok := parseFD(name); ok && len(name) == 0 {
				t.Errorf("empty name parsed as fd")
			}
			return true
		})
		if total > len(b) {
			t.Errorf("names and headers span %d bytes of a %d-byte buffer", total, len(b))
		}
	})
}

func FuzzParseNSLink(f *testing.F) {
	f.Add("socket:[42708]")
	f.Add("net:[4026531833]")
	f.Add("socket:[")
	f.Fuzz(func(t *testing.T, s string) {
		for _, kind := range []string{"socket", "net"} {
			n, ok := parseNSLink([]byte(s), kind)
			if ok && s != kind+":["+strconv.FormatUint(n, 10)+"]" {
				t.Errorf("parseNSLink(%q) = %d, which does not print back", s, n)
			}
		}
	})
}

// ssSocket is one line of ss -ltnupHe.
type ssSocket struct {
	proto string
	addr  netip.Addr // invalid for ss's "*"
	port  uint32
	inode uint64
	uid   uint32
	pids  []uint32
}

var (
	ssPid   = regexp.MustCompile(`\bpid=(\d+)`)
	ssInode = regexp.MustCompile(`\bino:(\d+)`)
	ssUID   = regexp.MustCompile(`\buid:(\d+)`)
)

// runSS runs ss -ltnupHe (inside netns when it is not empty) and parses it.
func runSS(t *testing.T, netns string) map[uint64]ssSocket {
	t.Helper()
	args := []string{"-ltnupHe"}
	cmd := "ss"
	if netns != "" {
		cmd, args = "ip", append([]string{"netns", "exec", netns, "ss"}, args...)
	}
	out, err := exec.Command(cmd, args...).Output()
	if err != nil {
		t.Fatalf("%s %v: %v", cmd, args, err)
	}
	socks := map[uint64]ssSocket{}
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) < 6 {
			t.Fatalf("ss line %q: too few fields", line)
		}
		s := ssSocket{proto: f[0]}
		local := f[4]
		i := strings.LastIndexByte(local, ':')
		if i < 0 {
			t.Fatalf("ss line %q: local address %q has no port", line, local)
		}
		port, err := strconv.ParseUint(local[i+1:], 10, 16)
		if err != nil {
			t.Fatalf("ss line %q: port: %v", line, err)
		}
		s.port = uint32(port)
		host, _, _ := strings.Cut(local[:i], "%") // "127.0.0.53%lo": bound to a device
		host = strings.Trim(host, "[]")
		if host != "*" {
			if s.addr, err = netip.ParseAddr(host); err != nil {
				t.Fatalf("ss line %q: address: %v", line, err)
			}
		}
		rest := strings.Join(f[6:], " ")
		m := ssInode.FindStringSubmatch(rest)
		if m == nil {
			t.Fatalf("ss line %q: no inode", line)
		}
		s.inode, _ = strconv.ParseUint(m[1], 10, 64)
		if m := ssUID.FindStringSubmatch(rest); m != nil {
			uid, _ := strconv.ParseUint(m[1], 10, 32)
			s.uid = uint32(uid)
		}
		for _, m := range ssPid.FindAllStringSubmatch(rest, -1) {
			pid, _ := strconv.ParseUint(m[1], 10, 32)
			s.pids = append(s.pids, uint32(pid))
		}
		socks[s.inode] = s
	}
	return socks
}

// compareWithSS checks ours against two ss runs taken before and after it:
// a socket present in both must be ours, with the same address, port, uid
// and an owner among the processes ss names; every socket of ours must
// appear in one of them. Other work on the machine opens and closes
// sockets meanwhile; only what was stable across the three readings is
// judged.
func compareWithSS(ours []*nodewardv1.ListeningPort, before, after map[uint64]ssSocket) []string {
	var problems []string
	byInode := map[uint64]*nodewardv1.ListeningPort{}
	for _, p := range ours {
		byInode[p.SocketInode] = p
		_, inB := before[p.SocketInode]
		_, inA := after[p.SocketInode]
		if !inB && !inA {
			problems = append(problems, fmt.Sprintf("ours only: %v", p))
		}
	}
	for ino, s := range before {
		s2, stable := after[ino]
		if !stable {
			continue
		}
		p := byInode[ino]
		if p == nil {
			problems = append(problems, fmt.Sprintf("ss only: %+v", s))
			continue
		}
		proto := map[nodewardv1.Protocol]string{nodewardv1.Protocol_PROTOCOL_TCP: "tcp", nodewardv1.Protocol_PROTOCOL_UDP: "udp"}[p.Protocol]
		addrOK := p.Address == s.addr.String() || (!s.addr.IsValid() && netip.MustParseAddr(p.Address).IsUnspecified())
		if proto != s.proto || !addrOK || p.Port != s.port || p.Uid != s.uid {
			problems = append(problems, fmt.Sprintf("differs: ours %v, ss %+v", p, s))
		}
		if !slices.Equal(s.pids, s2.pids) {
			continue // its holders changed meanwhile
		}
		switch {
		case len(s.pids) == 0 && p.Pid != 0:
			problems = append(problems, fmt.Sprintf("ours has owner %d, ss none: %+v", p.Pid, s))
		case len(s.pids) == 0 && p.OwnerUnknownReason == "":
			problems = append(problems, fmt.Sprintf("no owner and no reason: %v", p))
		case p.Pid != 0 && p.OwnerUnknownReason != "":
			problems = append(problems, fmt.Sprintf("owner %d with a reason it is unknown: %v", p.Pid, p))
		case len(s.pids) > 0 && !slices.Contains(s.pids, p.Pid):
			problems = append(problems, fmt.Sprintf("owner %d not among ss's %v for %+v", p.Pid, s.pids, s))
		}
	}
	return problems
}

func netnsInode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// TestPortsMatchSS opens listeners of every kind in the host namespace and
// in a namespace made with ip netns add, then checks the ports source lists
// what ss -ltnupHe lists there: same sockets, same owning process.
func TestPortsMatchSS(t *testing.T) {
	testutil.RequirePrivileged(t)
	for _, tool := range []string{"ss", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			testutil.Unavailable(t, tool+" not installed (iproute2)")
		}
	}

	// Host namespace: TCP and UDP, v4 and v6, loopback and any.
	type want struct {
		proto    nodewardv1.Protocol
		addr     string
		port     uint32
		exposure nodewardv1.Exposure
		pid      int
		host     bool
	}
	wants := map[uint64]want{}
	for _, l := range []struct{ network, addr string }{
		{"tcp4", "127.0.0.1:0"}, {"tcp4", "0.0.0.0:0"}, {"tcp6", "[::1]:0"}, {"tcp6", "[::]:0"},
		{"udp4", "127.0.0.1:0"}, {"udp4", "0.0.0.0:0"}, {"udp6", "[::1]:0"}, {"udp6", "[::]:0"},
	} {
		w := want{pid: os.Getpid(), host: true}
		var ino uint64
		if strings.HasPrefix(l.network, "tcp") {
			ln, err := net.Listen(l.network, l.addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			a := ln.Addr().(*net.TCPAddr)
			w.proto, w.port, w.addr, ino = nodewardv1.Protocol_PROTOCOL_TCP, uint32(a.Port), a.AddrPort().Addr().String(), testutil.SocketInode(t, ln.(*net.TCPListener))
		} else {
			pc, err := net.ListenPacket(l.network, l.addr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { pc.Close() })
			a := pc.LocalAddr().(*net.UDPAddr)
			w.proto, w.port, w.addr, ino = nodewardv1.Protocol_PROTOCOL_UDP, uint32(a.Port), a.AddrPort().Addr().String(), testutil.SocketInode(t, pc.(*net.UDPConn))
		}
		w.exposure = exposureOf(netip.MustParseAddr(w.addr))
		wants[ino] = w
	}

	// A separate namespace, with a listener this process opens from a
	// thread inside it and two a helper process started there holds.
	ns, nsFile := testutil.NetNS(t, "nwports")
	nsIno := netnsInode(t, "/run/netns/"+ns)
	inNS := testutil.ListenInNetNS(t, int(nsFile.Fd()))
	t.Cleanup(func() { inNS.Close() })
	wants[testutil.SocketInode(t, inNS.(*net.TCPListener))] = want{nodewardv1.Protocol_PROTOCOL_TCP, "127.0.0.1", uint32(inNS.Addr().(*net.TCPAddr).Port), nodewardv1.Exposure_EXPOSURE_LOOPBACK, os.Getpid(), false}

	helper, helperTCP, helperUDP := startPortsHelper(t, "1", "ip", "netns", "exec", ns, os.Args[0])

	root, err := hostfs.Open("/")
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	env := &source.Env{Root: root, Proc: "/proc"}

	var inv *nodewardv1.PortInventory
	var problems []string
	for attempt := 0; attempt < 5; attempt++ {
		before := runSS(t, "")
		nsBefore := runSS(t, ns)
		inv, err = ScanPorts(context.Background(), env)
		if err != nil {
			t.Fatalf("ScanPorts: %v", err)
		}
		after := runSS(t, "")
		nsAfter := runSS(t, ns)
		var host, other []*nodewardv1.ListeningPort
		for _, p := range inv.Ports {
			switch {
			case p.HostNetns:
				host = append(host, p)
			case p.Netns == nsName(nsIno):
				other = append(other, p)
			}
		}
		problems = append(compareWithSS(host, before, after), compareWithSS(other, nsBefore, nsAfter)...)
		// The namespace holds this test's sockets alone: ss must list
		// exactly the three the test opened, and so must we.
		if len(nsBefore) != 3 || len(other) != 3 {
			problems = append(problems, fmt.Sprintf("namespace %s: ss lists %d sockets, ours %d, want 3", ns, len(nsBefore), len(other)))
		}
		if len(problems) == 0 {
			break
		}
		t.Logf("attempt %d: %d differences with ss, retrying: %v", attempt+1, len(problems), problems)
	}
	for _, p := range problems {
		t.Error(p)
	}

	// The test's own sockets, field by field.
	exe, _ := os.Executable()
	seen := map[uint64]*nodewardv1.ListeningPort{}
	var helperPorts []*nodewardv1.ListeningPort
	for _, p := range inv.Ports {
		seen[p.SocketInode] = p
		if p.Netns == nsName(nsIno) && p.Pid != uint32(os.Getpid()) {
			helperPorts = append(helperPorts, p)
		}
	}
	for ino, w := range wants {
		p := seen[ino]
		if p == nil {
			t.Errorf("socket %d (%+v) not listed", ino, w)
			continue
		}
		wantNS := nsName(nsIno)
		if w.host {
			wantNS = p.Netns // the host's, checked by HostNetns
		}
		wantIPv := uint32(4)
		if strings.Contains(w.addr, ":") {
			wantIPv = 6
		}
		if p.Protocol != w.proto || p.Address != w.addr || p.Port != w.port || p.Exposure != w.exposure ||
			p.Pid != uint32(w.pid) || p.HostNetns != w.host || p.Netns != wantNS || p.IpVersion != wantIPv ||
			p.Uid != uint32(os.Geteuid()) || p.Exe != exe || !slices.Equal(p.Cmdline, os.Args) ||
			!strings.HasPrefix(exeBase(exe), p.ProcessName) || p.ContainerId != "" {
			t.Errorf("socket %d: got %v, want %+v (exe %s)", ino, p, w, exe)
		}
	}
	if len(helperPorts) != 2 {
		t.Fatalf("helper's sockets: got %v, want 2", helperPorts)
	}
	for _, p := range helperPorts {
		if p.Pid != uint32(helper.Process.Pid) || p.Exposure != nodewardv1.Exposure_EXPOSURE_ANY || p.HostNetns {
			t.Errorf("helper socket %v: want pid %d, exposure any, not host", p, helper.Process.Pid)
		}
		if (p.Protocol == nodewardv1.Protocol_PROTOCOL_TCP && (p.Port != helperTCP || p.Address != "::")) ||
			(p.Protocol == nodewardv1.Protocol_PROTOCOL_UDP && (p.Port != helperUDP || p.Address != "0.0.0.0")) {
			t.Errorf("helper socket %v: want TCP [::]:%d and UDP 0.0.0.0:%d", p, helperTCP, helperUDP)
		}
	}
	if inv.NetnsCount < 2 {
		t.Errorf("netns_count = %d, want at least the host's and %s", inv.NetnsCount, ns)
	}
}

// startPortsHelper starts this test binary as a helper process (through
// the command given, which ends with os.Args[0]), waits until it listens
// and stops it when the test ends. It returns the helper and its TCP and
// UDP ports.
func startPortsHelper(t *testing.T, mode string, command ...string) (*exec.Cmd, uint32, uint32) {
	t.Helper()
	helper := exec.Command(command[0], command[1:]...)
	helper.Env = append(os.Environ(), portsHelperEnv+"="+mode)
	stdin, err := helper.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { _ = helper.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = helper.Process.Kill()
			<-done
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("helper: %v", err)
	}
	var tcp, udp uint32
	if _, err := fmt.Sscanf(line, "ready %d %d", &tcp, &udp); err != nil {
		t.Fatalf("helper said %q", line)
	}
	return helper, tcp, udp
}

// TestPortsWithoutSysAdmin scans as the DaemonSet does: from a network
// namespace of its own, with its capabilities (no CAP_SYS_ADMIN, so no
// setns). The host's listeners still come out, read from a host process's
// /proc/PID/net tables.
func TestPortsWithoutSysAdmin(t *testing.T) {
	testutil.RequirePrivileged(t)
	for _, tool := range []string{"unshare", "setpriv"} {
		if _, err := exec.LookPath(tool); err != nil {
			testutil.Unavailable(t, tool+" not installed (util-linux)")
		}
	}
	want := map[string]bool{}
	for _, l := range []struct{ network, addr string }{{"tcp4", "127.0.0.1:0"}, {"tcp6", "[::]:0"}} {
		ln, err := net.Listen(l.network, l.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		a := ln.Addr().(*net.TCPAddr)
		want[fmt.Sprint(nodewardv1.Protocol_PROTOCOL_TCP, a.AddrPort().Addr(), a.Port, testutil.SocketInode(t, ln.(*net.TCPListener)))] = true
	}
	for _, l := range []struct{ network, addr string }{{"udp4", "0.0.0.0:0"}, {"udp6", "[::1]:0"}} {
		pc, err := net.ListenPacket(l.network, l.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pc.Close() })
		a := pc.LocalAddr().(*net.UDPAddr)
		want[fmt.Sprint(nodewardv1.Protocol_PROTOCOL_UDP, a.AddrPort().Addr(), a.Port, testutil.SocketInode(t, pc.(*net.UDPConn)))] = true
	}
	cmd := exec.Command("unshare", "--net", "setpriv", "--inh-caps=-all",
		"--bounding-set=-all,+bpf,+perfmon,+sys_resource,+sys_ptrace,+dac_read_search", os.Args[0])
	cmd.Env = append(os.Environ(), portsHelperEnv+"=scan")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("scan without CAP_SYS_ADMIN: %v\n%s", err, out)
	}
	hostNS := nsName(netnsInode(t, "/proc/self/ns/net")) // the test runs in the host namespace
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if strings.HasPrefix(line, "error") && strings.Contains(line, hostNS) {
			t.Errorf("host namespace not listed: %s", line)
		}
		delete(want, line)
	}
	if len(want) > 0 {
		t.Errorf("host listeners missing from the scan without CAP_SYS_ADMIN: %v\nscan said:\n%s", slices.Sorted(maps.Keys(want)), out)
	}
}

// TestPortsOwnerCgroup moves a listening process into a cgroup named as
// containerd and kubelet's systemd driver name a container's, and checks the
// port carries that container id and pod uid: the real kernel's
// /proc/PID/cgroup, read and parsed as on a node.
func TestPortsOwnerCgroup(t *testing.T) {
	testutil.RequirePrivileged(t)
	mount := cgroupMount(t)
	const (
		podUID = "5d3c2b1a-0f9e-4d8c-b7a6-958473625140"
		cid    = "c0ffee00d15ea5e0123456789abcdef0123456789abcdef0123456789abcdef"
	)
	slice := "kubepods-besteffort-pod" + strings.ReplaceAll(podUID, "-", "_") + ".slice"
	dirs := []string{
		mount + "/nwtest-kubepods.slice",
		mount + "/nwtest-kubepods.slice/" + slice,
		mount + "/nwtest-kubepods.slice/" + slice + "/cri-containerd-" + cid + ".scope",
	}
	for _, d := range dirs {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatalf("make cgroup: %v", err)
		}
	}
	t.Cleanup(func() {
		for i := len(dirs) - 1; i >= 0; i-- {
			// The helper has exited by now (cleanups run last first), so the
			// cgroup is empty; rmdir can still race its exit briefly.
			for try := 0; try < 50; try++ {
				if err := os.Remove(dirs[i]); err == nil || os.IsNotExist(err) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	})
	helper, tcpPort, _ := startPortsHelper(t, "loopback", os.Args[0])
	if err := os.WriteFile(dirs[2]+"/cgroup.procs", []byte(strconv.Itoa(helper.Process.Pid)), 0o644); err != nil {
		t.Fatalf("move helper into the cgroup: %v", err)
	}

	root, err := hostfs.Open("/")
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	inv, err := ScanPorts(context.Background(), &source.Env{Root: root, Proc: "/proc"})
	if err != nil {
		t.Fatal(err)
	}
	var found *nodewardv1.ListeningPort
	for _, p := range inv.Ports {
		if p.Pid == uint32(helper.Process.Pid) && p.Protocol == nodewardv1.Protocol_PROTOCOL_TCP && p.Port == tcpPort {
			found = p
		}
	}
	if found == nil {
		t.Fatalf("helper's listener [::1]:%d (pid %d) not listed", tcpPort, helper.Process.Pid)
	}
	if found.ContainerId != cid || found.PodUid != podUID {
		t.Errorf("container %q pod %q, want %q %q", found.ContainerId, found.PodUid, cid, podUID)
	}
}

// cgroupMount finds a cgroup hierarchy to make test cgroups in: the unified
// (v2) one, else the v1 pids controller.
func cgroupMount(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	var v1 string
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) < 4 {
			continue
		}
		switch {
		case f[2] == "cgroup2":
			return f[1]
		case f[2] == "cgroup" && slices.Contains(strings.Split(f[3], ","), "pids"):
			v1 = f[1]
		}
	}
	if v1 == "" {
		testutil.Unavailable(t, "no writable cgroup hierarchy mounted")
	}
	return v1
}

func exeBase(p string) string { return p[strings.LastIndexByte(p, '/')+1:] }

// TestOwnerSearchReadsHighDescriptors checks owners are found above each
// window bound, where the search only looks when lower windows did not
// find them.
func TestOwnerSearchReadsHighDescriptors(t *testing.T) {
	testutil.RequirePrivileged(t)
	var filler []*os.File
	t.Cleanup(func() {
		for _, f := range filler {
			f.Close()
		}
	})
	listen := func() (net.Listener, uint64) {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		return ln, testutil.SocketInode(t, ln.(*net.TCPListener))
	}
	inodes := map[uint64]bool{}
	for _, bound := range fdWindows[:2] {
		for {
			f, err := os.Open("/dev/null")
			if err != nil {
				t.Fatal(err)
			}
			filler = append(filler, f)
			if int(f.Fd()) >= bound {
				break
			}
		}
		_, ino := listen()
		inodes[ino] = true
	}
	root, err := hostfs.Open("/")
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	inv, err := ScanPorts(context.Background(), &source.Env{Root: root, Proc: "/proc"})
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, p := range inv.Ports {
		if inodes[p.SocketInode] {
			found++
			if p.Pid != uint32(os.Getpid()) {
				t.Errorf("listener %d above an fd window: owner %d, want %d", p.SocketInode, p.Pid, os.Getpid())
			}
		}
	}
	if found != len(inodes) {
		t.Errorf("found %d of the listeners %v", found, slices.Collect(maps.Keys(inodes)))
	}
}

// BenchmarkScanPorts measures the source on this machine as it is; run it
// as root, under bench/ports.sh's load for the figures that matter.
func BenchmarkScanPorts(b *testing.B) {
	root, err := hostfs.Open("/")
	if err != nil {
		b.Fatal(err)
	}
	defer root.Close()
	env := &source.Env{Root: root, Proc: "/proc"}
	for b.Loop() {
		if _, err := ScanPorts(context.Background(), env); err != nil {
			b.Fatal(err)
		}
	}
}
