// Package sockdiag lists a network namespace's sockets through netlink
// sock_diag (inet_diag), the interface ss(8) uses. The kernel filters by
// socket state, so asking for listeners costs what the listeners cost, not
// what the node's established connections cost.
package sockdiag

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Socket states as inet_diag reports them (include/net/tcp_states.h).
const (
	StateEstablished = 1
	StateClose       = 7
	StateListen      = 10
)

// Listening is the state mask ss -l uses: TCP listeners and unconnected
// (CLOSE) UDP sockets.
const Listening = 1<<StateListen | 1<<StateClose

// ListeningTCP asks for what Listening gives for TCP, cheaper: a TCP socket
// in CLOSE state is never in the kernel's hash tables, and a mask of LISTEN
// alone lets the kernel skip the table of established connections instead
// of walking it.
const ListeningTCP = 1 << StateListen

const (
	sockDiagByFamily = 20 // SOCK_DIAG_BY_FAMILY
	reqSize          = 56 // struct inet_diag_req_v2
	msgSize          = 72 // struct inet_diag_msg
	recvBufSize      = 64 << 10
	recvTimeout      = 10 * time.Second
)

// Socket is one socket as inet_diag describes it.
type Socket struct {
	Family   uint8 // unix.AF_INET or unix.AF_INET6
	Protocol uint8 // unix.IPPROTO_TCP or unix.IPPROTO_UDP
	State    uint8
	Addr     netip.Addr
	Port     uint16
	// Ifindex is the device the socket is bound to (SO_BINDTODEVICE), or 0.
	Ifindex uint32
	// UID owns the socket: the creating process's fsuid.
	UID   uint32
	Inode uint32
}

// Conn is a netlink sock_diag socket bound to one network namespace.
type Conn struct {
	fd  int
	seq atomic.Uint32
	buf []byte
}

// Dial opens a sock_diag socket in the network namespace of the calling
// process.
func Dial() (*Conn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("netlink sock_diag socket: %w", err)
	}
	tv := unix.NsecToTimeval(recvTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("netlink sock_diag socket: receive timeout: %w", err)
	}
	return &Conn{fd: fd, buf: make([]byte, recvBufSize)}, nil
}

// DialNetNS opens a sock_diag socket inside the network namespace nsFD
// refers to (an open /proc/PID/ns/net or /run/netns/NAME). A socket belongs
// to the namespace it was created in for its whole life, so only the
// creation happens inside the namespace: on a locked OS thread that returns
// to its own namespace before it is released. Entering another namespace
// needs CAP_SYS_ADMIN.
func DialNetNS(nsFD int) (*Conn, error) {
	type result struct {
		c   *Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		self, err := os.Open(threadNetNS())
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, fmt.Errorf("own network namespace: %w", err)}
			return
		}
		defer self.Close()
		// Already there (the agent's own namespace): no setns, so no
		// privilege needed.
		var here, there unix.Stat_t
		if unix.Fstat(int(self.Fd()), &here) == nil && unix.Fstat(nsFD, &there) == nil &&
			here.Dev == there.Dev && here.Ino == there.Ino {
			c, err := Dial()
			runtime.UnlockOSThread()
			ch <- result{c, err}
			return
		}
		if err := unix.Setns(nsFD, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{nil, fmt.Errorf("enter network namespace: %w", err)}
			return
		}
		c, err := Dial()
		if rerr := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); rerr != nil {
			// The thread is stuck in the other namespace: leave it locked
			// so the runtime discards it when this goroutine ends.
			if c != nil {
				_ = c.Close()
			}
			ch <- result{nil, fmt.Errorf("return to own network namespace: %w", rerr)}
			return
		}
		runtime.UnlockOSThread()
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

func threadNetNS() string {
	return "/proc/self/task/" + strconv.Itoa(unix.Gettid()) + "/ns/net"
}

// Close closes the netlink socket.
func (c *Conn) Close() error { return unix.Close(c.fd) }

// Dump lists the sockets of one family and protocol whose state is in the
// states mask (1<<state bits, e.g. Listening). A dump the kernel marks as
// interrupted (the tables changed under it) is retried a few times.
func (c *Conn) Dump(family, protocol uint8, states uint32) ([]Socket, error) {
	var lastErr error
	for range 3 {
		socks, err := c.dump(family, protocol, states)
		if !errors.Is(err, errInterrupted) {
			return socks, err
		}
		lastErr = err
	}
	return nil, lastErr
}

