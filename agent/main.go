// Command nodeward-agent runs on every worker node: it reads the node's
// posture through the host root and streams it, with live events, to the
// nodeward collector.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	_ "github.com/nodeward/nodeward/agent/inventory" // registers the inventory sources
	_ "github.com/nodeward/nodeward/agent/posture"   // registers the posture checks
	"github.com/nodeward/nodeward/internal/buildinfo"
	"github.com/nodeward/nodeward/internal/cli"
	"github.com/spf13/cobra"
)

func main() {
	// The tracer allocates per event over a small live heap (a few MiB): at
	// Go's default GOGC of 100, an exec storm of 20,000/s collects about 15
	// times a second. 200 costs ~2 MiB and a fifth of the agent's CPU in
	// such a storm.
	cli.SetGCPercent(200)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:]))
}

func run(ctx context.Context, args []string) int {
	root := &cobra.Command{
		Use:   "nodeward-agent",
		Short: "Node posture and security events for one Kubernetes worker node",
		Long: `nodeward-agent reads this node through a host root (--root, "/" by default, "/host"
in the DaemonSet): OS facts, packages, listening ports and posture checks. "run" streams
them to a collector; "report" prints them here with no collector.`,
		Version:       buildinfo.Version(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetArgs(args)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fmt.Errorf("%w (see '%s --help')", err, c.CommandPath())
	})
	root.AddCommand(runCmd(), reportCmd(), sshdConfigCmd(), traceCmd())
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "nodeward-agent: %v\n", err)
		return 1
	}
	return 0
}
