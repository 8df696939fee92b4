package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nodeward/nodeward/agent/cri"
	"github.com/nodeward/nodeward/agent/sender"
	"github.com/nodeward/nodeward/agent/sshtrace"
	"github.com/nodeward/nodeward/internal/auth"
	"github.com/nodeward/nodeward/internal/buildinfo"
	"github.com/nodeward/nodeward/internal/cli"
	"github.com/nodeward/nodeward/internal/flowcontrol"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"
)

type runOptions struct {
	auth      auth.ClientConfig
	host      hostFlags
	collector string
	nodeName  string
	interval  time.Duration
	heartbeat time.Duration
	spoolDir  string
	spoolMax  int64
	sshLogs   []string
	metrics   string
	criSocket string
	logLevel  string
	logFormat string
}

func runCmd() *cobra.Command {
	o := &runOptions{}
	c := &cobra.Command{
		Use:   "run",
		Short: "Stream this node's posture and events to a collector",
		Long: `Connect to the collector and keep streaming: a snapshot on every (re)connect and
whenever the node's posture changes (checked every --interval). Everything sent is kept
until the collector acks it and replayed after a reconnect; the connection is retried
with exponential backoff and jitter.`,
		Example: "  nodeward-agent run --collector collector.nodeward:7420 --node-name $NODE_NAME --root /host",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runAgent(cmd.Context(), o)
		},
	}
	o.host.add(c)
	f := c.Flags()
	def := os.Getenv("NODEWARD_COLLECTOR")
	f.StringVar(&o.collector, "collector", def, "collector address HOST:PORT (env NODEWARD_COLLECTOR)")
	f.StringVar(&o.nodeName, "node-name", defaultNodeName(), "this node's name (env NODE_NAME)")
	f.DurationVar(&o.interval, "interval", time.Minute, "how often to re-check the node for changes")
	f.DurationVar(&o.heartbeat, "heartbeat", 30*time.Second, "how often an idle stream tells the collector the node is alive")
	f.StringVar(&o.spoolDir, "spool-dir", "", "keep unacked data on disk here so a restart loses nothing (a hostPath in the DaemonSet); in memory when empty")
	f.Int64Var(&o.spoolMax, "spool-max-bytes", 64<<20, "bound on the spool; when full the oldest events are dropped and reported as lost")
	f.StringVar(&o.metrics, "metrics-listen", "", "serve Prometheus metrics, /healthz and /readyz at this address, e.g. :9421 (off when empty)")
	f.StringSliceVar(&o.sshLogs, "ssh-log", sshtrace.DefaultLogPaths, "sshd log files under the host root that enrich SSH sessions (auth method, key, failed attempts)")
	f.StringVar(&o.criSocket, "cri-socket", "", criSocketUsage)
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&o.logFormat, "log-format", "text", "text or json")
	f.StringVar(&o.auth.CAFile, "tls-ca", "", "CA of the collector's certificate; TLS is used with it, or whenever --collector is not loopback")
	f.StringVar(&o.auth.CertFile, "tls-cert", "", "client certificate naming this node (URI SAN nodeward://node/NAME); re-read on reconnect")
	f.StringVar(&o.auth.KeyFile, "tls-key", "", "client certificate's private key")
	f.StringVar(&o.auth.TokenFile, "token-file", os.Getenv("NODEWARD_TOKEN_FILE"), "projected service-account token (audience nodeward), re-read on every connect (env NODEWARD_TOKEN_FILE)")
	return c
}

