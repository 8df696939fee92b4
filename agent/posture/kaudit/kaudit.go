// Package kaudit asks the running kernel's audit subsystem, over
// NETLINK_AUDIT, whether auditing is enabled, which process is registered
// as the audit daemon, and how many rules are loaded. Files on disk say
// what auditd would load; the kernel says what is in force.
package kaudit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Status is the kernel's audit status (struct audit_status, first fields).
type Status struct {
	// Enabled: 0 off, 1 on, 2 on and locked.
	Enabled uint32
	// Failure: what the kernel does when it cannot audit.
	Failure uint32
	// PID of the registered audit daemon, 0 for none.
	PID uint32
	// Lost records since boot.
	Lost uint32
	// Rules loaded.
	Rules int
}

// Query reads the status and counts the loaded rules.
func Query() (Status, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_AUDIT)
	if err != nil {
		return Status{}, fmt.Errorf("netlink audit socket: %w", err)
	}
	defer func() { _ = unix.Close(fd) }()
	tv := unix.NsecToTimeval((2 * time.Second).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return Status{}, fmt.Errorf("netlink audit timeout: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return Status{}, fmt.Errorf("netlink audit bind: %w", err)
	}
	var st Status
	err = request(fd, unix.AUDIT_GET, 1, func(typ uint16, data []byte) bool {
		if typ == unix.AUDIT_GET {
			st, err = parseStatus(data)
			return true
		}
		return false
	})
	if err != nil {
		return Status{}, fmt.Errorf("AUDIT_GET: %w", err)
	}
	err = request(fd, unix.AUDIT_LIST_RULES, 2, func(typ uint16, _ []byte) bool {
		if typ == unix.AUDIT_LIST_RULES {
			st.Rules++
		}
		return false
	})
	if err != nil {
		return st, fmt.Errorf("AUDIT_LIST_RULES: %w", err)
	}
	return st, nil
}

// parseStatus reads struct audit_status: mask, enabled, failure, pid,
// rate_limit, backlog_limit, lost, backlog (u32 each, host order).
func parseStatus(b []byte) (Status, error) {
	if len(b) < 28 {
		return Status{}, fmt.Errorf("audit status of %d bytes", len(b))
	}
	le := binary.NativeEndian
	return Status{Enabled: le.Uint32(b[4:]), Failure: le.Uint32(b[8:]), PID: le.Uint32(b[12:]), Lost: le.Uint32(b[24:])}, nil
}

// maxMessages bounds one request's replies.
const maxMessages = 1 << 16

// request sends one request and hands each reply to fn until fn says it
// is done, the kernel says NLMSG_DONE, or it acknowledges with an error.
func request(fd int, typ uint16, seq uint32, fn func(typ uint16, data []byte) bool) error {
	msg := make([]byte, unix.NLMSG_HDRLEN)
	le := binary.NativeEndian
	le.PutUint32(msg[0:], uint32(len(msg)))
	le.PutUint16(msg[4:], typ)
	le.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	le.PutUint32(msg[8:], seq)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 1<<16)
	acked, done := false, false
	for n := 0; n < maxMessages; {
		got, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:got])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			n++
			if m.Header.Seq != seq {
				continue
			}
			switch m.Header.Type {
			case unix.NLMSG_ERROR:
				if len(m.Data) < 4 {
					return errors.New("short netlink error")
				}
				if e := int32(le.Uint32(m.Data)); e != 0 {
					return unix.Errno(-e)
				}
				acked = true
			case unix.NLMSG_DONE:
				return nil
			default:
				if fn(m.Header.Type, m.Data) {
					done = true
				}
			}
			// AUDIT_GET: the ack and the reply both arrive; rule
			// listings end with NLMSG_DONE.
			if acked && done {
				return nil
			}
		}
	}
	return fmt.Errorf("more than %d replies", maxMessages)
}
