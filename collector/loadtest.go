package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nodeward/nodeward/collector/pkgver"
	"github.com/nodeward/nodeward/internal/flowcontrol"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

type loadOptions struct {
	agents      int
	rate        float64
	duration    time.Duration
	interval    time.Duration
	tails       int
	tailServer  string
	tailFilter  string
	queries     int
	queryOnly   bool
	prefix      string
	snapshot    bool
	maxInFlight int
	fillStore   string
	fillEvents  int
}

func loadtestCmd(c *client) *cobra.Command {
	o := &loadOptions{}
	cmd := &cobra.Command{
		Use:   "loadtest",
		Short: "Size a collector: simulate agents over real gRPC and measure ingest, acks, tails and queries",
		Long: `Simulate --agents agents, each on its own gRPC stream to --server, sending a snapshot
(packages, ports, findings) and then exec events at --rate events per second per agent,
in batches every --batch-interval, with the agent's real protocol (Hello, sequenced
batches, acks after commit). Optionally open --tails live tails and run --queries
queries afterwards. Prints ingest events/s, ack latency, tail latency and query latency.`,
		Example: `  nodeward loadtest --agents 1000 --rate 50 --duration 60s
  nodeward loadtest --agents 1000 --rate 50 --duration 60s --tails 10
  nodeward loadtest --query-only --queries 200`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return loadtest(cmd.Context(), cmd.OutOrStdout(), c, o)
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.agents, "agents", 100, "simulated agents (one stream and connection each)")
	f.Float64Var(&o.rate, "rate", 50, "events per second per agent")
	f.DurationVar(&o.duration, "duration", 30*time.Second, "how long to send")
	f.DurationVar(&o.interval, "batch-interval", 200*time.Millisecond, "how often each agent sends a batch")
	f.IntVar(&o.tails, "tails", 0, "live tail subscribers to open (tail latency)")
	f.StringVar(&o.tailServer, "tail-server", "", "collector replica the tails connect to (default --server)")
	f.StringVar(&o.tailFilter, "tail-binary", "", "tails allow only this binary regex (empty: everything)")
	f.IntVar(&o.queries, "queries", 0, "after sending, run this many of each query (ListPackages, QueryEvents)")
	f.BoolVar(&o.queryOnly, "query-only", false, "send nothing, only run the queries")
	f.StringVar(&o.prefix, "node-prefix", "load", "simulated node names are PREFIX-NNNNN")
	f.BoolVar(&o.snapshot, "snapshot", true, "send a snapshot (300 packages, ports, findings) when each agent connects")
	f.IntVar(&o.maxInFlight, "max-in-flight", 16, "unacked batches an agent may have before it waits")
	f.StringVar(&o.fillStore, "fill-store", "", "instead: write --fill-events events from --agents nodes straight into this store (sqlite:PATH or postgres://...), for query benchmarks")
	f.IntVar(&o.fillEvents, "fill-events", 10000000, "events --fill-store writes")
	return cmd
}

// latencies collects durations from many goroutines.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

func (l *latencies) pct(p float64) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return 0
	}
	sort.Slice(l.d, func(i, j int) bool { return l.d[i] < l.d[j] })
	i := int(p * float64(len(l.d)-1))
	return l.d[i]
}

func (l *latencies) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.d)
}

func dialInsecure(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, append(flowcontrol.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))...)
}

// simAgent is one simulated agent speaking the real agent protocol.
type simAgent struct {
	name   string
	conn   *grpc.ClientConn
	stream nodewardv1.AgentService_ConnectClient
	seq    uint64

	mu      sync.Mutex
	pending map[uint64]time.Time
	slots   chan struct{}
	acked   atomic.Uint64 // events acked
	ackLat  *latencies
	recvErr chan error
}

