// Package tracer traces process execution on the node with eBPF: every exec,
// fork and exit, decoded into the proto events, given ancestry from a
// process cache, attributed to containers and pods, and with secrets in
// argv masked. Losses are counted where they happen (the BPF ring buffer,
// the agent's queue) and reported as loss events.
package tracer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"golang.org/x/sys/unix"
)

// Config configures a Tracer.
type Config struct {
	// NodeName and BootID go into every exec_id.
	NodeName string
	BootID   string
	// Proc is the host's procfs ("/proc" with hostPID).
	Proc string
	// RingBufferBytes sizes the BPF ring buffer; a power of two and a
	// multiple of the page size. Default 8 MiB.
	RingBufferBytes uint32
	// QueueLen bounds the records read from the ring buffer and not yet
	// decoded; when it is full, records are dropped and counted. Default 16384.
	QueueLen int
	// Redact masks secrets in argv; nil uses DefaultRedactor.
	Redact *Redactor
	// AncestorDepth is how many generations above the parent an exec event
	// carries. Default 3.
	AncestorDepth int
	// FilterCgroupID traces only tasks in this cgroup v2 id (0: the whole node).
	FilterCgroupID uint64
	// LossInterval is how often the loss counters are checked. Default 1s.
	LossInterval time.Duration
	// WakeupBytes is how much the ring buffer holds before the kernel wakes
	// the reader; below it, the reader polls every PollInterval. Default: a
	// 32nd of the ring buffer. Set 1 to be woken for every event.
	WakeupBytes uint32
	// PollInterval bounds how long an event may wait in the ring buffer
	// when the node is quiet. Default 100ms.
	PollInterval time.Duration
	// Pods names the pod and container behind a container id (the CRI
	// cache); nil leaves events with the container id and pod uid the
	// cgroup path gives. It is called on the event path and must not block.
	Pods PodNamer
	Log  *slog.Logger
}

// PodNamer looks up a container id's pod name, namespace and container name
// without blocking. The returned Pod is shared and only read.
type PodNamer interface {
	Lookup(containerID string) (*nodewardv1.Pod, bool)
}

// Counts are the tracer's running totals, by kind ("exec", "exit", "fork").
type Counts struct {
	// Seen counts events the BPF programs tried to emit.
	Seen map[string]uint64
	// RingBufferLost counts events the ring buffer had no room for.
	RingBufferLost map[string]uint64
	// QueueLost counts records dropped because the agent's queue was full.
	QueueLost map[string]uint64
	// Delivered counts events handed to the consumer.
	Delivered map[string]uint64
}

var kinds = [...]string{eventExec: "exec", eventExit: "exit", eventFork: "fork"}

const (
	eventExec = 1
	eventExit = 2
	eventFork = 3
	numKinds  = 4
)

// Tracer owns the loaded programs, their links and the ring buffer reader.
type Tracer struct {
	cfg      Config
	objs     loaded
	links    []link.Link
	reader   *ringbuf.Reader
	programs []string
	cache    *Cache
	cgroups  *cgroupResolver
	clock    bootClock

	queueLost [numKinds]atomic.Uint64
	delivered [numKinds]atomic.Uint64
	runOnce   sync.Once

	// closeMu orders closing the reader after any AvailableBytes call,
	// which must not run on a closed reader.
	closeMu sync.RWMutex
	closed  bool
}

// available is the number of bytes waiting in the ring buffer; false once
// the reader is closed.
func (t *Tracer) available() (int, bool) {
	t.closeMu.RLock()
	defer t.closeMu.RUnlock()
	if t.closed {
		return 0, false
	}
	return t.reader.AvailableBytes(), true
}

func (t *Tracer) closeReader() error {
	t.closeMu.Lock()
	t.closed = true
	t.closeMu.Unlock()
	return t.reader.Close() // idempotent
}

// loaded is what the loader asks the kernel for: the maps and one set of
// programs (tp_btf or raw tracepoints).
type loaded struct {
	Events *ebpf.Map
	Stats  *ebpf.Map
	Exec   *ebpf.Program
	Exit   *ebpf.Program
	Fork   *ebpf.Program
}

type tpBTFObjects struct {
	Events *ebpf.Map     `ebpf:"events"`
	Stats  *ebpf.Map     `ebpf:"stats"`
	Exec   *ebpf.Program `ebpf:"tp_btf_exec"`
	Exit   *ebpf.Program `ebpf:"tp_btf_exit"`
	Fork   *ebpf.Program `ebpf:"tp_btf_fork"`
}

