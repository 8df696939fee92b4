package sockdiag

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"testing"

	"github.com/nodeward/nodeward/internal/testutil"
	"golang.org/x/sys/unix"
)

func TestDumpSeesOwnListeners(t *testing.T) {
	tcp, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	udp, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	// An established connection must not show up among listeners.
	client, err := net.Dial("tcp4", tcp.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := tcp.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()

	c, err := Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	tcpSocks, err := c.Dump(unix.AF_INET, unix.IPPROTO_TCP, Listening)
	if err != nil {
		t.Fatal(err)
	}
	want := Socket{
		Family: unix.AF_INET, Protocol: unix.IPPROTO_TCP, State: StateListen,
		Addr: netip.MustParseAddr("127.0.0.1"), Port: uint16(tcp.Addr().(*net.TCPAddr).Port),
		UID: uint32(os.Geteuid()), Inode: uint32(testutil.SocketInode(t, tcp.(*net.TCPListener))),
	}
	assertHas(t, tcpSocks, want)
	for _, s := range tcpSocks {
		if s.State != StateListen {
			t.Errorf("TCP dump returned a socket in state %d: %+v", s.State, s)
		}
		if s.Inode == uint32(testutil.SocketInode(t, server.(*net.TCPConn))) || s.Inode == uint32(testutil.SocketInode(t, client.(*net.TCPConn))) {
			t.Errorf("established connection listed as a listener: %+v", s)
		}
	}

	// LISTEN alone gives TCP the same answer without walking the
	// established table.
	listenOnly, err := c.Dump(unix.AF_INET, unix.IPPROTO_TCP, ListeningTCP)
	if err != nil {
		t.Fatal(err)
	}
	assertHas(t, listenOnly, want)
	if inodes(listenOnly) != inodes(tcpSocks) {
		t.Errorf("ListeningTCP lists %v, Listening lists %v", listenOnly, tcpSocks)
	}

	udpSocks, err := c.Dump(unix.AF_INET6, unix.IPPROTO_UDP, Listening)
	if err != nil {
		t.Fatal(err)
	}
	assertHas(t, udpSocks, Socket{
		Family: unix.AF_INET6, Protocol: unix.IPPROTO_UDP, State: StateClose,
		Addr: netip.MustParseAddr("::1"), Port: uint16(udp.LocalAddr().(*net.UDPAddr).Port),
		UID: uint32(os.Geteuid()), Inode: uint32(testutil.SocketInode(t, udp.(*net.UDPConn))),
	})
}

// inodes summarises a dump as its sorted inode list, printed.
func inodes(socks []Socket) string {
	var ns []int
	for _, s := range socks {
		ns = append(ns, int(s.Inode))
	}
	slices.Sort(ns)
	return fmt.Sprint(ns)
}

func assertHas(t *testing.T, socks []Socket, want Socket) {
	t.Helper()
	for _, s := range socks {
		if s == want {
			return
		}
	}
	t.Errorf("dump lacks %+v; got %+v", want, socks)
}

// TestDialNetNS lists a listener that exists only inside another network
// namespace, and checks the namespace of the caller does not show it.
func TestDialNetNS(t *testing.T) {
	testutil.RequirePrivileged(t)
	_, ns := testutil.NetNS(t, "nwdiag")

	ln := testutil.ListenInNetNS(t, int(ns.Fd()))
	defer ln.Close()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	ino := uint32(testutil.SocketInode(t, ln.(*net.TCPListener)))

	c, err := DialNetNS(int(ns.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	socks, err := c.Dump(unix.AF_INET, unix.IPPROTO_TCP, Listening)
	if err != nil {
		t.Fatal(err)
	}
	if len(socks) != 1 || socks[0].Inode != ino || socks[0].Port != port {
		t.Errorf("fresh namespace: got %+v, want only the test's listener (inode %d, port %d)", socks, ino, port)
	}

	own, err := Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	socks, err = own.Dump(unix.AF_INET, unix.IPPROTO_TCP, Listening)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range socks {
		if s.Inode == ino {
			t.Errorf("the other namespace's listener shows in the caller's: %+v", s)
		}
	}
}

// msg builds one netlink message of type typ with body.
func msg(typ, flags uint16, seq uint32, body []byte) []byte {
	b := make([]byte, unix.NLMSG_HDRLEN, unix.NLMSG_HDRLEN+len(body)+4)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(unix.NLMSG_HDRLEN+len(body)))
	ne.PutUint16(b[4:], typ)
	ne.PutUint16(b[6:], flags)
	ne.PutUint32(b[8:], seq)
	b = append(b, body...)
	for len(b)%unix.NLMSG_ALIGNTO != 0 {
		b = append(b, 0)
	}
	return b
}

func diagMsg(family, state uint8, addr netip.Addr, port uint16, uid, inode uint32) []byte {
	b := make([]byte, msgSize)
	b[0], b[1] = family, state
	binary.BigEndian.PutUint16(b[4:], port)
	a := addr.AsSlice()
	copy(b[8:], a)
	binary.BigEndian.PutUint16(b[6:], 0)
	ne := binary.NativeEndian
	ne.PutUint32(b[64:], uid)
	ne.PutUint32(b[68:], inode)
	return b
}

func TestParseMessages(t *testing.T) {
	v4 := diagMsg(unix.AF_INET, StateListen, netip.MustParseAddr("10.1.2.3"), 443, 1000, 77)
	v6 := diagMsg(unix.AF_INET6, StateClose, netip.MustParseAddr("fe80::1"), 53, 0, 78)
	errBody := make([]byte, 20)
	eperm := -int32(unix.EPERM)
	binary.NativeEndian.PutUint32(errBody, uint32(eperm))
	cat := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	tests := []struct {
		name    string
		in      []byte
		want    []Socket
		status  Status
		wantErr error
	}{
		{"two sockets then done", cat(msg(sockDiagByFamily, 0, 5, v4), msg(sockDiagByFamily, 0, 5, v6), msg(unix.NLMSG_DONE, 0, 5, make([]byte, 4))),
			[]Socket{
				{Family: unix.AF_INET, Protocol: unix.IPPROTO_TCP, State: StateListen, Addr: netip.MustParseAddr("10.1.2.3"), Port: 443, UID: 1000, Inode: 77},
				{Family: unix.AF_INET6, Protocol: unix.IPPROTO_TCP, State: StateClose, Addr: netip.MustParseAddr("fe80::1"), Port: 53, Inode: 78},
			}, Status{Done: true}, nil},
		{"other sequence skipped", cat(msg(sockDiagByFamily, 0, 4, v4), msg(sockDiagByFamily, 0, 5, v6)),
			[]Socket{{Family: unix.AF_INET6, Protocol: unix.IPPROTO_TCP, State: StateClose, Addr: netip.MustParseAddr("fe80::1"), Port: 53, Inode: 78}}, Status{}, nil},
		{"interrupted", cat(msg(sockDiagByFamily, unix.NLM_F_DUMP_INTR, 5, v4), msg(unix.NLMSG_DONE, unix.NLM_F_DUMP_INTR, 5, make([]byte, 4))),
			[]Socket{{Family: unix.AF_INET, Protocol: unix.IPPROTO_TCP, State: StateListen, Addr: netip.MustParseAddr("10.1.2.3"), Port: 443, UID: 1000, Inode: 77}},
			Status{Done: true, Interrupted: true}, nil},
		{"kernel error", msg(unix.NLMSG_ERROR, 0, 5, errBody), nil, Status{}, unix.EPERM},
		{"short diag message", msg(sockDiagByFamily, 0, 5, v4[:40]), nil, Status{}, errAny},
		{"length beyond buffer", msg(sockDiagByFamily, 0, 5, v4)[:50], nil, Status{}, errAny},
		{"unknown family", msg(sockDiagByFamily, 0, 5, diagMsg(unix.AF_UNIX, 0, netip.IPv4Unspecified(), 0, 0, 0)), nil, Status{}, errAny},
		{"empty", nil, nil, Status{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, st, err := ParseMessages(tt.in, 5, unix.IPPROTO_TCP)
			anyErr := errors.Is(tt.wantErr, errAny)
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("unexpected error %v", err)
			case anyErr && err == nil, tt.wantErr != nil && !anyErr && !errors.Is(err, tt.wantErr):
				t.Fatalf("error = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr != nil {
				return
			}
			if st != tt.status {
				t.Errorf("status = %+v, want %+v", st, tt.status)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %d sockets %+v, want %+v", len(got), got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("socket %d = %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

var errAny = errors.New("any error")

func FuzzParseMessages(f *testing.F) {
	v4 := diagMsg(unix.AF_INET, StateListen, netip.MustParseAddr("127.0.0.1"), 22, 0, 1)
	f.Add(append(msg(sockDiagByFamily, 0, 1, v4), msg(unix.NLMSG_DONE, 0, 1, make([]byte, 4))...))
	f.Add(msg(unix.NLMSG_ERROR, 0, 1, make([]byte, 4)))
	f.Add(msg(sockDiagByFamily, 0, 1, v4[:10]))
	f.Fuzz(func(t *testing.T, b []byte) {
		socks, _, err := ParseMessages(b, 1, unix.IPPROTO_UDP)
		if err != nil {
			return
		}
		for _, s := range socks {
			if !s.Addr.IsValid() || (s.Family == unix.AF_INET) != s.Addr.Is4() {
				t.Errorf("inconsistent socket %+v", s)
			}
		}
	})
}
