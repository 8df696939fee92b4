package sshtrace

import (
	"bytes"
	"fmt"
	"io"
)

// maxBinary bounds how much of an executable is scanned for sshd's marks.
const maxBinary = 64 << 20

// serverMarks are format strings only OpenSSH's server binaries (sshd, and
// since 9.8 sshd-session and sshd-auth) log with; the ssh client has
// "OpenSSH_" too but none of these.
var serverMarks = [][]byte{
	[]byte("Server listening on %s port %s"),
	[]byte("Connection from %s port %d on %s port %d"),
	[]byte("Accepted %s for %s"),
}

// goBuildInfo starts a Go binary's build information: a Go program (this
// agent among them, which holds the marks above as data) is never sshd.
var goBuildInfo = []byte("\xff Go buildinf:")

// IsSSHDBinary reports whether r is an OpenSSH server executable, by its
// content rather than its name, so a renamed copy is recognised and a
// program merely called sshd is not.
func IsSSHDBinary(r io.Reader) (bool, error) {
	const chunk = 256 << 10
	const overlap = 32
	buf := make([]byte, chunk+overlap)
	var openssh, server, golang bool
	carry := 0
	total := 0
	for total < maxBinary {
		n, err := io.ReadFull(r, buf[carry:])
		if n > 0 {
			window := buf[:carry+n]
			openssh = openssh || bytes.Contains(window, []byte("OpenSSH_"))
			golang = golang || bytes.Contains(window, goBuildInfo)
			for _, m := range serverMarks {
				server = server || bytes.Contains(window, m)
			}
			total += n
			// Keep the tail so a mark split across reads is still found.
			carry = copy(buf, window[max(0, len(window)-overlap):])
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return openssh && server && !golang, nil
		}
		if err != nil {
			return false, fmt.Errorf("read executable: %w", err)
		}
	}
	return false, nil
}
