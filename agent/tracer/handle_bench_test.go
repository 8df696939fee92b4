package tracer

import (
	"bufio"
	"io"
	"log/slog"
	"testing"
	"unsafe"

	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
)

func fixedRecord[T any](v T) []byte {
	return append([]byte(nil), unsafe.Slice((*byte)(unsafe.Pointer(&v)), unsafe.Sizeof(v))...)
}

// BenchmarkHandleStorm is the agent's user-space work for one exec of an
// exec storm: the fork, exec and exit records of a child of one parent,
// decoded, cached, attributed and written as JSON lines.
func BenchmarkHandleStorm(b *testing.B) {
	t := &Tracer{
		cfg:     Config{NodeName: "node", Redact: DefaultRedactor(), AncestorDepth: 3, Log: slog.New(slog.DiscardHandler)},
		clock:   newBootClock(),
		cgroups: newCgroupResolver("/proc"),
	}
	t.cache = NewCache("node", "boot", t.clock)
	t.cache.Exec(procKey{100, 5}, procKey{99, 4}, &nodewardv1.Process{Pid: 100, Comm: "storm", Filename: "/bench/storm", Args: []string{"storm", "vfork"}}, 3)
	t.cache.Exec(procKey{99, 4}, procKey{1, 1}, &nodewardv1.Process{Pid: 99, Comm: "bash", Filename: "/bin/bash"}, 3)
	w := bufio.NewWriterSize(io.Discard, 64<<10)
	print := jsonPrinter(w)
	h := handler{t: t, emit: print, strings: interner{}}
	ticks := uint64(1000)
	b.ReportAllocs()
	for b.Loop() {
		ticks++
		pid := uint32(1000 + ticks%30000)
		h.handle(fixedRecord(bpfForkEvent{Type: eventFork, Pid: pid, Ppid: 100, StartTicks: ticks, ParentStartTicks: 5}))
		h.handle(execRecord(bpfExecEvent{Pid: pid, Tid: pid, Ppid: 100, StartTicks: ticks, ParentStartTicks: 5, CgroupId: 1,
			Comm: [16]uint8{'t', 'i', 'n', 'y'}}, "/dev/shm/bench/tiny", []string{"bench", "shm", "dev"}, []string{"/dev/shm/bench/tiny", "t1-12345"}))
		h.handle(fixedRecord(bpfExitEvent{Type: eventExit, Pid: pid, Tid: pid, StartTicks: ticks, DurationNs: 1e6}))
	}
}

// jsonPrinter writes events as the trace command does.
func jsonPrinter(w *bufio.Writer) func(*nodewardv1.Event) {
	var enc JSONEncoder
	return func(ev *nodewardv1.Event) {
		b, err := enc.Append(w.AvailableBuffer(), ev)
		if err != nil {
			panic(err)
		}
		_, _ = w.Write(append(b, '\n'))
	}
}
