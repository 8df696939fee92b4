package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/nodeward/nodeward/collector/hub"
	"github.com/nodeward/nodeward/collector/ingest"
	"github.com/nodeward/nodeward/collector/metrics"
	"github.com/nodeward/nodeward/collector/query"
	"github.com/nodeward/nodeward/collector/store"
	"github.com/nodeward/nodeward/collector/store/postgres"
	"github.com/nodeward/nodeward/collector/store/sqlite"
	"github.com/nodeward/nodeward/internal/buildinfo"
	"github.com/nodeward/nodeward/internal/cli"
	"github.com/nodeward/nodeward/internal/flowcontrol"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
)

// defaultMaxMessage bounds one agent message: a snapshot of a node with
// thousands of packages is a few MiB.
const defaultMaxMessage = 16 << 20

type serveOptions struct {
	listen        string
	store         string
	metricsListen string
	retention     time.Duration
	replica       string
	tailQueue     int
	cpuProfile    string
	logLevel      string
	logFormat     string
	stopTimeout   time.Duration
	limits        ingest.Limits
	maxMsgBytes   int
	auth          serveAuth
}

func serveCmd() *cobra.Command {
	o := &serveOptions{}
	c := &cobra.Command{
		Use:   "serve",
		Short: "Run the collector: accept agent streams, store them, answer queries",
		Long: `Run the collector. Agents connect to --listen and stream snapshots and events; each
is acked only once it is committed to --store. The same address serves the query API,
the gRPC health service and server reflection (grpcurl works).

Stores:
  sqlite:PATH        an embedded SQLite file (WAL mode), created if missing
  postgres://...     a PostgreSQL database (pgx connection URL); several replicas
                     may share it, each sees every agent in queries and tails

Events older than --retention are deleted in the background in small batches;
snapshot history and change records are kept as long. Prometheus metrics are
served on --metrics-listen at /metrics.`,
		Example: `  nodeward serve --listen 127.0.0.1:7420 --store sqlite:/var/lib/nodeward/nodeward.db
  nodeward serve --store postgres://nodeward@db:5432/nodeward --metrics-listen :9420`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return serve(cmd.Context(), o)
		},
	}
	f := c.Flags()
	f.StringVar(&o.listen, "listen", "127.0.0.1:7420", "address to serve agents and queries on")
	f.StringVar(&o.store, "store", "sqlite:nodeward.db", "where to keep the fleet's data (sqlite:PATH or postgres://...)")
	f.StringVar(&o.metricsListen, "metrics-listen", "", "serve Prometheus metrics at http://ADDR/metrics (off when empty)")
	f.DurationVar(&o.retention, "retention", 14*24*time.Hour, "delete events older than this (0 keeps everything)")
	f.StringVar(&o.replica, "replica-id", defaultReplica(), "this replica's name in a shared PostgreSQL store")
	f.IntVar(&o.tailQueue, "tail-queue", hub.DefaultQueue, "events each live tail may fall behind before it misses some")
	f.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to this file (sizing, debugging)")
	_ = f.MarkHidden("cpuprofile")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&o.logFormat, "log-format", "text", "text or json")
	f.DurationVar(&o.stopTimeout, "shutdown-timeout", 15*time.Second, "how long to let in-flight commits finish on SIGTERM")
	f.Float64Var(&o.limits.EventsPerSecond, "agent-rate", 5000, "events per second one agent may send; a faster agent is slowed, not dropped (0: no limit)")
	f.IntVar(&o.limits.Burst, "agent-burst", 20000, "events an agent may send at once above --agent-rate")
	f.IntVar(&o.maxMsgBytes, "max-message-bytes", defaultMaxMessage, "largest message an agent or client may send")
	o.auth.add(f)
	return c
}

func defaultReplica() string {
	h, _ := os.Hostname()
	return fmt.Sprintf("%s-%d", h, os.Getpid())
}

