package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nodeward/nodeward/agent/hostfs"
	"github.com/nodeward/nodeward/agent/posture/ec2"
	"github.com/nodeward/nodeward/agent/posture/options"
	"github.com/nodeward/nodeward/agent/source"
	"github.com/nodeward/nodeward/internal/cli"
	"github.com/nodeward/nodeward/internal/render"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"github.com/spf13/cobra"
)

// hostFlags are the flags that say where the host is and how the checks
// judge it.
type hostFlags struct {
	root       string
	proc       string
	posture    options.Posture
	allowPorts []string
	ec2Volumes bool
}

func (h *hostFlags) add(c *cobra.Command) {
	f := c.Flags()
	f.StringVar(&h.root, "root", "/", "the host's root filesystem (\"/host\" in the DaemonSet)")
	f.StringVar(&h.proc, "proc", "/proc", "the host's procfs (the pod needs hostPID)")
	h.posture = options.Default()
	f.IntVar(&h.posture.PatchWarnDays, "patch-warn-days", h.posture.PatchWarnDays, "patch age that makes a check warn (medium)")
	f.IntVar(&h.posture.PatchFailDays, "patch-fail-days", h.posture.PatchFailDays, "patch age that makes a check fail")
	f.StringSliceVar(&h.allowPorts, "allow-port", nil, "listener allowed beyond loopback besides the built-in ones: PROTO/PORT[/PROCESS], e.g. tcp/8080/myapp or tcp/*/envoy (repeatable)")
	f.StringSliceVar(&h.posture.UnwantedPackages, "unwanted-package", nil, "package a worker node should not carry, besides the built-in list (repeatable)")
	f.BoolVar(&h.ec2Volumes, "ec2-describe-volumes", false, "ask EC2 DescribeVolumes (with the node role's IMDSv2 credentials) whether EBS volumes are encrypted")
}

func (h *hostFlags) env() (*source.Env, func(), error) {
	for _, s := range h.allowPorts {
		p, err := options.ParsePort(s)
		if err != nil {
			return nil, nil, fmt.Errorf("--allow-port: %w", err)
		}
		h.posture.AllowPorts = append(h.posture.AllowPorts, p)
	}
	if h.ec2Volumes {
		h.posture.VolumeLookup = ec2.VolumeLookup(ec2.Options{})
	}
	if err := h.posture.Validate(); err != nil {
		return nil, nil, err
	}
	root, err := hostfs.Open(h.root)
	if err != nil {
		return nil, nil, err
	}
	return &source.Env{Root: root, Proc: h.proc, Posture: &h.posture}, func() { _ = root.Close() }, nil
}

// collect runs the sources and stamps the node's identity on the result.
func collect(ctx context.Context, env *source.Env, nodeName string, only []string) (*nodewardv1.Snapshot, error) {
	snap, err := source.Run(ctx, env, only)
	if err != nil {
		return nil, err
	}
	stamp(snap, nodeName)
	return snap, nil
}

func reportCmd() *cobra.Command {
	var (
		host   hostFlags
		output = cli.Table
		only   []string
		name   string
	)
	c := &cobra.Command{
		Use:   "report",
		Short: "Print this node's posture once, no collector needed",
		Long: `Run every source once through the host root and print the snapshot the agent would
send. A source that fails is reported with its error; the others still run.`,
		Example: `  nodeward-agent report
  nodeward-agent report --root /host -o json
  nodeward-agent report --only os -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			env, done, err := host.env()
			if err != nil {
				return err
			}
			defer done()
			snap, err := collect(cmd.Context(), env, name, only)
			if err != nil {
				return err
			}
			if output == cli.JSON {
				return cli.WriteJSON(cmd.OutOrStdout(), snap)
			}
			return render.Node(cmd.OutOrStdout(), snap.GetNode(), snap, time.Now())
		},
	}
	host.add(c)
	c.Flags().VarP(&output, "output", "o", "output format: table or json")
	c.Flags().StringSliceVar(&only, "only", nil, "run only these sources (comma-separated): "+strings.Join(source.Names(), ", "))
	c.Flags().StringVar(&name, "node-name", defaultNodeName(), "node name to report under (env NODE_NAME)")
	return c
}

// defaultNodeName is $NODE_NAME (the DaemonSet sets it from the downward
// API), else the host name.
func defaultNodeName() string {
	if n := strings.TrimSpace(os.Getenv("NODE_NAME")); n != "" {
		return n
	}
	h, err := os.Hostname()
	if err != nil {
		return ""
	}
	return strings.ToLower(h)
}