// connectAgent opens a stream and says Hello; acks are read in the background.
func connectAgent(ctx context.Context, addr, name string, inFlight int, ackLat *latencies) (*simAgent, error) {
	conn, err := dialInsecure(addr)
	if err != nil {
		return nil, err
	}
	stream, err := nodewardv1.NewAgentServiceClient(conn).Connect(ctx, grpc.ForceCodecV2(rawCodec{encoding.GetCodecV2(grpcproto.Name)}))
	if err != nil {
		conn.Close()
		return nil, err
	}
	if err := stream.Send(&nodewardv1.ConnectRequest{Payload: &nodewardv1.ConnectRequest_Hello{Hello: &nodewardv1.Hello{
		NodeName: name, BootId: "loadtest", AgentVersion: "loadtest"}}}); err != nil {
		conn.Close()
		return nil, err
	}
	resp, err := stream.Recv()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("hello: %w", err)
	}
	a := &simAgent{name: name, conn: conn, stream: stream, seq: resp.GetWelcome().GetLastStoredSequence(),
		pending: map[uint64]time.Time{}, slots: make(chan struct{}, inFlight), ackLat: ackLat, recvErr: make(chan error, 1)}
	go a.readAcks()
	return a, nil
}

func (a *simAgent) readAcks() {
	for {
		resp, err := a.stream.Recv()
		if err != nil {
			a.recvErr <- err
			return
		}
		ack := resp.GetAck()
		if ack == nil {
			continue
		}
		a.mu.Lock()
		at, ok := a.pending[ack.GetSequence()]
		delete(a.pending, ack.GetSequence())
		a.mu.Unlock()
		if ok {
			if a.ackLat != nil {
				a.ackLat.add(time.Since(at))
			}
			<-a.slots
		}
	}
}

// send sends one sequenced message and returns once it is on the wire (or
// the agent has too many unacked).
func (a *simAgent) send(ctx context.Context, req *nodewardv1.ConnectRequest, events int) error {
	return a.sendMsg(ctx, events, func(seq uint64) any {
		req.Sequence = seq
		return req
	})
}

// sendMsg sends the message msg builds for the next sequence number: a
// *ConnectRequest or, already encoded, a rawMessage.
func (a *simAgent) sendMsg(ctx context.Context, events int, msg func(seq uint64) any) error {
	select {
	case a.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	case err := <-a.recvErr:
		return err
	}
	a.seq++
	m := msg(a.seq)
	a.mu.Lock()
	a.pending[a.seq] = time.Now()
	a.mu.Unlock()
	if err := a.stream.SendMsg(m); err != nil {
		return err
	}
	a.acked.Add(uint64(events)) // counted as acked when the ack arrives; see drain
	return nil
}

