package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/pprof"
	"strings"
	"sync"
	"time"

	"github.com/nodeward/nodeward/agent/cri"
	"github.com/nodeward/nodeward/agent/hostfs"
	"github.com/nodeward/nodeward/agent/sender"
	"github.com/nodeward/nodeward/agent/source"
	"github.com/nodeward/nodeward/agent/tracer"
	"github.com/nodeward/nodeward/internal/cli"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"github.com/spf13/cobra"
)

type traceOptions struct {
	host        hostFlags
	output      string
	types       []string
	nodeName    string
	ringBuffer  uint32
	redact      []string
	redactFlags []string
	logLevel    string
	cpuProfile  string
	criSocket   string
}

func traceCmd() *cobra.Command {
	o := &traceOptions{}
	c := &cobra.Command{
		Use:   "trace",
		Short: "Print this node's process events live (eBPF), no collector needed",
		Long: `Load the eBPF programs and print every exec and exit on this node as it happens, with
the process's parent, ancestry, container and pod; secrets in argv are masked. Events the
node could not keep up with are never dropped silently: a "loss" line says how many.`,
		Example: `  nodeward-agent trace
  nodeward-agent trace -o json --type exec
  nodeward-agent trace --redact '(?i)^--db-url=(.+)$'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runTrace(cmd.Context(), cmd.OutOrStdout(), o)
		},
	}
	o.host.add(c)
	f := c.Flags()
	f.StringVarP(&o.output, "output", "o", "compact", "output format: compact or json")
	f.StringSliceVar(&o.types, "type", []string{"exec", "exit", "loss"}, "event types to print: exec, exit, loss")
	f.StringVar(&o.nodeName, "node-name", defaultNodeName(), "node name for exec ids and events (env NODE_NAME)")
	f.Uint32Var(&o.ringBuffer, "ring-buffer-bytes", 8<<20, "BPF ring buffer size (a power of two)")
	f.StringArrayVar(&o.redact, "redact", nil, "extra argv pattern to mask (regexp; its first group, or the match, is masked); repeatable")
	f.StringArrayVar(&o.redactFlags, "redact-flag", nil, "extra flag whose next argument is masked; repeatable")
	f.StringVar(&o.logLevel, "log-level", "warn", "debug, info, warn or error")
	f.StringVar(&o.criSocket, "cri-socket", "", criSocketUsage)
	f.StringVar(&o.cpuProfile, "cpu-profile", "", "write a Go CPU profile of the tracer to this file")
	_ = f.MarkHidden("cpu-profile")
	return c
}

// newRedactor is the default redaction plus the user's own patterns.
func newRedactor(patterns, flags []string) (*tracer.Redactor, error) {
	return tracer.NewRedactor(append(append([]string(nil), tracer.DefaultValuePatterns...), patterns...),
		append(append([]string(nil), tracer.DefaultSecretFlags...), flags...))
}

func runTrace(ctx context.Context, stdout io.Writer, o *traceOptions) error {
	log, err := cli.NewLogger(o.logLevel, "text")
	if err != nil {
		return err
	}
	if o.output != "compact" && o.output != "json" {
		return fmt.Errorf("unknown output format %q: want compact or json", o.output)
	}
	show := map[string]bool{}
	for _, t := range o.types {
		switch t {
		case "exec", "exit", "loss":
			show[t] = true
		default:
			return fmt.Errorf("--type %q: want exec, exit or loss", t)
		}
	}
	red, err := newRedactor(o.redact, o.redactFlags)
	if err != nil {
		return err
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	// The host root, for the CRI socket alone: trace runs no checks.
	root, err := hostfs.Open(o.host.root)
	if err != nil {
		return err
	}
	defer root.Close()
	pods := cri.New(cri.Config{Root: root, Socket: o.criSocket, Log: log})
	tr, err := tracer.New(tracer.Config{
		NodeName:        o.nodeName,
		BootID:          readBootID(o.host.proc),
		Proc:            o.host.proc,
		RingBufferBytes: o.ringBuffer,
		Redact:          red,
		Pods:            pods,
		Log:             log,
	})
	if err != nil {
		return err
	}
	defer tr.Close()
	log.Info("tracing", "programs", tr.Programs())

	w := newFlushWriter(stdout)
	defer w.stop()
	print := compactLine
	if o.output == "json" {
		print = jsonLines()
	}
	var werr error
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	criDone := make(chan struct{})
	go func() {
		defer close(criDone)
		_ = pods.Run(ctx) // an unreachable runtime is logged, never fatal
	}()
	defer func() { cancel(); <-criDone }()
	err = tr.Run(ctx, func(ev *nodewardv1.Event) {
		if !show[eventKind(ev)] || werr != nil {
			return
		}
		w.mu.Lock()
		werr = print(w.buf, ev)
		w.mu.Unlock()
		if werr != nil {
			cancel() // e.g. the pipe was closed
		}
	})
	if err == nil && werr != nil && !errors.Is(werr, os.ErrClosed) {
		err = werr
	}
	return err
}

// criSocketUsage describes --cri-socket for `run` and `trace`.
const criSocketUsage = "the container runtime's CRI socket under the host root, for pod and container names (empty: the first of /run/containerd/containerd.sock, /run/crio/crio.sock, /run/k3s/containerd/containerd.sock)"

func readBootID(proc string) string {
	b, _ := os.ReadFile(proc + "/sys/kernel/random/boot_id")
	return strings.TrimSpace(string(b))
}

func eventKind(ev *nodewardv1.Event) string {
	switch ev.GetBody().(type) {
	case *nodewardv1.Event_Exec:
		return "exec"
	case *nodewardv1.Event_Exit:
		return "exit"
	case *nodewardv1.Event_Loss:
		return "loss"
	}
	return ""
}

// flushWriter buffers output and flushes it every 100 ms: a storm of
// events costs one write per batch, and a quiet node still shows each
// event at once.
type flushWriter struct {
	mu   sync.Mutex
	buf  *bufio.Writer
	done chan struct{}
	wg   sync.WaitGroup
}

func newFlushWriter(w io.Writer) *flushWriter {
	f := &flushWriter{buf: bufio.NewWriterSize(w, 64<<10), done: make(chan struct{})}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-f.done:
				return
			case <-t.C:
				f.mu.Lock()
				_ = f.buf.Flush()
				f.mu.Unlock()
			}
		}
	}()
	return f
}

func (f *flushWriter) stop() {
	close(f.done)
	f.wg.Wait()
	f.mu.Lock()
	_ = f.buf.Flush()
	f.mu.Unlock()
}

// jsonLines returns a printer of one JSON object per line, for one stream.
func jsonLines() func(*bufio.Writer, *nodewardv1.Event) error {
	var enc tracer.JSONEncoder
	return func(w *bufio.Writer, ev *nodewardv1.Event) error {
		b, err := enc.Append(w.AvailableBuffer(), ev)
		if err != nil {
			return fmt.Errorf("encode event: %w", err)
		}
		_, err = w.Write(append(b, '\n'))
		return err
	}
}

// compactLine prints one event on one line:
//
//	10:43:01.123 exec  1234 uid=0 /bin/true a b  cwd=/root  parent=bash(1200)  container=3f1e9c2a7b8d pod=7e3b...
//	10:43:01.124 exit  1234 /bin/true code=0 1.2ms
//	10:43:01.500 loss  ring_buffer=10 queue=0
func compactLine(w *bufio.Writer, ev *nodewardv1.Event) error {
	b := ev.GetTime().AsTime().Local().AppendFormat(make([]byte, 0, 256), "15:04:05.000")
	switch x := ev.GetBody().(type) {
	case *nodewardv1.Event_Exec:
		p := x.Exec.GetProcess()
		args := strings.Join(p.GetArgs(), " ")
		if p.GetArgsTruncated() {
			args += " …"
		}
		b = fmt.Appendf(b, " exec %7d uid=%d %s  [%s]  cwd=%s", p.GetPid(), p.GetUid(), p.GetFilename(), args, p.GetCwd())
		if par := x.Exec.GetParent(); par != nil {
			b = fmt.Appendf(b, "  parent=%s(%d)", par.GetComm(), par.GetPid())
		} else {
			b = fmt.Appendf(b, "  ppid=%d", p.GetPpid())
		}
		if id := p.GetContainerId(); id != "" {
			b = fmt.Appendf(b, "  container=%.12s", id)
		}
		if pod := p.GetPod(); pod != nil {
			b = fmt.Appendf(b, "  pod=%s", podName(pod))
		}
	case *nodewardv1.Event_Exit:
		p := x.Exit.GetProcess()
		status := fmt.Sprintf("code=%d", x.Exit.GetExitCode())
		if s := x.Exit.GetSignal(); s != 0 {
			status = fmt.Sprintf("signal=%d", s)
		}
		b = fmt.Appendf(b, " exit %7d %s %s %s", p.GetPid(), p.GetFilename(), status, x.Exit.GetDuration().AsDuration().Round(time.Microsecond))
	case *nodewardv1.Event_Loss:
		b = fmt.Appendf(b, " loss ring_buffer=%d queue=%d by kind: %v %v", x.Loss.GetRingBuffer(), x.Loss.GetQueue(),
			x.Loss.GetRingBufferByKind(), x.Loss.GetQueueByKind())
	default:
		return nil
	}
	_, err := w.Write(append(b, '\n'))
	return err
}

func podName(p *nodewardv1.Pod) string {
	if p.GetName() != "" {
		return p.GetNamespace() + "/" + p.GetName()
	}
	return p.GetUid()
}

// tracing is the agent's tracer as `run` uses it: started if it can be,
// its status reported in every snapshot either way.
type tracing struct {
	mu     sync.Mutex
	status *nodewardv1.TracingStatus
	// counts reads the tracer's running totals; nil while tracing is off.
	counts func() (tracer.Counts, error)
}

// Counts returns the tracer's totals, ok false when tracing is off.
func (t *tracing) Counts() (tracer.Counts, bool) {
	t.mu.Lock()
	f := t.counts
	t.mu.Unlock()
	if f == nil {
		return tracer.Counts{}, false
	}
	c, err := f()
	return c, err == nil
}

// Status is the current tracing status, for Snapshot.node.tracing.
func (t *tracing) Status() *nodewardv1.TracingStatus {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.status
}

func (t *tracing) set(s *nodewardv1.TracingStatus) {
	t.mu.Lock()
	t.status = s
	t.mu.Unlock()
}

// Batches of events to the sender: up to 512 events, or what 200 ms gathered.
const (
	batchMax   = 512
	batchDelay = 200 * time.Millisecond
)

// startTracing starts the tracer for `run`, batching its events into snd.
// When eBPF cannot load, the agent runs on without it and says why.
func startTracing(ctx context.Context, log *slog.Logger, env *source.Env, nodeName, bootID string, sshLogs []string, snd *sender.Sender) *tracing {
	t := &tracing{}
	tr, err := tracer.New(tracer.Config{NodeName: nodeName, BootID: bootID, Proc: env.Proc, Pods: env.Pods, Log: log})
	if err != nil {
		log.Warn("tracing unavailable; inventory and checks go on", "reason", err)
		t.set(&nodewardv1.TracingStatus{State: nodewardv1.TracingState_TRACING_STATE_UNAVAILABLE, Reason: err.Error()})
		env.SSHUnavailable = "exec tracing is unavailable: " + err.Error()
		return t
	}
	t.set(&nodewardv1.TracingStatus{State: nodewardv1.TracingState_TRACING_STATE_ACTIVE, Programs: tr.Programs()})
	t.mu.Lock()
	t.counts = tr.Counts
	t.mu.Unlock()
	log.Info("tracing", "programs", tr.Programs())

	var mu sync.Mutex
	var batch []*nodewardv1.Event
	flush := func() {
		mu.Lock()
		b := batch
		batch = nil
		mu.Unlock()
		if len(b) > 0 {
			snd.EnqueueEvents(b)
		}
	}
	// SSH sessions ride in the same batches; their tracker tags execs.
	enrich := startSessions(ctx, log, env, nodeName, bootID, sshLogs, func(ev *nodewardv1.Event) {
		mu.Lock()
		batch = append(batch, ev)
		mu.Unlock()
	})
	go func() {
		defer tr.Close()
		tick := time.NewTicker(batchDelay)
		defer tick.Stop()
		done := make(chan error, 1)
		go func() {
			done <- tr.Run(ctx, func(ev *nodewardv1.Event) {
				if enrich != nil {
					enrich(ev)
				}
				mu.Lock()
				batch = append(batch, ev)
				full := len(batch) >= batchMax
				mu.Unlock()
				if full {
					flush()
				}
			})
		}()
		for {
			select {
			case <-tick.C:
				flush()
			case err := <-done:
				flush()
				if c, cerr := tr.Counts(); cerr == nil {
					log.Info("tracing stopped", "seen", c.Seen, "delivered", c.Delivered,
						"lost_ring_buffer", c.RingBufferLost, "lost_queue", c.QueueLost)
				}
				if err != nil {
					log.Error("tracing stopped", "err", err)
					t.set(&nodewardv1.TracingStatus{State: nodewardv1.TracingState_TRACING_STATE_UNAVAILABLE, Reason: err.Error()})
				}
				return
			}
		}
	}()
	return t
}
