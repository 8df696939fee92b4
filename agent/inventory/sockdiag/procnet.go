package sockdiag

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ParseProcNet reads a /proc/PID/net/{tcp,tcp6,udp,udp6} table and returns
// its listening sockets, as Dump(family, protocol, Listening) would: TCP in
// LISTEN, UDP unconnected (CLOSE). It is the way into a network namespace
// the agent may not enter (setns needs CAP_SYS_ADMIN; reading a process's
// table needs only ptrace access to it). The table has no bound device, so
// Ifindex is 0.
func ParseProcNet(r io.Reader, family, protocol uint8) ([]Socket, error) {
	addrLen := 4
	if family == unix.AF_INET6 {
		addrLen = 16
	}
	want := uint8(StateListen)
	if protocol == unix.IPPROTO_UDP {
		want = StateClose
	}
	sc := bufio.NewScanner(r)
	var out []Socket
	line := 0
	for sc.Scan() {
		line++
		if line == 1 {
			continue // the column header
		}
		s, state, err := parseProcNetLine(sc.Text(), addrLen)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		if state != want {
			continue
		}
		s.Family, s.Protocol, s.State = family, protocol, state
		out = append(out, s)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if line == 0 {
		return nil, errors.New("empty table: no header")
	}
	return out, nil
}

// parseProcNetLine parses "sl local rem st tx:rx tr:when retrnsmt uid
// timeout inode ...".
func parseProcNetLine(text string, addrLen int) (Socket, uint8, error) {
	f := strings.Fields(text)
	if len(f) < 10 {
		return Socket{}, 0, fmt.Errorf("%d fields, want at least 10", len(f))
	}
	addr, port, err := parseProcNetAddr(f[1], addrLen)
	if err != nil {
		return Socket{}, 0, fmt.Errorf("local address %q: %w", f[1], err)
	}
	state, err := strconv.ParseUint(f[3], 16, 8)
	if err != nil {
		return Socket{}, 0, fmt.Errorf("state %q: %w", f[3], err)
	}
	uid, err := strconv.ParseUint(f[7], 10, 32)
	if err != nil {
		return Socket{}, 0, fmt.Errorf("uid %q: %w", f[7], err)
	}
	inode, err := strconv.ParseUint(f[9], 10, 32)
	if err != nil {
		return Socket{}, 0, fmt.Errorf("inode %q: %w", f[9], err)
	}
	return Socket{Addr: addr, Port: port, UID: uint32(uid), Inode: uint32(inode)}, uint8(state), nil
}

// parseProcNetAddr parses "ADDR:PORT": the kernel prints the address as
// 32-bit words in the host's byte order, and the port as a number.
func parseProcNetAddr(s string, addrLen int) (netip.Addr, uint16, error) {
	hexAddr, hexPort, ok := strings.Cut(s, ":")
	if !ok || len(hexAddr) != 2*addrLen {
		return netip.Addr{}, 0, fmt.Errorf("want %d hex digits, a colon and a port", 2*addrLen)
	}
	raw, err := hex.DecodeString(hexAddr)
	if err != nil {
		return netip.Addr{}, 0, err
	}
	b := make([]byte, addrLen)
	for i := 0; i < addrLen; i += 4 {
		binary.NativeEndian.PutUint32(b[i:], binary.BigEndian.Uint32(raw[i:]))
	}
	addr, _ := netip.AddrFromSlice(b)
	port, err := strconv.ParseUint(hexPort, 16, 16)
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("port: %w", err)
	}
	return addr, uint16(port), nil
}
