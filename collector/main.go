// Command nodeward is the fleet side of nodeward: `serve` runs the collector
// that agents stream to, and the other verbs ask it about the fleet.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/nodeward/nodeward/internal/buildinfo"
	"github.com/nodeward/nodeward/internal/cli"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func main() {
	// Ingest allocates per event (decoded batches, row arguments): at Go's
	// default GOGC of 100 a saturated collector spent a tenth more CPU per
	// event than at 200, which costs about a quarter more peak memory.
	cli.SetGCPercent(200)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:]))
}

// run executes the command line and returns the exit status; every failure
// is one line on stderr.
func run(ctx context.Context, args []string) int { return runTo(ctx, args, os.Stdout, os.Stderr) }

// runTo is run with its output going to stdout and stderr.
func runTo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cl := &client{}
	root := &cobra.Command{
		Use:   "nodeward",
		Short: "Fleet posture and live security events for Kubernetes worker nodes",
		Long: `nodeward collects what nodeward-agent reports from every worker node: OS facts,
packages, listening ports, posture findings, exec and SSH events. Run "nodeward serve"
as the collector; the other verbs ask a running collector (--server, or $NODEWARD_SERVER).`,
		Version:       buildinfo.Version(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fmt.Errorf("%w (see '%s --help')", err, c.CommandPath())
	})
	cl.addFlags(root)
	root.AddCommand(serveCmd(), nodesCmd(cl), nodeCmd(cl), findingsCmd(cl), packagesCmd(cl), portsCmd(cl), changesCmd(cl),
		eventsCmd(cl), tailCmd(cl), loadtestCmd(cl))
	// Aliases in the words SREs reach for first: --type for --kind (as in
	// `tail --type ssh`), --ssh-session for --session.
	root.SetGlobalNormalizationFunc(func(_ *pflag.FlagSet, name string) pflag.NormalizedName {
		switch name {
		case "type":
			name = "kind"
		case "ssh-session":
			name = "session"
		}
		return pflag.NormalizedName(name)
	})
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintf(stderr, "nodeward: %s\n", cli.Describe(err, cl.server))
		return 1
	}
	return 0
}
