// Package cri names the pods and containers behind container ids, from the
// container runtime's CRI socket (k8s.io/cri-api v1 RuntimeService).
//
// The cgroup path already gives a process's container id and pod uid; the
// pod's name and namespace and the container's name live only in the
// runtime. A Client keeps them in a cache that the tracer's event path reads
// without blocking: a miss schedules a refresh in the background, so later
// events of that container get the names. Without a reachable runtime the
// Client says so once and every lookup misses.
package cri

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nodeward/nodeward/agent/hostfs"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The labels kubelet puts on every container it creates; used when a
// container's sandbox is not in the sandbox list (it raced the listing).
const (
	labelPodName      = "io.kubernetes.pod.name"
	labelPodNamespace = "io.kubernetes.pod.namespace"
	labelPodUID       = "io.kubernetes.pod.uid"
)

// Config configures a Client.
type Config struct {
	// Root is the host root the socket is discovered under.
	Root *hostfs.Root
	// Socket is the CRI socket's host path; empty discovers one of
	// DefaultSockets under Root.
	Socket string
	// TTL is how often the whole cache is refreshed, and how long an id
	// the runtime did not know is not asked about again. Default 30s.
	TTL time.Duration
	// MinRefresh bounds how often misses may trigger a refresh. Default 1s.
	MinRefresh time.Duration
	// MaxEntries bounds the cache. Default 65536.
	MaxEntries int
	// Timeout bounds each call to the runtime. Default 5s.
	Timeout time.Duration
	Log     *slog.Logger
}

// Client is a cached view of the runtime's pods and containers. Lookup is
// safe for concurrent use and never blocks on the runtime; Run keeps the
// cache fresh.
type Client struct {
	cfg Config

	snap atomic.Pointer[map[string]*nodewardv1.Pod]
	kick chan struct{}

	mu      sync.Mutex
	pending map[string]time.Time // missed ids, and when first asked
	absent  map[string]time.Time // ids the runtime did not know, until when not to ask again

	refreshes atomic.Uint64
	state     atomic.Value // string: the last reason the runtime was unreachable, "" when reachable

	synced     chan struct{}
	syncedOnce sync.Once
}

// Bound on the miss bookkeeping, so ids that are never found (containers
// of another runtime) cannot grow it.
const maxMisses = 4096

// New returns a Client; nothing is dialled until Run.
func New(cfg Config) *Client {
	if cfg.TTL <= 0 {
		cfg.TTL = 30 * time.Second
	}
	if cfg.MinRefresh <= 0 {
		cfg.MinRefresh = time.Second
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = 65536
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	c := &Client{
		cfg:     cfg,
		kick:    make(chan struct{}, 1),
		pending: map[string]time.Time{},
		absent:  map[string]time.Time{},
		synced:  make(chan struct{}),
	}
	empty := map[string]*nodewardv1.Pod{}
	c.snap.Store(&empty)
	c.state.Store("not started")
	return c
}

// Lookup returns the pod and container name of a container (or pod
// sandbox) id from the cache. The result is shared: read it, never modify
// it. On a miss it schedules a refresh and returns at once.
func (c *Client) Lookup(containerID string) (*nodewardv1.Pod, bool) {
	if containerID == "" {
		return nil, false
	}
	if p, ok := (*c.snap.Load())[containerID]; ok {
		return p, true
	}
	now := time.Now()
	c.mu.Lock()
	if until, ok := c.absent[containerID]; ok && now.Before(until) {
		c.mu.Unlock()
		return nil, false
	}
	if _, ok := c.pending[containerID]; !ok && len(c.pending) < maxMisses {
		c.pending[containerID] = now
	}
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default: // a refresh is already due
	}
	return nil, false
}

// Synced is closed once Run has first asked the runtime, whether it
// answered or not: a caller about to look up many ids at start-up (the
// first ports scan) may wait for it, briefly.
func (c *Client) Synced() <-chan struct{} { return c.synced }

// Len is the number of ids in the cache.
func (c *Client) Len() int { return len(*c.snap.Load()) }

// Refreshes counts the completed refreshes.
func (c *Client) Refreshes() uint64 { return c.refreshes.Load() }

// Unreachable is why the runtime could not be asked at the last attempt,
// or "" when it answered.
func (c *Client) Unreachable() string { return c.state.Load().(string) }