// drain waits until every sent message is acked.
func (a *simAgent) drain(ctx context.Context, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		a.mu.Lock()
		n := len(a.pending)
		a.mu.Unlock()
		if n == 0 {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

func (a *simAgent) close() {
	_ = a.stream.CloseSend()
	a.conn.Close()
}

var (
	loadBinaries = []string{"/usr/bin/curl", "/bin/sh", "/usr/bin/kubectl", "/usr/bin/containerd-shim-runc-v2", "/usr/sbin/iptables", "/usr/bin/python3", "/usr/bin/ls", "/usr/bin/cat"}
	loadUsers    = []string{"root", "ec2-user", "ssm-user"}
)

// simEvent builds a realistic exec event stamped now (tails measure their
// latency from it).
func simEvent(r *rand.Rand, node string, now time.Time) *nodewardv1.Event {
	bin := loadBinaries[r.IntN(len(loadBinaries))]
	pid := uint32(r.IntN(4000000))
	return &nodewardv1.Event{NodeName: node, Time: timestamppb.New(now), Body: &nodewardv1.Event_Exec{Exec: &nodewardv1.ExecEvent{
		Process: &nodewardv1.Process{
			ExecId: fmt.Sprintf("%s:%d:%d", node, now.UnixNano(), pid), Pid: pid, Ppid: pid - 1, Uid: uint32(r.IntN(3) * 1000),
			Comm: bin[len(bin)-min(len(bin), 15):], Filename: bin, Args: []string{bin, "-c", fmt.Sprintf("job-%d", r.IntN(1000))},
			Cwd: "/", ContainerId: fmt.Sprintf("%064x", r.Uint64()), Pod: &nodewardv1.Pod{Name: fmt.Sprintf("web-%d", r.IntN(50)), Namespace: "shop"},
			StartTime: timestamppb.New(now), Session: &nodewardv1.Session{Id: fmt.Sprintf("s-%d", r.IntN(100)), User: loadUsers[r.IntN(len(loadUsers))]},
		},
		Parent: &nodewardv1.Process{Filename: "/usr/bin/containerd-shim-runc-v2", Pid: pid - 1},
	}}}
}

// rawMessage is a message already in wire form. The simulated agents send
// their event batches pre-encoded: the load generator shares the machine
// with the collector it measures, so its own CPU per event must stay small.
// The collector decodes every byte as it would an agent's.
type rawMessage []byte

// rawCodec is gRPC's protobuf codec that sends a rawMessage as it is.
type rawCodec struct{ encoding.CodecV2 }

func (c rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	if r, ok := v.(rawMessage); ok {
		return mem.BufferSlice{mem.SliceBuffer(r)}, nil
	}
	return c.CodecV2.Marshal(v)
}

// eventTemplates encodes n simulated exec events without their time, which
// each batch appends (tails measure their latency from it).
func eventTemplates(r *rand.Rand, n int) ([][]byte, error) {
	out := make([][]byte, n)
	for i := range out {
		ev := simEvent(r, "", time.Now())
		ev.Time = nil
		b, err := proto.Marshal(ev)
		if err != nil {
			return nil, err
		}
		out[i] = b
	}
	return out, nil
}

// Field numbers of the batch appendBatchRequest writes (agent_service.proto,
// event.proto, timestamp.proto).
const (
	requestSequenceField = 1
	requestEventsField   = 4
	batchEventsField     = 1
	eventTimeField       = 4
)

// appendBatchRequest appends a ConnectRequest carrying n events picked from
// templates, each stamped now.
func appendBatchRequest(dst []byte, r *rand.Rand, seq uint64, templates [][]byte, n int, now time.Time) []byte {
	var ts []byte
	ts = protowire.AppendTag(ts, 1, protowire.VarintType)
	ts = protowire.AppendVarint(ts, uint64(now.Unix()))
	ts = protowire.AppendTag(ts, 2, protowire.VarintType)
	ts = protowire.AppendVarint(ts, uint64(now.Nanosecond()))
	picked := make([][]byte, n)
	batchLen := 0
	for i := range picked {
		picked[i] = templates[r.IntN(len(templates))]
		evLen := len(picked[i]) + protowire.SizeTag(eventTimeField) + protowire.SizeBytes(len(ts))
		batchLen += protowire.SizeTag(batchEventsField) + protowire.SizeBytes(evLen)
	}
	dst = protowire.AppendTag(dst, requestSequenceField, protowire.VarintType)
	dst = protowire.AppendVarint(dst, seq)
	dst = protowire.AppendTag(dst, requestEventsField, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(batchLen))
	for _, t := range picked {
		dst = protowire.AppendTag(dst, batchEventsField, protowire.BytesType)
		dst = protowire.AppendVarint(dst, uint64(len(t)+protowire.SizeTag(eventTimeField)+protowire.SizeBytes(len(ts))))
		dst = append(dst, t...)
		dst = protowire.AppendTag(dst, eventTimeField, protowire.BytesType)
		dst = protowire.AppendBytes(dst, ts)
	}
	return dst
}

// simSnapshot is a node with 300 packages (openssl at one of a few
// versions), a few ports and findings.
func simSnapshot(r *rand.Rand, node string) *nodewardv1.Snapshot {
	rpm := nodewardv1.PackageManager_PACKAGE_MANAGER_RPM
	pk := []*nodewardv1.Package{{Name: "openssl-libs", Version: []string{"3.0.2", "3.0.8", "3.0.15"}[r.IntN(3)], Release: "1.amzn2023", Epoch: proto.Uint32(1), Arch: "x86_64", Manager: rpm, State: "installed"}}
	for i := range 299 {
		pk = append(pk, &nodewardv1.Package{Name: fmt.Sprintf("pkg-%03d", i), Version: fmt.Sprintf("1.%d.%d", i%7, r.IntN(3)), Release: "1.amzn2023", Arch: "x86_64", Manager: rpm, State: "installed"})
	}
	tcp := nodewardv1.Protocol_PROTOCOL_TCP
	ports := []*nodewardv1.ListeningPort{
		{Protocol: tcp, Address: "0.0.0.0", Port: 10250, Exposure: nodewardv1.Exposure_EXPOSURE_ANY, ProcessName: "kubelet", HostNetns: true},
		{Protocol: tcp, Address: "127.0.0.1", Port: 10248, Exposure: nodewardv1.Exposure_EXPOSURE_LOOPBACK, ProcessName: "kubelet", HostNetns: true},
	}
	if r.IntN(10) == 0 {
		ports = append(ports, &nodewardv1.ListeningPort{Protocol: tcp, Address: "0.0.0.0", Port: 22, Exposure: nodewardv1.Exposure_EXPOSURE_ANY, ProcessName: "sshd", HostNetns: true})
	}
	status := func() nodewardv1.FindingStatus {
		if r.IntN(4) == 0 {
			return nodewardv1.FindingStatus_FINDING_STATUS_FAIL
		}
		return nodewardv1.FindingStatus_FINDING_STATUS_PASS
	}
	return &nodewardv1.Snapshot{
		Node:        &nodewardv1.Node{Name: node, KernelRelease: "6.1.112-122.189.amzn2023.x86_64", Architecture: "x86_64", AgentVersion: "loadtest", Os: &nodewardv1.OsRelease{Id: "amzn", VersionId: "2023", PrettyName: "Amazon Linux 2023"}},
		CollectedAt: timestamppb.Now(),
		Packages:    &nodewardv1.PackageInventory{Packages: pk, InstalledCount: uint32(len(pk))},
		Ports:       &nodewardv1.PortInventory{Ports: ports, NetnsCount: 1},
		Findings: []*nodewardv1.Finding{
			{CheckId: "ssh.permit-root-login", Title: "sshd refuses root logins", Severity: nodewardv1.Severity_SEVERITY_HIGH, Status: status()},
			{CheckId: "lsm.enforcing", Title: "SELinux or AppArmor enforcing", Severity: nodewardv1.Severity_SEVERITY_HIGH, Status: status()},
			{CheckId: "patch.age", Title: "Packages patched in the last 30 days", Severity: nodewardv1.Severity_SEVERITY_MEDIUM, Status: status()},
		},
	}
}

func loadtest(ctx context.Context, w io.Writer, c *client, o *loadOptions) error {
	if o.agents < 1 || o.rate <= 0 || o.interval <= 0 {
		return errors.New("--agents, --rate and --batch-interval must be positive")
	}
	if o.fillStore != "" {
		return fill(ctx, w, o.fillStore, o.prefix, o.agents, o.fillEvents)
	}
	if !o.queryOnly {
		if err := runIngest(ctx, w, c, o); err != nil {
			return err
		}
	}
	if o.queries > 0 {
		return runQueries(ctx, w, c, o)
	}
	return nil
}

func runIngest(ctx context.Context, w io.Writer, c *client, o *loadOptions) error {
	ackLat, tailLat := &latencies{}, &latencies{}
	// Tails first, so they see the whole run.
	tailCtx, stopTails := context.WithCancel(ctx)
	defer stopTails()
	var tailMissed, tailGaps atomic.Uint64
	var tailWG sync.WaitGroup
	tailAddr := o.tailServer
	if tailAddr == "" {
		tailAddr = c.server
	}
	for range o.tails {
		conn, err := dialInsecure(tailAddr)
		if err != nil {
			return err
		}
		defer conn.Close()
		req := &nodewardv1.TailEventsRequest{}
		if o.tailFilter != "" {
			req.Allow = []*nodewardv1.EventFilter{{BinaryRegex: o.tailFilter}}
		}
		stream, err := nodewardv1.NewQueryServiceClient(conn).TailEvents(tailCtx, req)
		if err != nil {
			return fmt.Errorf("tail: %w", err)
		}
		if _, err := stream.Header(); err != nil {
			return fmt.Errorf("tail: %w", err)
		}
		tailWG.Add(1)
		go func() {
			defer tailWG.Done()
			for {
				resp, err := stream.Recv()
				if err != nil {
					return
				}
				now := time.Now()
				for _, ev := range resp.GetEvents() {
					if g := ev.GetGap(); g != nil {
						tailMissed.Add(g.GetMissed())
						tailGaps.Add(1)
						continue
					}
					tailLat.add(now.Sub(ev.GetTime().AsTime()))
				}
			}
		}()
	}

	fmt.Fprintf(w, "connecting %d agents to %s ...\n", o.agents, c.server)
	agents := make([]*simAgent, o.agents)
	var connectErr error
	var cmu sync.Mutex
	var cwg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range o.agents {
		cwg.Add(1)
		sem <- struct{}{}
		go func() {
			defer cwg.Done()
			defer func() { <-sem }()
			a, err := connectAgent(ctx, c.server, fmt.Sprintf("%s-%05d", o.prefix, i), o.maxInFlight, ackLat)
			cmu.Lock()
			defer cmu.Unlock()
			if err != nil {
				connectErr = err
				return
			}
			agents[i] = a
		}()
	}
	cwg.Wait()
	if connectErr != nil {
		return fmt.Errorf("connect: %w", connectErr)
	}
	defer func() {
		for _, a := range agents {
			a.close()
		}
	}()
	if o.snapshot {
		for i, a := range agents {
			r := rand.New(rand.NewPCG(uint64(i), 7))
			if err := a.send(ctx, &nodewardv1.ConnectRequest{Payload: &nodewardv1.ConnectRequest_Snapshot{Snapshot: simSnapshot(r, a.name)}}, 0); err != nil {
				return fmt.Errorf("snapshot: %w", err)
			}
		}
		for _, a := range agents {
			a.drain(ctx, 60*time.Second)
		}
		ackLat.mu.Lock()
		ackLat.d = nil // snapshot acks are not the ingest figure
		ackLat.mu.Unlock()
	}

	perBatch := o.rate * o.interval.Seconds()
	fmt.Fprintf(w, "sending %.0f events/s (%d agents x %.0f/s, batches of ~%.1f every %s) for %s\n",
		o.rate*float64(o.agents), o.agents, o.rate, perBatch, o.interval, o.duration)
	templates, err := eventTemplates(newRand(), 256)
	if err != nil {
		return err
	}
	runCtx, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()
	start := time.Now()
	var sendErrs atomic.Uint64
	var wg sync.WaitGroup
	for i, a := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(i), uint64(start.UnixNano())))
			// Spread the agents over the interval, as real nodes are.
			t := time.NewTimer(time.Duration(r.Int64N(int64(o.interval))))
			defer t.Stop()
			owed := 0.0
			for {
				select {
				case <-runCtx.Done():
					return
				case <-t.C:
				}
				t.Reset(o.interval)
				owed += perBatch
				n := int(owed)
				owed -= float64(n)
				if n == 0 {
					continue
				}
				err := a.sendMsg(runCtx, n, func(seq uint64) any {
					return rawMessage(appendBatchRequest(nil, r, seq, templates, n, time.Now()))
				})
				if err != nil {
					if runCtx.Err() == nil {
						sendErrs.Add(1)
					}
					return
				}
			}
		}()
	}
	wg.Wait()
	sentEvents := uint64(0)
	for _, a := range agents {
		sentEvents += a.acked.Load()
	}
	// Wait for the acks of what was sent, all agents at once, bounded.
	var undrainedN atomic.Int64
	var dwg sync.WaitGroup
	for _, a := range agents {
		dwg.Add(1)
		go func() {
			defer dwg.Done()
			if !a.drain(ctx, 60*time.Second) {
				undrainedN.Add(1)
			}
		}()
	}
	dwg.Wait()
	undrained := undrainedN.Load()
	elapsed := time.Since(start)
	time.Sleep(500 * time.Millisecond) // let tails receive the last batches
	stopTails()
	tailWG.Wait()

	fmt.Fprintf(w, "\ningest:   %d events acked in %s = %.0f events/s (%d agents, %d send errors, %d agents not fully acked)\n",
		sentEvents, elapsed.Round(time.Millisecond), float64(sentEvents)/elapsed.Seconds(), o.agents, sendErrs.Load(), undrained)
	fmt.Fprintf(w, "ack:      p50 %s  p99 %s  max %s  (%d batches)\n", ackLat.pct(.5).Round(time.Microsecond*100), ackLat.pct(.99).Round(time.Microsecond*100), ackLat.pct(1).Round(time.Microsecond*100), ackLat.count())
	if o.tails > 0 {
		fmt.Fprintf(w, "tail:     p50 %s  p99 %s  max %s  (%d subscribers, %d events received, %d gap markers, %d missed)\n",
			tailLat.pct(.5).Round(time.Microsecond*100), tailLat.pct(.99).Round(time.Microsecond*100), tailLat.pct(1).Round(time.Microsecond*100),
			o.tails, tailLat.count(), tailGaps.Load(), tailMissed.Load())
	}
	return nil
}