type rawTPObjects struct {
	Events *ebpf.Map     `ebpf:"events"`
	Stats  *ebpf.Map     `ebpf:"stats"`
	Exec   *ebpf.Program `ebpf:"raw_tp_exec"`
	Exit   *ebpf.Program `ebpf:"raw_tp_exit"`
	Fork   *ebpf.Program `ebpf:"raw_tp_fork"`
}

// ErrUnavailable wraps every reason tracing cannot run on this node.
var ErrUnavailable = errors.New("eBPF tracing unavailable")

// New loads and attaches the programs. Events start to queue in the ring
// buffer at once; Run reads them. The error wraps ErrUnavailable and says
// why, for the node's tracing status.
func New(cfg Config) (*Tracer, error) {
	if cfg.Proc == "" {
		cfg.Proc = "/proc"
	}
	if cfg.RingBufferBytes == 0 {
		cfg.RingBufferBytes = 8 << 20
	}
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = 16384
	}
	if cfg.Redact == nil {
		cfg.Redact = DefaultRedactor()
	}
	if cfg.AncestorDepth <= 0 {
		cfg.AncestorDepth = 3
	}
	if cfg.LossInterval <= 0 {
		cfg.LossInterval = time.Second
	}
	if cfg.WakeupBytes == 0 {
		cfg.WakeupBytes = cfg.RingBufferBytes / 32
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 100 * time.Millisecond
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return nil, fmt.Errorf("%w: the kernel has no BTF (/sys/kernel/btf/vmlinux): %w", ErrUnavailable, err)
	}
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; raising it is
	// best effort (it fails without CAP_SYS_RESOURCE, where it is not needed).
	_ = rlimit.RemoveMemlock()

	spec, err := loadBpf()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	spec.Maps["events"].MaxEntries = cfg.RingBufferBytes
	if err := spec.Variables["filter_cgroup_id"].Set(cfg.FilterCgroupID); err != nil {
		return nil, fmt.Errorf("%w: set cgroup filter: %w", ErrUnavailable, err)
	}
	if err := spec.Variables["wakeup_bytes"].Set(uint64(cfg.WakeupBytes)); err != nil {
		return nil, fmt.Errorf("%w: set wake-up threshold: %w", ErrUnavailable, err)
	}

	t := &Tracer{cfg: cfg}
	// tp_btf first; raw tracepoints where the kernel cannot do tp_btf.
	var tp tpBTFObjects
	btfErr := spec.LoadAndAssign(&tp, nil)
	if btfErr == nil {
		t.objs = loaded(tp)
		btfErr = t.attach(func(p *ebpf.Program, _ string) (link.Link, error) {
			return link.AttachTracing(link.TracingOptions{Program: p})
		}, "tp_btf/")
		if btfErr != nil {
			_ = t.Close()
			t = &Tracer{cfg: cfg}
		}
	}
	if t.objs.Exec == nil {
		var raw rawTPObjects
		if err := spec.LoadAndAssign(&raw, nil); err != nil {
			if errors.Is(btfErr, unix.EPERM) && errors.Is(err, unix.EPERM) {
				return nil, fmt.Errorf("%w: not permitted to load eBPF programs (the agent needs root, or CAP_BPF and CAP_PERFMON): %w",
					ErrUnavailable, unix.EPERM)
			}
			return nil, fmt.Errorf("%w: load programs: tp_btf: %w; raw tracepoints: %w", ErrUnavailable, btfErr, err)
		}
		t.objs = loaded(raw)
		if err := t.attach(func(p *ebpf.Program, name string) (link.Link, error) {
			return link.AttachRawTracepoint(link.RawTracepointOptions{Name: name, Program: p})
		}, "raw_tp/"); err != nil {
			_ = t.Close()
			return nil, fmt.Errorf("%w: attach: tp_btf: %w; raw tracepoints: %w", ErrUnavailable, btfErr, err)
		}
		cfg.Log.Info("tp_btf unavailable, using raw tracepoints", "err", btfErr)
	}

	t.reader, err = ringbuf.NewReader(t.objs.Events)
	if err != nil {
		_ = t.Close()
		return nil, fmt.Errorf("%w: ring buffer reader: %w", ErrUnavailable, err)
	}
	t.clock = newBootClock()
	t.cgroups = newCgroupResolver(cfg.Proc)
	t.cache = NewCache(cfg.NodeName, cfg.BootID, t.clock)
	return t, nil
}