func openStore(ctx context.Context, spec, replica string, log *slog.Logger) (store.Store, error) {
	scheme, loc, ok := strings.Cut(spec, ":")
	if !ok || loc == "" {
		return nil, fmt.Errorf("--store %q: want SCHEME:LOCATION, e.g. sqlite:/var/lib/nodeward/nodeward.db", spec)
	}
	switch scheme {
	case "sqlite":
		st, err := sqlite.Open(ctx, loc, log)
		if err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
		return st, nil
	case "postgres", "postgresql":
		st, err := postgres.Open(ctx, spec, replica)
		if err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
		return st, nil
	}
	return nil, fmt.Errorf("--store %q: unknown store %q (known: sqlite, postgres)", spec, scheme)
}

// serveMetrics serves /metrics until ctx ends.
func serveMetrics(ctx context.Context, addr string, m *metrics.Metrics, log *slog.Logger) (func(), error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry}))
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := hs.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server", "err", err)
		}
	}()
	log.Info("metrics serving", "listen", lis.Addr().String())
	return func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	}, nil
}

func serve(ctx context.Context, o *serveOptions) error {
	log, err := cli.NewLogger(o.logLevel, o.logFormat)
	if err != nil {
		return err
	}
	if o.cpuProfile != "" {
		pf, err := os.Create(o.cpuProfile)
		if err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		if err := pprof.StartCPUProfile(pf); err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer func() { pprof.StopCPUProfile(); _ = pf.Close() }()
	}
	if err := o.auth.checkListen(o.listen); err != nil {
		return err
	}
	st, err := openStore(ctx, o.store, o.replica, log)
	if err != nil {
		return err
	}
	defer st.Close()

	// Background work (retention, following other replicas) stops with
	// bgCancel before the store closes.
	bgCtx, bgCancel := context.WithCancel(ctx)
	defer bgCancel()
	tail := hub.New(o.tailQueue)
	m := metrics.New(tail, st, log)
	if f, ok := st.(store.Follower); ok {
		go func() {
			if err := f.Follow(bgCtx, tail.Publish); err != nil {
				log.Error("following other replicas", "err", err)
			}
		}()
	}
	go store.Retention{Keep: o.retention, Log: log}.Run(bgCtx, st)
	if o.metricsListen != "" {
		stop, err := serveMetrics(ctx, o.metricsListen, m, log)
		if err != nil {
			return err
		}
		defer stop()
	}

	authn, err := o.auth.authenticator(ctx, o.listen, log, m.Registry)
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", o.listen, err)
	}
	srv := grpc.NewServer(append(append(authn.ServerOptions(), flowcontrol.ServerOptions()...), ingest.ServerCodec(),
		grpc.MaxRecvMsgSize(cmp.Or(o.maxMsgBytes, defaultMaxMessage)),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: time.Minute, Timeout: 20 * time.Second}),
	)...)
	agents := ingest.New(st, log, buildinfo.Version(), tail, m)
	agents.SetLimits(o.limits)
	nodewardv1.RegisterAgentServiceServer(srv, agents)
	queries := query.New(st, tail)
	nodewardv1.RegisterQueryServiceServer(srv, queries)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	reflection.Register(srv)

	log.Info("collector serving", "listen", lis.Addr().String(), "store", redact(o.store), "version", buildinfo.Version(),
		"tls", authn.TLSConfig() != nil)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down: finishing in-flight work")
	hs.Shutdown()
	agents.Shutdown()
	queries.Shutdown()
	done := make(chan struct{})
	go func() { srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(o.stopTimeout):
		log.Warn("shutdown timeout reached, closing streams", "timeout", o.stopTimeout)
		srv.Stop()
	}
	if err := <-errc; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// redact hides a password in a store URL before it is logged.
func redact(spec string) string {
	if i := strings.Index(spec, "://"); i >= 0 {
		rest := spec[i+3:]
		if at := strings.Index(rest, "@"); at >= 0 {
			if c := strings.Index(rest[:at], ":"); c >= 0 {
				return spec[:i+3] + rest[:c] + ":xxxxx" + rest[at:]
			}
		}
	}
	return spec
}