func runQueries(ctx context.Context, w io.Writer, c *client, o *loadOptions) error {
	conn, err := dialInsecure(c.server)
	if err != nil {
		return err
	}
	defer conn.Close()
	q := nodewardv1.NewQueryServiceClient(conn)
	op, v := pkgver.ParseOp("<3.0.8")
	node := func(i int) string { return fmt.Sprintf("%s-%05d", o.prefix, i%o.agents) }
	since := timestamppb.New(time.Now().Add(-time.Hour))
	kinds := []struct {
		name string
		run  func(i int) (int, error)
	}{
		{"ListPackages openssl-libs <3.0.8 (all nodes)", func(int) (int, error) {
			n := 0
			req := &nodewardv1.ListPackagesRequest{Name: "openssl-libs", VersionOp: op, Version: v, PageSize: 1000}
			for {
				resp, err := q.ListPackages(ctx, req)
				if err != nil {
					return n, err
				}
				n += len(resp.GetPackages())
				if resp.GetNextPageToken() == "" {
					return n, nil
				}
				req.PageToken = resp.GetNextPageToken()
			}
		}},
		{"QueryEvents newest 100 (fleet)", func(int) (int, error) {
			resp, err := q.QueryEvents(ctx, &nodewardv1.QueryEventsRequest{PageSize: 100})
			return len(resp.GetEvents()), err
		}},
		{"QueryEvents one node, last hour, 100", func(i int) (int, error) {
			resp, err := q.QueryEvents(ctx, &nodewardv1.QueryEventsRequest{PageSize: 100, StartTime: since, Filter: &nodewardv1.EventFilter{NodeNames: []string{node(i * 7919)}}})
			return len(resp.GetEvents()), err
		}},
		{"QueryEvents binary ^/usr/bin/curl$, 100", func(int) (int, error) {
			resp, err := q.QueryEvents(ctx, &nodewardv1.QueryEventsRequest{PageSize: 100, Filter: &nodewardv1.EventFilter{BinaryRegex: "^/usr/bin/curl$"}})
			return len(resp.GetEvents()), err
		}},
		{"QueryEvents node + binary + page 2", func(i int) (int, error) {
			req := &nodewardv1.QueryEventsRequest{PageSize: 50, Filter: &nodewardv1.EventFilter{NodeNames: []string{node(i * 104729)}, Kinds: []nodewardv1.EventKind{nodewardv1.EventKind_EVENT_KIND_EXEC}, BinaryRegex: "^/bin/sh$"}}
			resp, err := q.QueryEvents(ctx, req)
			if err != nil || resp.GetNextPageToken() == "" {
				return len(resp.GetEvents()), err
			}
			req.PageToken = resp.GetNextPageToken()
			resp, err = q.QueryEvents(ctx, req)
			return len(resp.GetEvents()), err
		}},
	}
	fmt.Fprintf(w, "\nqueries (%d each, sequential):\n", o.queries)
	for _, k := range kinds {
		lat := &latencies{}
		rows := 0
		for i := range o.queries {
			t := time.Now()
			n, err := k.run(i)
			if err != nil {
				return fmt.Errorf("%s: %w", k.name, err)
			}
			lat.add(time.Since(t))
			rows = n
		}
		fmt.Fprintf(w, "  %-44s p50 %8s  p99 %8s  (%d rows)\n", k.name, lat.pct(.5).Round(time.Microsecond*10), lat.pct(.99).Round(time.Microsecond*10), rows)
	}
	return nil
}