func (t *Tracer) attach(attach func(*ebpf.Program, string) (link.Link, error), prefix string) error {
	for _, p := range []struct {
		prog *ebpf.Program
		name string
	}{{t.objs.Exec, "sched_process_exec"}, {t.objs.Exit, "sched_process_exit"}, {t.objs.Fork, "sched_process_fork"}} {
		l, err := attach(p.prog, p.name)
		if err != nil {
			return fmt.Errorf("%s%s: %w", prefix, p.name, err)
		}
		t.links = append(t.links, l)
		t.programs = append(t.programs, prefix+p.name)
	}
	return nil
}

// Programs names the attached programs, e.g. "tp_btf/sched_process_exec".
func (t *Tracer) Programs() []string { return append([]string(nil), t.programs...) }

// Cache is the tracer's process cache.
func (t *Tracer) Cache() *Cache { return t.cache }

// Close detaches the programs and frees the maps. It may be called again.
func (t *Tracer) Close() error {
	var errs []error
	if t.reader != nil {
		errs = append(errs, t.closeReader())
	}
	for _, l := range t.links {
		errs = append(errs, l.Close())
	}
	t.links = nil
	for _, p := range []*ebpf.Program{t.objs.Exec, t.objs.Exit, t.objs.Fork} {
		if p != nil {
			errs = append(errs, p.Close())
		}
	}
	for _, m := range []*ebpf.Map{t.objs.Events, t.objs.Stats} {
		if m != nil {
			errs = append(errs, m.Close())
		}
	}
	t.objs = loaded{}
	return errors.Join(errs...)
}

// Counts reads the BPF counters and the agent's own.
func (t *Tracer) Counts() (Counts, error) {
	c := Counts{Seen: map[string]uint64{}, RingBufferLost: map[string]uint64{}, QueueLost: map[string]uint64{}, Delivered: map[string]uint64{}}
	for k := eventExec; k < numKinds; k++ {
		name := kinds[k]
		seen, err := t.stat(uint32((k - 1) * 2))
		if err != nil {
			return c, err
		}
		lost, err := t.stat(uint32((k-1)*2 + 1))
		if err != nil {
			return c, err
		}
		c.Seen[name] = seen
		c.RingBufferLost[name] = lost
		c.QueueLost[name] = t.queueLost[k].Load()
		c.Delivered[name] = t.delivered[k].Load()
	}
	return c, nil
}

func (t *Tracer) stat(idx uint32) (uint64, error) {
	var per []uint64
	if err := t.objs.Stats.Lookup(idx, &per); err != nil {
		return 0, fmt.Errorf("read BPF counter %d: %w", idx, err)
	}
	var sum uint64
	for _, v := range per {
		sum += v
	}
	return sum, nil
}