var errInterrupted = errors.New("dump interrupted by concurrent changes")

func (c *Conn) dump(family, protocol uint8, states uint32) ([]Socket, error) {
	seq := c.seq.Add(1)
	req := make([]byte, unix.NLMSG_HDRLEN+reqSize)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], sockDiagByFamily)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(req[8:], seq)
	r := req[unix.NLMSG_HDRLEN:]
	r[0], r[1] = family, protocol
	ne.PutUint32(r[4:], states)
	if err := unix.Sendto(c.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("sock_diag request: %w", err)
	}
	var socks []Socket
	interrupted := false
	for {
		n, _, flags, _, err := unix.Recvmsg(c.fd, c.buf, nil, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("sock_diag receive: %w", err)
		}
		if flags&unix.MSG_TRUNC != 0 {
			return nil, errors.New("sock_diag receive: message truncated")
		}
		got, st, err := ParseMessages(c.buf[:n], seq, protocol)
		if err != nil {
			return nil, err
		}
		socks = append(socks, got...)
		interrupted = interrupted || st.Interrupted
		if st.Done {
			break
		}
	}
	if interrupted {
		return nil, errInterrupted
	}
	return socks, nil
}

// Status says how a received batch of messages ended.
type Status struct {
	// Done is set when the batch held the dump's NLMSG_DONE.
	Done bool
	// Interrupted is set when the kernel flagged the dump inconsistent.
	Interrupted bool
}

// ParseMessages parses one datagram of a sock_diag dump reply: netlink
// messages each holding a struct inet_diag_msg (attributes are ignored).
// Messages of another sequence number are skipped. protocol is copied into
// each socket, since inet_diag_msg does not carry it.
func ParseMessages(b []byte, seq uint32, protocol uint8) ([]Socket, Status, error) {
	var socks []Socket
	var st Status
	ne := binary.NativeEndian
	for len(b) >= unix.NLMSG_HDRLEN {
		mlen := ne.Uint32(b[0:])
		typ := ne.Uint16(b[4:])
		flags := ne.Uint16(b[6:])
		mseq := ne.Uint32(b[8:])
		if mlen < unix.NLMSG_HDRLEN || uint64(mlen) > uint64(len(b)) {
			return socks, st, fmt.Errorf("sock_diag: bad netlink message length %d (%d bytes left)", mlen, len(b))
		}
		body := b[unix.NLMSG_HDRLEN:mlen]
		next := min((int(mlen)+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1), len(b))
		b = b[next:]
		if mseq != seq {
			continue
		}
		if flags&unix.NLM_F_DUMP_INTR != 0 {
			st.Interrupted = true
		}
		switch typ {
		case unix.NLMSG_DONE:
			st.Done = true
			return socks, st, nil
		case unix.NLMSG_ERROR:
			if len(body) < 4 {
				return socks, st, errors.New("sock_diag: short error message")
			}
			errno := int32(ne.Uint32(body))
			if errno == 0 { // an ack
				continue
			}
			return socks, st, fmt.Errorf("sock_diag: %w", unix.Errno(-errno))
		case sockDiagByFamily:
			s, err := parseDiagMsg(body)
			if err != nil {
				return socks, st, err
			}
			s.Protocol = protocol
			socks = append(socks, s)
		}
	}
	if len(b) != 0 {
		return socks, st, fmt.Errorf("sock_diag: %d trailing bytes", len(b))
	}
	return socks, st, nil
}

// parseDiagMsg decodes struct inet_diag_msg.
func parseDiagMsg(b []byte) (Socket, error) {
	if len(b) < msgSize {
		return Socket{}, fmt.Errorf("sock_diag: inet_diag_msg of %d bytes, want %d", len(b), msgSize)
	}
	ne := binary.NativeEndian
	s := Socket{
		Family:  b[0],
		State:   b[1],
		Port:    binary.BigEndian.Uint16(b[4:]),
		Ifindex: ne.Uint32(b[40:]),
		UID:     ne.Uint32(b[64:]),
		Inode:   ne.Uint32(b[68:]),
	}
	src := b[8:24]
	switch s.Family {
	case unix.AF_INET:
		s.Addr = netip.AddrFrom4([4]byte(src[:4]))
	case unix.AF_INET6:
		s.Addr = netip.AddrFrom16([16]byte(src))
	default:
		return Socket{}, fmt.Errorf("sock_diag: unexpected address family %d", s.Family)
	}
	return s, nil
}
