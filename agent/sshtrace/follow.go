package sshtrace

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"time"

	"github.com/nodeward/nodeward/agent/sshlog"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

type logLine struct {
	line sshlog.Line
}

// follow tails one log file under the host root from its current end,
// reopening it when it is rotated (its inode changes) or truncated.
func (t *Tracker) follow(ctx context.Context, path string, out chan<- logLine) {
	var (
		offset int64 = -1
		ino    uint64
		carry  []byte
	)
	year := time.Now().Year()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		f, err := t.cfg.Root.Open(path)
		if err == nil {
			fi, _ := f.Stat()
			cur := inode(fi)
			switch {
			case offset < 0:
				offset = fi.Size() // start at the end: history is not news
			case cur != ino || fi.Size() < offset:
				offset, carry = 0, nil // rotated or truncated
			}
			ino = cur
			if fi.Size() > offset {
				buf := make([]byte, min(fi.Size()-offset, 4<<20))
				n, _ := f.ReadAt(buf, offset)
				offset += int64(n)
				data := append(carry, buf[:n]...)
				last := bytes.LastIndexByte(data, '\n')
				if last >= 0 {
					_ = sshlog.Read(bytes.NewReader(data[:last+1]), year, func(l sshlog.Line) {
						select {
						case out <- logLine{l}:
						case <-ctx.Done():
						}
					})
					carry = append([]byte(nil), data[last+1:]...)
				} else {
					carry = data
				}
			}
			f.Close()
		} else if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, io.EOF) {
			t.cfg.Log.Debug("ssh log unreadable", "path", path, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// handleLog links a log line to its connection by the remote address and
// port, which are unique while the connection lives.
func (t *Tracker) handleLog(l logLine) {
	ev := l.line.Event
	at := l.line.Time
	if at.IsZero() {
		at = time.Now()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.byRemote[remoteKey(ev.GetRemoteAddress(), ev.GetRemotePort())]
	switch ev.GetKind() {
	case nodewardv1.SshEventKind_SSH_EVENT_KIND_LOGIN:
		if c == nil {
			return
		}
		if c.login != nil {
			enrich(c.login, ev)
			t.releaseLogin(c)
		} else if !c.loggedIn {
			c.logged = ev
		}
	case nodewardv1.SshEventKind_SSH_EVENT_KIND_AUTH_FAILURE:
		// "Invalid user" precedes the "Failed ..." line that is the attempt.
		if ev.GetAuthMethod() == "" {
			return
		}
		ev.SessionId = ""
		t.noteFailure(at)
		if c != nil {
			ev.SessionId = c.id
			ev.SshdPid = c.pid
			ev.LocalAddress, ev.LocalPort = c.local, c.lport
		}
		t.out <- &nodewardv1.Event{Time: timestamppb.New(at), Body: &nodewardv1.Event_Ssh{Ssh: ev}}
	}
}