func runAgent(ctx context.Context, o *runOptions) error {
	log, err := cli.NewLogger(o.logLevel, o.logFormat)
	if err != nil {
		return err
	}
	if o.collector == "" {
		return errors.New("--collector is required (or set NODEWARD_COLLECTOR)")
	}
	if o.nodeName == "" {
		return errors.New("--node-name is required (or set NODE_NAME)")
	}
	if o.interval <= 0 {
		return fmt.Errorf("--interval must be positive, got %s", o.interval)
	}
	env, done, err := o.host.env()
	if err != nil {
		return err
	}
	defer done()

	// Pod and container names from the runtime, for traced execs and
	// ports; stopped before the host root closes.
	pods := cri.New(cri.Config{Root: env.Root, Socket: o.criSocket, Log: log})
	env.Pods = pods
	criCtx, criCancel := context.WithCancel(ctx)
	criDone := make(chan struct{})
	go func() {
		defer close(criDone)
		_ = pods.Run(criCtx) // an unreachable runtime is logged, never fatal
	}()
	defer func() { criCancel(); <-criDone }()

	o.auth.Server, o.auth.Log = o.collector, log
	creds, err := auth.DialOptions(o.auth)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(o.collector, append(append(creds, flowcontrol.DialOptions()...),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 20 * time.Second, PermitWithoutStream: true}),
	)...)
	if err != nil {
		return fmt.Errorf("--collector %q: %w", o.collector, err)
	}
	defer conn.Close()

	bootID, _ := os.ReadFile(o.host.proc + "/sys/kernel/random/boot_id")
	rescan := make(chan struct{}, 1)
	poke := func() {
		select {
		case rescan <- struct{}{}:
		default:
		}
	}
	var queue sender.Queue
	if o.spoolDir != "" {
		sp, err := sender.OpenSpool(o.spoolDir, o.spoolMax)
		if err != nil {
			return err
		}
		queue = sp
		log.Info("spooling to disk", "dir", o.spoolDir, "pending", sp.Len(), "bytes", sp.Bytes(), "max_bytes", o.spoolMax)
	}
	snd := sender.New(conn, sender.Config{
		Queue:        queue,
		NodeName:     o.nodeName,
		BootID:       strings.TrimSpace(string(bootID)),
		AgentVersion: buildinfo.Version(),
		Heartbeat:    o.heartbeat,
		Log:          log,
		OnConnect:    poke,
		OnRescan:     func([]string) { poke() },
	})
	log.Info("agent starting", "node", o.nodeName, "collector", o.collector, "root", o.host.root, "version", buildinfo.Version())

	sendDone := make(chan struct{})
	go func() {
		defer close(sendDone)
		if err := snd.Run(ctx); err != nil {
			log.Error("sender stopped", "err", err)
		}
	}()

	// eBPF tracing (trace.go): events go to the sender in batches, and each
	// snapshot says whether tracing runs and, if not, why.
	trc := startTracing(ctx, log, env, o.nodeName, strings.TrimSpace(string(bootID)), o.sshLogs, snd)
	env.Tracing = trc.Status
	if o.metrics != "" {
		if err := serveMetrics(ctx, log, o.metrics, snd, trc); err != nil {
			return err
		}
	}

	// The first scan names the pods of listening ports when the runtime
	// answers quickly; a slow one only delays names to a later snapshot.
	select {
	case <-pods.Synced():
	case <-time.After(3 * time.Second):
	case <-ctx.Done():
	}

	var last *nodewardv1.Snapshot
	forceSend := true
	tick := time.NewTicker(o.interval)
	defer tick.Stop()
	for {
		snap, err := collect(ctx, env, o.nodeName, nil)
		if err != nil {
			return err
		}
		for _, s := range snap.GetSources() {
			if !s.GetOk() {
				log.Warn("source failed", "source", s.GetName(), "err", s.GetError())
			}
		}
		if forceSend || !sameContent(last, snap) {
			snd.EnqueueSnapshot(snap)
			last = snap
			log.Debug("snapshot queued")
		}
		forceSend = false
		select {
		case <-ctx.Done():
			<-sendDone
			if err := snd.Close(); err != nil {
				log.Warn("closing the queue", "err", err)
			}
			log.Info("agent stopped")
			return nil
		case <-tick.C:
		case <-rescan:
			// A (re)connect or the collector asked: send whatever we find.
			forceSend = true
		}
	}
}

func stamp(snap *nodewardv1.Snapshot, nodeName string) {
	if snap.Node == nil {
		snap.Node = &nodewardv1.Node{}
	}
	snap.Node.Name = nodeName
	snap.Node.AgentVersion = buildinfo.Version()
}

// sameContent compares two snapshots ignoring when they were taken and how
// long each source took.
func sameContent(a, b *nodewardv1.Snapshot) bool {
	if a == nil || b == nil {
		return a == b
	}
	strip := func(s *nodewardv1.Snapshot) *nodewardv1.Snapshot {
		c := proto.Clone(s).(*nodewardv1.Snapshot)
		c.CollectedAt = nil
		if c.SshActivity != nil {
			c.SshActivity.Since = nil
		}
		for _, st := range c.Sources {
			st.DurationMicros = 0
		}
		return c
	}
	return proto.Equal(strip(a), strip(b))
}
