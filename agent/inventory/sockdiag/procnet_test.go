package sockdiag

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Rows as a little-endian kernel prints them (x86_64, arm64).
const (
	tcpHeader = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
	tcpRows   = tcpHeader +
		"   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 30 1 000000005052050e 100 0 0 10 0\n" +
		"   1: 0100007F:8489 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 2714157 2 00000000969c3354 100 0 0 10 0\n" +
		"   2: 0100007F:8489 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000  1000        0 2714160 1 0000000000000000 20 4 30 10 -1\n"
	tcp6Rows = tcpHeader +
		"   0: 00000000000000000000000001000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4411 1 0000000000000000 100 0 0 10 0\n" +
		"   1: 0000000000000000FFFF00000A00010A:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000    33        0 4412 1 0000000000000000 100 0 0 10 0\n"
	udpRows = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n" +
		"  254: 00000000:0044 00000000:0000 07 00000000:00000000 00:00000000 00000000   101        0 9001 2 0000000000000000 0\n" +
		"  255: 0100007F:0035 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 9002 2 0000000000000000 0\n"
)

func littleEndian() bool { return binary.NativeEndian.Uint16([]byte{1, 0}) == 1 }

func TestParseProcNet(t *testing.T) {
	if !littleEndian() {
		t.Skip("the rows were printed by a little-endian kernel")
	}
	sock := func(fam, proto uint8, state uint8, addr string, port uint16, uid, inode uint32) Socket {
		return Socket{Family: fam, Protocol: proto, State: state, Addr: netip.MustParseAddr(addr), Port: port, UID: uid, Inode: inode}
	}
	for _, c := range []struct {
		name          string
		table         string
		family, proto uint8
		want          []Socket
	}{
		{"tcp: listeners, not the connection", tcpRows, unix.AF_INET, unix.IPPROTO_TCP, []Socket{
			sock(unix.AF_INET, unix.IPPROTO_TCP, StateListen, "0.0.0.0", 2024, 0, 30),
			sock(unix.AF_INET, unix.IPPROTO_TCP, StateListen, "127.0.0.1", 33929, 1000, 2714157),
		}},
		{"tcp6: loopback and v4-mapped", tcp6Rows, unix.AF_INET6, unix.IPPROTO_TCP, []Socket{
			sock(unix.AF_INET6, unix.IPPROTO_TCP, StateListen, "::1", 22, 0, 4411),
			sock(unix.AF_INET6, unix.IPPROTO_TCP, StateListen, "::ffff:10.1.0.10", 443, 33, 4412),
		}},
		{"udp: unconnected only", udpRows, unix.AF_INET, unix.IPPROTO_UDP, []Socket{
			sock(unix.AF_INET, unix.IPPROTO_UDP, StateClose, "0.0.0.0", 68, 101, 9001),
		}},
		{"header only", tcpHeader, unix.AF_INET, unix.IPPROTO_TCP, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseProcNet(strings.NewReader(c.table), c.family, c.proto)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("got  %+v\nwant %+v", got, c.want)
			}
		})
	}
	for _, bad := range []struct{ name, table string }{
		{"empty", ""},
		{"short row", tcpHeader + "   0: 00000000:07E8 00000000:0000 0A\n"},
		{"v6 address in a v4 table", tcp6Rows},
		{"not hex", tcpHeader + "   0: 0000ZZ00:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 30\n"},
		{"no port", tcpHeader + "   0: 00000000 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 30\n"},
		{"bad inode", tcpHeader + "   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 -3\n"},
	} {
		if _, err := ParseProcNet(strings.NewReader(bad.table), unix.AF_INET, unix.IPPROTO_TCP); err == nil {
			t.Errorf("%s: no error", bad.name)
		}
	}
}

// The kernel is the oracle: the process's own tables list exactly what
// sock_diag dumps in the same namespace.
func TestProcNetMatchesDump(t *testing.T) {
	for _, l := range []struct{ network, addr string }{{"tcp4", "127.0.0.1:0"}, {"tcp6", "[::1]:0"}} {
		ln, err := net.Listen(l.network, l.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
	}
	for _, l := range []struct{ network, addr string }{{"udp4", "127.0.0.1:0"}, {"udp6", "[::1]:0"}} {
		pc, err := net.ListenPacket(l.network, l.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
	}
	c, err := Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, tab := range []struct {
		file          string
		family, proto uint8
	}{
		{"tcp", unix.AF_INET, unix.IPPROTO_TCP}, {"tcp6", unix.AF_INET6, unix.IPPROTO_TCP},
		{"udp", unix.AF_INET, unix.IPPROTO_UDP}, {"udp6", unix.AF_INET6, unix.IPPROTO_UDP},
	} {
		body, err := os.ReadFile("/proc/self/net/" + tab.file)
		if err != nil {
			t.Fatal(err)
		}
		fromProc, err := ParseProcNet(bytes.NewReader(body), tab.family, tab.proto)
		if err != nil {
			t.Fatalf("%s: %v", tab.file, err)
		}
		dumped, err := c.Dump(tab.family, tab.proto, Listening)
		if err != nil {
			t.Fatal(err)
		}
		key := func(s Socket) string {
			return fmt.Sprint(s.Family, s.Protocol, s.State, s.Addr, s.Port, s.UID, s.Inode)
		}
		var a, b []string
		for _, s := range fromProc {
			a = append(a, key(s))
		}
		for _, s := range dumped {
			b = append(b, key(s))
		}
		slices.Sort(a)
		slices.Sort(b)
		if len(a) == 0 || !slices.Equal(a, b) {
			t.Errorf("%s: /proc lists %v\nsock_diag dumps %v", tab.file, a, b)
		}
	}
}

func FuzzParseProcNet(f *testing.F) {
	for _, s := range []string{tcpRows, tcp6Rows, udpRows, tcpHeader} {
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, table []byte, v6 bool) {
		family, n := uint8(unix.AF_INET), 4
		if v6 {
			family, n = unix.AF_INET6, 16
		}
		socks, err := ParseProcNet(bytes.NewReader(table), family, unix.IPPROTO_TCP)
		if err != nil {
			return
		}
		for _, s := range socks {
			if s.Addr.BitLen() != 8*n || s.State != StateListen || s.Family != family {
				t.Fatalf("socket %+v from a %d-byte table", s, n)
			}
		}
	})
}
