package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/nodeward/nodeward/collector/ingest"
	"github.com/nodeward/nodeward/collector/query"
	"github.com/nodeward/nodeward/collector/store"
	"github.com/nodeward/nodeward/collector/store/sqlite"
	"github.com/nodeward/nodeward/internal/buildinfo"
	"github.com/nodeward/nodeward/internal/cli"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
)

type serveOptions struct {
	listen      string
	store       string
	logLevel    string
	logFormat   string
	stopTimeout time.Duration
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
  sqlite:PATH   an embedded SQLite file (WAL mode), created if missing`,
		Example: "  nodeward serve --listen 127.0.0.1:7420 --store sqlite:/var/lib/nodeward/nodeward.db",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return serve(cmd.Context(), o)
		},
	}
	f := c.Flags()
	f.StringVar(&o.listen, "listen", "127.0.0.1:7420", "address to serve agents and queries on")
	f.StringVar(&o.store, "store", "sqlite:nodeward.db", "where to keep the fleet's data (sqlite:PATH)")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&o.logFormat, "log-format", "text", "text or json")
	f.DurationVar(&o.stopTimeout, "shutdown-timeout", 15*time.Second, "how long to let in-flight commits finish on SIGTERM")
	return c
}

func openStore(ctx context.Context, spec string) (store.Store, error) {
	scheme, loc, ok := strings.Cut(spec, ":")
	if !ok || loc == "" {
		return nil, fmt.Errorf("--store %q: want SCHEME:LOCATION, e.g. sqlite:/var/lib/nodeward/nodeward.db", spec)
	}
	switch scheme {
	case "sqlite":
		st, err := sqlite.Open(ctx, loc)
		if err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
		return st, nil
	}
	return nil, fmt.Errorf("--store %q: unknown store %q (known: sqlite)", spec, scheme)
}

func serve(ctx context.Context, o *serveOptions) error {
	log, err := cli.NewLogger(o.logLevel, o.logFormat)
	if err != nil {
		return err
	}
	st, err := openStore(ctx, o.store)
	if err != nil {
		return err
	}
	defer st.Close()

	lis, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", o.listen, err)
	}
	srv := grpc.NewServer(
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: time.Minute, Timeout: 20 * time.Second}),
	)
	agents := ingest.New(st, log, buildinfo.Version())
	nodewardv1.RegisterAgentServiceServer(srv, agents)
	nodewardv1.RegisterQueryServiceServer(srv, query.New(st))
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	reflection.Register(srv)

	log.Info("collector serving", "listen", lis.Addr().String(), "store", o.store, "version", buildinfo.Version())
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
