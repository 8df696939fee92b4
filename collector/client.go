package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/nodeward/nodeward/internal/cli"
	"github.com/nodeward/nodeward/internal/render"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
)

// client holds the flags every query verb shares.
type client struct {
	server  string
	output  cli.Format
	timeout time.Duration
	auth    clientAuth
}

func (c *client) addFlags(root *cobra.Command) {
	def := os.Getenv("NODEWARD_SERVER")
	if def == "" {
		def = "127.0.0.1:7420"
	}
	c.output = cli.Table
	pf := root.PersistentFlags()
	pf.StringVar(&c.server, "server", def, "collector address HOST:PORT (env NODEWARD_SERVER)")
	pf.VarP(&c.output, "output", "o", "output format: table or json (one JSON object per line)")
	pf.DurationVar(&c.timeout, "timeout", 10*time.Second, "how long to wait for the collector")
	c.auth.add(pf)
}

// dial connects to the collector; the first RPC reports a bad address.
func (c *client) dial() (*grpc.ClientConn, error) {
	if _, _, err := net.SplitHostPort(c.server); err != nil {
		return nil, fmt.Errorf("--server %q: want HOST:PORT, e.g. 127.0.0.1:7420", c.server)
	}
	opts, err := c.auth.dialOptions(c.server)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(c.server, opts...)
	if err != nil {
		return nil, fmt.Errorf("--server %q: %w", c.server, err)
	}
	return conn, nil
}

func (c *client) query(ctx context.Context, fn func(context.Context, nodewardv1.QueryServiceClient) error) error {
	conn, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	return fn(ctx, nodewardv1.NewQueryServiceClient(conn))
}

func nodesCmd(c *client) *cobra.Command {
	return &cobra.Command{
		Use:   "nodes",
		Short: "List the fleet's nodes: OS, kernel, agent, last seen, posture score",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.query(cmd.Context(), func(ctx context.Context, q nodewardv1.QueryServiceClient) error {
				all := &nodewardv1.ListNodesResponse{}
				req := &nodewardv1.ListNodesRequest{}
				for {
					resp, err := q.ListNodes(ctx, req)
					if err != nil {
						return err
					}
					all.Nodes = append(all.Nodes, resp.GetNodes()...)
					if resp.GetNextPageToken() == "" {
						break
					}
					req.PageToken = resp.GetNextPageToken()
				}
				if c.output == cli.JSON {
					return cli.WriteJSON(cmd.OutOrStdout(), all)
				}
				return render.Nodes(cmd.OutOrStdout(), all.GetNodes(), time.Now())
			})
		},
	}
}

func nodeCmd(c *client) *cobra.Command {
	return &cobra.Command{
		Use:   "node NAME",
		Short: "Show one node: posture and failing findings first, ports, packages, recent changes",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.query(cmd.Context(), func(ctx context.Context, q nodewardv1.QueryServiceClient) error {
				if c.output == cli.JSON {
					resp, err := q.GetNode(ctx, &nodewardv1.GetNodeRequest{Name: args[0]})
					if err != nil {
						return err
					}
					return cli.WriteJSON(cmd.OutOrStdout(), resp)
				}
				resp, changes, err := nodeDetail(ctx, q, args[0])
				if err != nil {
					return err
				}
				return render.NodeDetail(cmd.OutOrStdout(), resp.GetNode(), resp.GetSnapshot(), changes, time.Now())
			})
		},
	}
}