// Run refreshes the cache every TTL and after misses, until ctx ends. It
// returns nil when ctx ends; an unreachable runtime is logged once (and
// again once it comes back), never returned.
func (c *Client) Run(ctx context.Context) error {
	var (
		conn   *grpc.ClientConn
		rt     runtimeapi.RuntimeServiceClient
		socket string
		warned bool
	)
	defer func() {
		if conn != nil {
			_ = conn.Close()
		}
	}()
	ticker := time.NewTicker(c.cfg.TTL)
	defer ticker.Stop()
	for {
		// (Re)discover while the runtime is unreachable: it may start after
		// the agent, or come back on another socket.
		if rt == nil || c.Unreachable() != "" {
			p, err := Discover(c.cfg.Root, c.cfg.Socket, DefaultSockets)
			switch {
			case err != nil:
				if conn != nil {
					_ = conn.Close()
				}
				conn, rt, socket = nil, nil, ""
				c.fail(&warned, err)
			case p != socket || conn == nil:
				if conn != nil {
					_ = conn.Close()
				}
				conn, err = grpc.NewClient("unix://"+p,
					grpc.WithTransportCredentials(insecure.NewCredentials()),
					grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(32<<20)))
				if err != nil {
					conn, rt = nil, nil
					c.fail(&warned, fmt.Errorf("CRI socket %s: %w", p, err))
				} else {
					socket, rt = p, runtimeapi.NewRuntimeServiceClient(conn)
				}
			}
		}
		if rt != nil {
			start := time.Now()
			first := c.refreshes.Load() == 0
			if err := c.refresh(ctx, rt, start); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				c.fail(&warned, fmt.Errorf("CRI socket %s: %w", socket, err))
				// Dial afresh next time: a channel left to grpc's own
				// reconnect backoff could lag a restarted runtime by minutes.
				_ = conn.Close()
				conn, rt = nil, nil
			} else {
				if warned || first {
					c.cfg.Log.Info("CRI runtime reachable; pods get names", "socket", socket, "entries", c.Len())
				}
				warned = false
			}
		}
		c.syncedOnce.Do(func() { close(c.synced) })
		last := time.Now()
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		case <-c.kick:
			// Misses come in bursts (a new pod's first execs): refresh at
			// most every MinRefresh.
			if wait := c.cfg.MinRefresh - time.Since(last); wait > 0 {
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(wait):
				}
			}
		}
	}
}

func (c *Client) fail(warned *bool, err error) {
	c.state.Store(err.Error())
	if !*warned {
		c.cfg.Log.Warn("CRI runtime unreachable; pods keep container id and pod uid from the cgroup, without names", "reason", err)
		*warned = true
	}
	c.forgetMisses(time.Now())
}

// refresh lists the runtime's pod sandboxes and containers and swaps in a
// new cache. Misses asked before start and still unknown are not asked
// about again for a TTL. What it publishes goes in the order a caller
// reads it: the state, the entries, the count, then the misses settled.
func (c *Client) refresh(ctx context.Context, rt runtimeapi.RuntimeServiceClient, start time.Time) error {
	cctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	sbs, err := rt.ListPodSandbox(cctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return fmt.Errorf("list pod sandboxes: %w", err)
	}
	cs, err := rt.ListContainers(cctx, &runtimeapi.ListContainersRequest{})
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	m, truncated := build(sbs.GetItems(), cs.GetContainers(), c.cfg.MaxEntries)
	if truncated {
		c.cfg.Log.Warn("CRI cache full; some containers stay unnamed", "max_entries", c.cfg.MaxEntries)
	}
	c.state.Store("")
	c.snap.Store(&m)
	c.refreshes.Add(1)
	c.forgetMisses(start)
	// A kick left by misses this refresh answered would only ask again.
	c.mu.Lock()
	if len(c.pending) == 0 {
		select {
		case <-c.kick:
		default:
		}
	}
	c.mu.Unlock()
	return nil
}

// forgetMisses marks the ids missed before t, and still unknown, absent for
// a TTL, so a container the runtime does not know (another runtime's, or
// one already gone) does not trigger a refresh on every event.
func (c *Client) forgetMisses(t time.Time) {
	m := *c.snap.Load()
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, asked := range c.pending {
		if asked.After(t) {
			continue
		}
		delete(c.pending, id)
		if _, ok := m[id]; !ok && len(c.absent) < maxMisses {
			c.absent[id] = t.Add(c.cfg.TTL)
		}
	}
	for id, until := range c.absent {
		if t.After(until) {
			delete(c.absent, id)
		}
	}
}

// build maps container and sandbox ids to their pod, at most max entries.
// A sandbox's own id (its pause process) maps to the pod with no container
// name.
func build(sbs []*runtimeapi.PodSandbox, cs []*runtimeapi.Container, max int) (map[string]*nodewardv1.Pod, bool) {
	m := make(map[string]*nodewardv1.Pod, min(len(sbs)+len(cs), max))
	pods := make(map[string]*nodewardv1.Pod, len(sbs))
	for _, sb := range sbs {
		md := sb.GetMetadata()
		p := &nodewardv1.Pod{Uid: md.GetUid(), Name: md.GetName(), Namespace: md.GetNamespace()}
		pods[sb.GetId()] = p
		if len(m) >= max {
			return m, true
		}
		m[sb.GetId()] = p
	}
	for _, ct := range cs {
		if len(m) >= max {
			return m, true
		}
		p := &nodewardv1.Pod{ContainerName: ct.GetMetadata().GetName()}
		if sb, ok := pods[ct.GetPodSandboxId()]; ok {
			p.Uid, p.Name, p.Namespace = sb.Uid, sb.Name, sb.Namespace
		} else {
			l := ct.GetLabels()
			p.Uid, p.Name, p.Namespace = l[labelPodUID], l[labelPodName], l[labelPodNamespace]
		}
		m[ct.GetId()] = p
	}
	return m, false
}
