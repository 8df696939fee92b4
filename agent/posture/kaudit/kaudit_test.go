package kaudit

import (
	"encoding/binary"
	"os"
	"syscall"
	"testing"

	"github.com/nodeward/nodeward/internal/testutil"
	"golang.org/x/sys/unix"
)

// register makes this test process the kernel's audit daemon, as auditd
// does at start-up (AUDIT_SET with AUDIT_STATUS_PID), and returns the
// socket. The kernel does not forget a daemon whose socket closed until it
// next fails to reach it, so unregister with setPID(fd, 0).
func register(t *testing.T) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_AUDIT)
	if err != nil {
		testutil.Unavailable(t, "netlink audit: "+err.Error())
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		t.Fatal(err)
	}
	if errno := setPID(t, fd, uint32(os.Getpid())); errno != 0 {
		testutil.Unavailable(t, "cannot register as the audit daemon: "+errno.Error())
	}
	return fd
}

// setPID sends AUDIT_SET for the daemon pid and returns the kernel's
// answer; pid 0 unregisters (only the registered process may).
func setPID(t *testing.T, fd int, pid uint32) unix.Errno {
	t.Helper()
	// struct audit_status with mask = AUDIT_STATUS_PID.
	status := make([]byte, 40)
	binary.NativeEndian.PutUint32(status[0:], unix.AUDIT_STATUS_PID)
	binary.NativeEndian.PutUint32(status[12:], pid)
	msg := make([]byte, unix.NLMSG_HDRLEN+len(status))
	binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:], unix.AUDIT_SET)
	binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(msg[8:], 7)
	copy(msg[unix.NLMSG_HDRLEN:], status)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		t.Fatal(err)
	}
	// The registered daemon (this socket, when unregistering) may first get
	// the kernel's AUDIT_REPLACE probe; the answer is the ack.
	buf := make([]byte, 8192)
	for i := 0; i < 16; i++ {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			t.Fatal(err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			if m.Header.Type == unix.NLMSG_ERROR && m.Header.Seq == 7 {
				return unix.Errno(-int32(binary.NativeEndian.Uint32(m.Data)))
			}
		}
	}
	t.Fatal("no AUDIT_SET acknowledgement")
	return 0
}

// The kernel reports the process registered as its audit daemon; the test
// registers itself, as auditd would, and checks the answer before and
// after.
func TestQueryRegisteredDaemon(t *testing.T) {
	testutil.RequirePrivileged(t)
	before, err := Query()
	if err != nil {
		testutil.Unavailable(t, "audit status: "+err.Error())
	}
	if before.PID != 0 {
		testutil.Unavailable(t, "an audit daemon already runs here")
	}
	fd := register(t)
	during, err := Query()
	if errno := setPID(t, fd, 0); errno != 0 {
		t.Errorf("unregister: %v", errno)
	}
	_ = unix.Close(fd)
	if err != nil {
		t.Fatal(err)
	}
	if after, err := Query(); err != nil || after.PID != 0 {
		t.Errorf("after unregistering: %+v %v", after, err)
	}
	if during.PID != uint32(os.Getpid()) {
		t.Errorf("registered pid %d, kernel says %d", os.Getpid(), during.PID)
	}
	if during.Rules != before.Rules || during.Enabled != before.Enabled {
		t.Errorf("status moved: before %+v during %+v", before, during)
	}
}

func TestParseStatus(t *testing.T) {
	b := make([]byte, 40)
	binary.NativeEndian.PutUint32(b[4:], 1)
	binary.NativeEndian.PutUint32(b[12:], 4242)
	binary.NativeEndian.PutUint32(b[24:], 3)
	if s, err := parseStatus(b); err != nil || s.Enabled != 1 || s.PID != 4242 || s.Lost != 3 {
		t.Errorf("%+v %v", s, err)
	}
	if _, err := parseStatus(b[:10]); err == nil {
		t.Error("short status parsed")
	}
}