// Run fills the process cache from /proc, then reads events until ctx ends,
// calling emit for each (from one goroutine, in ring-buffer order). Events
// already in the ring buffer when ctx ends are still handled.
//
// emit may add to the event's own process (a session, say) before it
// returns; after that the event is read-only: the process cache hands the
// same Process messages to later events as their parent and ancestors. A slow
// emit fills the queue; what does not fit is dropped and counted, never
// blocking the ring buffer reader. Run may be called once.
func (t *Tracer) Run(ctx context.Context, emit func(*nodewardv1.Event)) error {
	started := false
	t.runOnce.Do(func() { started = true })
	if !started {
		return errors.New("tracer: Run called twice")
	}
	if err := t.cache.FillFromProc(t.cfg.Proc, t.cfg.Redact); err != nil {
		t.cfg.Log.Warn("process cache: reading /proc at start-up", "err", err)
	}

	batchLen := min(256, t.cfg.QueueLen)
	queue := make(chan *recordBatch, max(1, t.cfg.QueueLen/batchLen))
	readDone := make(chan error, 1)
	go func() { readDone <- t.read(queue, batchLen) }()
	// When ctx ends, the reader hands over what the ring buffer still holds
	// and stops: events that happened before the end are not thrown away.
	stop := context.AfterFunc(ctx, func() {
		if err := t.reader.Flush(); err != nil {
			_ = t.closeReader()
		}
	})
	defer stop()

	h := handler{t: t, emit: emit, strings: interner{}}
	loss := time.NewTicker(t.cfg.LossInterval)
	defer loss.Stop()
	sweep := time.NewTicker(time.Minute)
	defer sweep.Stop()
	var last Counts
	for {
		select {
		case batch, ok := <-queue:
			if !ok {
				h.reportLoss(&last)
				err := <-readDone
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			for _, rec := range *batch {
				h.handle(*rec)
			}
			releaseBatch(batch)
		case <-loss.C:
			h.reportLoss(&last)
		case <-sweep.C:
			t.cache.Sweep(t.cfg.Proc)
		}
	}
}

// read moves records from the ring buffer into queue, in batches of what
// the ring buffer holds (at most batchLen), so a storm costs one hand-over
// per batch. When the queue is full the reader waits while the ring buffer
// is less than half full (it holds the events meanwhile, and costs no agent
// memory); past that it drops the batch, counting its records by kind, so
// that the kernel can keep taking the newest events.
func (t *Tracer) read(queue chan<- *recordBatch, batchLen int) error {
	defer close(queue)
	var rec ringbuf.Record
	batch := getBatch(batchLen)
	half := int(t.cfg.RingBufferBytes / 2)
	send := func() {
		for {
			select {
			case queue <- batch:
				batch = getBatch(batchLen)
				return
			default:
			}
			if n, ok := t.available(); ok && n < half {
				time.Sleep(time.Millisecond)
				continue
			}
			for _, b := range *batch {
				if k := int((*b)[0]); k > 0 && k < numKinds {
					t.queueLost[k].Add(1)
				}
			}
			releaseBatch(batch)
			batch = getBatch(batchLen)
			return
		}
	}
	for {
		if n, ok := t.available(); len(*batch) > 0 && (len(*batch) == batchLen || n == 0 || !ok) {
			send()
		}
		t.reader.SetDeadline(time.Now().Add(t.cfg.PollInterval))
		if err := t.reader.ReadInto(&rec); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			if errors.Is(err, ringbuf.ErrFlushed) {
				if len(*batch) > 0 {
					send()
				}
				return nil
			}
			if errors.Is(err, ringbuf.ErrClosed) || errors.Is(err, os.ErrClosed) {
				return nil
			}
			return fmt.Errorf("read ring buffer: %w", err)
		}
		if len(rec.RawSample) == 0 {
			continue
		}
		b := getRecord(len(rec.RawSample))
		copy(*b, rec.RawSample)
		*batch = append(*batch, b)
	}
}

// recordBatch is records read together, each a pooled buffer.
type recordBatch []*[]byte

var batchPool = sync.Pool{New: func() any { return new(recordBatch) }}

func getBatch(n int) *recordBatch {
	b := batchPool.Get().(*recordBatch)
	if cap(*b) < n {
		*b = make(recordBatch, 0, n)
	}
	return b
}

// releaseBatch returns the batch and its records to their pools.
func releaseBatch(b *recordBatch) {
	for _, rec := range *b {
		releaseRecord(rec)
	}
	clear(*b)
	*b = (*b)[:0]
	batchPool.Put(b)
}

// Small records (exit, fork, most execs) come from pools so a storm does
// not churn the garbage collector.
var (
	smallPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}
	largePool = sync.Pool{New: func() any { b := make([]byte, 0, 9216); return &b }}
)

// getRecord returns a pooled buffer of n bytes; releaseRecord takes it back
// by the same pointer, so that returning it allocates nothing.
func getRecord(n int) *[]byte {
	p := smallPool.Get().(*[]byte)
	if n > cap(*p) {
		smallPool.Put(p)
		p = largePool.Get().(*[]byte)
	}
	*p = (*p)[:n]
	return p
}

func releaseRecord(p *[]byte) {
	if cap(*p) == 512 {
		smallPool.Put(p)
	} else if cap(*p) == 9216 {
		largePool.Put(p)
	}
}

// HostCgroupID returns the cgroup v2 id (the inode number) of dir, a cgroup
// directory, for Config.FilterCgroupID.
func HostCgroupID(dir string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return 0, fmt.Errorf("cgroup %s: %w", dir, err)
	}
	return st.Ino, nil
}

// procPath joins procfs paths.
func procPath(proc string, parts ...string) string {
	return filepath.Join(append([]string{proc}, parts...)...)
}
