package eventfilter

import (
	"fmt"
	"time"

	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers ExtractWire reads (event.proto).
const (
	eventTime      = 4
	eventFirstBody = 10 // exec; exit, ssh, loss and gap follow
	eventLastBody  = 14

	execProcess = 1 // ExecEvent.process and ExitEvent.process

	processUID       = 6
	processComm      = 11
	processFilename  = 12
	processContainer = 18
	processPod       = 19
	processSession   = 21

	podName      = 2
	podNamespace = 3
	sessionID    = 1
	sessionUser  = 3

	sshSessionID = 2
	sshUser      = 8
	sshUID       = 9

	timestampSeconds = 1
	timestampNanos   = 2
)

// bodyKinds are the event kinds of the body oneof's members, by field
// number from eventFirstBody.
var bodyKinds = [...]nodewardv1.EventKind{
	nodewardv1.EventKind_EVENT_KIND_EXEC, nodewardv1.EventKind_EVENT_KIND_EXIT, nodewardv1.EventKind_EVENT_KIND_SSH,
	nodewardv1.EventKind_EVENT_KIND_LOSS, nodewardv1.EventKind_EVENT_KIND_GAP,
}

// wireEvent is what ExtractWire gathers: protobuf's decoding rules (the
// last value of a field wins, a message field met twice merges, another
// member of a oneof discards the one before) applied as the fields come.
type wireEvent struct {
	sec      int64
	nanos    int32
	kind     nodewardv1.EventKind
	process  bool // the body has a process (exec and exit)
	filename string
	comm     string
	c        Columns
}

// ExtractWire returns the columns Extract returns for the event encoded in
// b, without decoding the rest of it. b must be an encoding proto.Unmarshal
// accepts (collector/wirecheck tells); a malformed one is an error.
func ExtractWire(b []byte) (Columns, error) {
	e := wireEvent{c: Columns{UID: -1}}
	err := walk(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case num == eventTime && typ == protowire.BytesType:
			return walk(v, e.timestamp)
		case num >= eventFirstBody && num <= eventLastBody && typ == protowire.BytesType:
			kind := bodyKinds[num-eventFirstBody]
			if kind != e.kind {
				e.kind, e.process, e.filename, e.comm, e.c = kind, false, "", "", Columns{UID: -1}
			}
			switch kind {
			case nodewardv1.EventKind_EVENT_KIND_EXEC, nodewardv1.EventKind_EVENT_KIND_EXIT:
				return walk(v, e.processOf)
			case nodewardv1.EventKind_EVENT_KIND_SSH:
				return walk(v, e.ssh)
			}
		}
		return nil
	})
	if err != nil {
		return Columns{}, fmt.Errorf("event: %w", err)
	}
	c := e.c
	c.Kind = e.kind
	c.TimeNS = time.Unix(e.sec, int64(e.nanos)).UnixNano()
	if e.process {
		c.Binary = e.filename
		if c.Binary == "" {
			c.Binary = e.comm
		}
		if c.UID < 0 {
			c.UID = 0
		}
	}
	return c, nil
}

func (e *wireEvent) timestamp(num protowire.Number, typ protowire.Type, _ []byte, x uint64) error {
	if typ == protowire.VarintType {
		switch num {
		case timestampSeconds:
			e.sec = int64(x)
		case timestampNanos:
			e.nanos = int32(x)
		}
	}
	return nil
}

func (e *wireEvent) processOf(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
	if num != execProcess || typ != protowire.BytesType {
		return nil
	}
	e.process = true
	return walk(v, e.processField)
}

func (e *wireEvent) processField(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
	if typ == protowire.VarintType {
		if num == processUID {
			e.c.UID = int64(uint32(x))
		}
		return nil
	}
	if typ != protowire.BytesType {
		return nil
	}
	switch num {
	case processComm:
		e.comm = string(v)
	case processFilename:
		e.filename = string(v)
	case processContainer:
		e.c.Container = string(v)
	case processPod:
		return stringFields(v, podName, &e.c.Pod, podNamespace, &e.c.Namespace)
	case processSession:
		return stringFields(v, sessionID, &e.c.Session, sessionUser, &e.c.User)
	}
	return nil
}

// stringFields sets *a and *b from string fields na and nb of the message
// encoded in v.
func stringFields(v []byte, na protowire.Number, a *string, nb protowire.Number, b *string) error {
	return walk(v, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if typ == protowire.BytesType && num == na {
			*a = string(v)
		} else if typ == protowire.BytesType && num == nb {
			*b = string(v)
		}
		return nil
	})
}

func (e *wireEvent) ssh(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
	switch {
	case num == sshSessionID && typ == protowire.BytesType:
		e.c.Session = string(v)
	case num == sshUser && typ == protowire.BytesType:
		e.c.User = string(v)
	case num == sshUID && typ == protowire.VarintType:
		e.c.UID = int64(uint32(x))
	}
	return nil
}

// walk calls fn with each field of a message: a length-delimited field's
// bytes as v, a number's value as x.
func walk(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var v []byte
		var x uint64
		switch typ {
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if err := fn(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}