func newRand() *rand.Rand { return rand.New(rand.NewPCG(1, 2)) }

// fill writes events straight into a store through the Store interface
// (the same commit path ingest uses, without gRPC), to build a large store
// for query benchmarks quickly: n events from `nodes` nodes, their times
// spread over the last two hours, plus each node's snapshot. Events go in
// rounds of rising time across all nodes, as a live fleet sends them, so
// the time-ordered indexes grow at their ends.
func fill(ctx context.Context, w io.Writer, spec, prefix string, nodes, n int) error {
	st, err := openStore(ctx, spec, "loadtest-fill", slog.Default())
	if err != nil {
		return err
	}
	defer st.Close()
	start := time.Now()
	span := 2 * time.Hour
	const per = 500
	perNode := n / nodes
	rounds := (perNode + per - 1) / per
	seqs := make([]uint64, nodes)
	rands := make([]*rand.Rand, nodes)
	name := func(i int) string { return fmt.Sprintf("%s-%05d", prefix, i) }
	for i := range nodes {
		rands[i] = rand.New(rand.NewPCG(uint64(i), uint64(start.UnixNano())))
		if seqs[i], err = st.LastSequence(ctx, name(i)); err != nil {
			return err
		}
	}
	type job struct{ node, round int }
	var done atomic.Int64
	work := func(j job) error {
		i := j.node
		if j.round < 0 {
			if seqs[i] > 0 {
				return nil
			}
			seqs[i]++
			_, err := st.CommitSnapshot(ctx, name(i), seqs[i], simSnapshot(rands[i], name(i)), time.Now())
			return err
		}
		count := min(per, perNode-j.round*per)
		if count <= 0 {
			return nil
		}
		evs := make([]*nodewardv1.Event, count)
		seqs[i]++
		for k := range evs {
			frac := (float64(j.round) + rands[i].Float64()) / float64(rounds)
			evs[k] = simEvent(rands[i], name(i), start.Add(-span+time.Duration(frac*float64(span))))
			evs[k].Sequence, evs[k].Index = seqs[i], uint32(k)
		}
		if _, err := st.CommitEvents(ctx, name(i), seqs[i], evs, nil, time.Now()); err != nil {
			return err
		}
		done.Add(int64(count))
		return nil
	}
	for round := -1; round < rounds; round++ {
		jobs := make(chan job)
		errc := make(chan error, 16)
		var wg sync.WaitGroup
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range jobs {
					if err := work(j); err != nil {
						errc <- err
						return
					}
				}
			}()
		}
	feed:
		for i := range nodes {
			select {
			case jobs <- job{i, round}:
			case err := <-errc:
				close(jobs)
				wg.Wait()
				return err
			case <-ctx.Done():
				break feed
			}
		}
		close(jobs)
		wg.Wait()
		close(errc)
		if err := <-errc; err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if round >= 0 {
			fmt.Fprintf(w, "  round %d/%d: %d events, %.0f/s\n", round+1, rounds, done.Load(), float64(done.Load())/time.Since(start).Seconds())
		}
	}
	fmt.Fprintf(w, "filled %d events from %d nodes in %s (%.0f events/s, store API, no gRPC)\n", done.Load(), nodes,
		time.Since(start).Round(time.Second), float64(done.Load())/time.Since(start).Seconds())
	return nil
}
