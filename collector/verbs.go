package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nodeward/nodeward/collector/eventfilter"
	"github.com/nodeward/nodeward/collector/pkgver"
	"github.com/nodeward/nodeward/internal/cli"
	"github.com/nodeward/nodeward/internal/render"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// pages fetches every page of a list (up to limit items when limit > 0).
func pages[T any](limit int, fetch func(token string) ([]T, string, error)) ([]T, error) {
	var all []T
	token := ""
	for {
		items, next, err := fetch(token)
		if err != nil {
			return nil, err
		}
		all = append(all, items...)
		if limit > 0 && len(all) >= limit {
			return all[:limit], nil
		}
		if next == "" {
			return all, nil
		}
		token = next
	}
}

func parseSeverity(s string) (nodewardv1.Severity, error) {
	if s == "" {
		return 0, nil
	}
	v, ok := nodewardv1.Severity_value["SEVERITY_"+strings.ToUpper(s)]
	if !ok || v == 0 {
		return 0, fmt.Errorf("--severity %q: want info, low, medium, high or critical", s)
	}
	return nodewardv1.Severity(v), nil
}

func parseStatus(s string) (nodewardv1.FindingStatus, error) {
	if s == "" {
		return 0, nil
	}
	v, ok := nodewardv1.FindingStatus_value["FINDING_STATUS_"+strings.ReplaceAll(strings.ToUpper(s), "-", "_")]
	if !ok || v == 0 {
		return 0, fmt.Errorf("--status %q: want pass, fail, unknown, error or not-applicable", s)
	}
	return nodewardv1.FindingStatus(v), nil
}

func findingsCmd(c *client) *cobra.Command {
	var node, severity, st, check string
	cmd := &cobra.Command{
		Use:   "findings",
		Short: "List posture findings across the fleet, failing first",
		Example: `  nodeward findings --status fail --severity high
  nodeward findings --check ssh.password-authentication
  nodeward findings --node ip-10-0-1-23.ec2.internal -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sev, err := parseSeverity(severity)
			if err != nil {
				return err
			}
			stat, err := parseStatus(st)
			if err != nil {
				return err
			}
			return c.query(cmd.Context(), func(ctx context.Context, q nodewardv1.QueryServiceClient) error {
				all, err := pages(0, func(token string) ([]*nodewardv1.Finding, string, error) {
					r, err := q.ListFindings(ctx, &nodewardv1.ListFindingsRequest{NodeName: node, CheckId: check, MinSeverity: sev, Status: stat, PageSize: 1000, PageToken: token})
					return r.GetFindings(), r.GetNextPageToken(), err
				})
				if err != nil {
					return err
				}
				if c.output == cli.JSON {
					return cli.WriteJSON(cmd.OutOrStdout(), &nodewardv1.ListFindingsResponse{Findings: all})
				}
				return render.Findings(cmd.OutOrStdout(), all, node == "", time.Now())
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&node, "node", "", "only this node")
	f.StringVar(&severity, "severity", "", "at least this severity: info, low, medium, high, critical")
	f.StringVar(&st, "status", "", "only this status: pass, fail, unknown, error, not-applicable")
	f.StringVar(&check, "check", "", "only this check id, e.g. ssh.permit-root-login")
	return cmd
}

func packagesCmd(c *client) *cobra.Command {
	var name, version, node string
	cmd := &cobra.Command{
		Use:   "packages",
		Short: "Which nodes have a package (and which version), by the package manager's own version rules",
		Example: `  nodeward packages --name openssl
  nodeward packages --name openssl-libs --version '<3.0.8'
  nodeward packages --node ip-10-0-1-23.ec2.internal`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if name == "" && node == "" {
				return errors.New("--name or --node is required")
			}
			req := &nodewardv1.ListPackagesRequest{Name: name, NodeName: node, PageSize: 1000}
			if version != "" {
				req.VersionOp, req.Version = pkgver.ParseOp(version)
			}
			return c.query(cmd.Context(), func(ctx context.Context, q nodewardv1.QueryServiceClient) error {
				all, err := pages(0, func(token string) ([]*nodewardv1.NodePackage, string, error) {
					req.PageToken = token
					r, err := q.ListPackages(ctx, req)
					return r.GetPackages(), r.GetNextPageToken(), err
				})
				if err != nil {
					return err
				}
				if c.output == cli.JSON {
					return cli.WriteJSON(cmd.OutOrStdout(), &nodewardv1.ListPackagesResponse{Packages: all})
				}
				return render.NodePackages(cmd.OutOrStdout(), all, time.Now())
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "", "package name (exact), e.g. openssl")
	f.StringVar(&version, "version", "", "version constraint: <V, <=V, =V, !=V, >=V or >V; [EPOCH:]VERSION[-RELEASE]")
	f.StringVar(&node, "node", "", "only this node (alone: every package on it)")
	return cmd
}

func portsCmd(c *client) *cobra.Command {
	var (
		port    uint32
		exposed bool
		node    string
		proto   string
	)
	cmd := &cobra.Command{
		Use:   "ports",
		Short: "Which nodes listen on a port, with the owning process",
		Example: `  nodeward ports --port 22 --exposed
  nodeward ports --node ip-10-0-1-23.ec2.internal`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &nodewardv1.ListPortsRequest{Port: port, ExposedOnly: exposed, NodeName: node, PageSize: 1000}
			switch strings.ToLower(proto) {
			case "":
			case "tcp":
				req.Protocol = nodewardv1.Protocol_PROTOCOL_TCP
			case "udp":
				req.Protocol = nodewardv1.Protocol_PROTOCOL_UDP
			default:
				return fmt.Errorf("--protocol %q: want tcp or udp", proto)
			}
			return c.query(cmd.Context(), func(ctx context.Context, q nodewardv1.QueryServiceClient) error {
				all, err := pages(0, func(token string) ([]*nodewardv1.NodePort, string, error) {
					req.PageToken = token
					r, err := q.ListPorts(ctx, req)
					return r.GetPorts(), r.GetNextPageToken(), err
				})
				if err != nil {
					return err
				}
				if c.output == cli.JSON {
					return cli.WriteJSON(cmd.OutOrStdout(), &nodewardv1.ListPortsResponse{Ports: all})
				}
				return render.NodePorts(cmd.OutOrStdout(), all, time.Now())
			})
		},
	}
	f := cmd.Flags()
	f.Uint32Var(&port, "port", 0, "port number (0: every port)")
	f.BoolVar(&exposed, "exposed", false, "only sockets bound beyond loopback")
	f.StringVar(&node, "node", "", "only this node")
	f.StringVar(&proto, "protocol", "", "tcp or udp")
	return cmd
}

func changesCmd(c *client) *cobra.Command {
	var (
		node, subject string
		kinds         []string
		since         time.Duration
		limit         int
	)
	cmd := &cobra.Command{
		Use:   "changes",
		Short: "History of package, port and finding changes, newest first",
		Example: `  nodeward changes --node ip-10-0-1-23.ec2.internal --since 24h
  nodeward changes --kind package --subject openssl`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := &nodewardv1.ListChangesRequest{NodeName: node, Subject: subject, PageSize: 1000}
			for _, k := range kinds {
				switch k {
				case "package":
					req.Kinds = append(req.Kinds, nodewardv1.ChangeKind_CHANGE_KIND_PACKAGE_INSTALLED, nodewardv1.ChangeKind_CHANGE_KIND_PACKAGE_UPGRADED,
						nodewardv1.ChangeKind_CHANGE_KIND_PACKAGE_DOWNGRADED, nodewardv1.ChangeKind_CHANGE_KIND_PACKAGE_REMOVED)
				case "port":
					req.Kinds = append(req.Kinds, nodewardv1.ChangeKind_CHANGE_KIND_PORT_OPENED, nodewardv1.ChangeKind_CHANGE_KIND_PORT_CLOSED)
				case "finding":
					req.Kinds = append(req.Kinds, nodewardv1.ChangeKind_CHANGE_KIND_FINDING_CHANGED)
				default:
					return fmt.Errorf("--kind %q: want package, port or finding", k)
				}
			}
			if since > 0 {
				req.Since = timestamppb.New(time.Now().Add(-since))
			}
			return c.query(cmd.Context(), func(ctx context.Context, q nodewardv1.QueryServiceClient) error {
				all, err := pages(limit, func(token string) ([]*nodewardv1.Change, string, error) {
					req.PageToken = token
					r, err := q.ListChanges(ctx, req)
					return r.GetChanges(), r.GetNextPageToken(), err
				})
				if err != nil {
					return err
				}
				if c.output == cli.JSON {
					return cli.WriteJSON(cmd.OutOrStdout(), &nodewardv1.ListChangesResponse{Changes: all})
				}
				return render.Changes(cmd.OutOrStdout(), all, node == "", time.Now())
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&node, "node", "", "only this node")
	f.StringSliceVar(&kinds, "kind", nil, "package, port or finding (repeatable)")
	f.StringVar(&subject, "subject", "", "package name, port (tcp/0.0.0.0:22) or check id")
	f.DurationVar(&since, "since", 0, "only changes this recent, e.g. 24h")
	f.IntVar(&limit, "limit", 200, "at most this many (0: all)")
	return cmd
}

// eventFlags are the filter flags events and tail share.
type eventFlags struct {
	nodes, kinds, users, pods, namespaces, containers, sessions []string
	uids                                                        []uint
	binary, args, ancestor                                      string
	denyNodes, denyNamespaces                                   []string
	denyBinary                                                  string
}

func (e *eventFlags) add(cmd *cobra.Command, deny bool) {
	f := cmd.Flags()
	f.StringSliceVar(&e.nodes, "node", nil, "only these nodes (repeatable)")
	f.StringSliceVar(&e.kinds, "kind", nil, "exec, exit, ssh, loss (repeatable)")
	f.StringVar(&e.binary, "binary", "", "RE2 on the process filename; ^/exact/path$ uses the index")
	f.StringVar(&e.args, "args", "", "RE2 on the arguments joined by spaces")
	f.StringVar(&e.ancestor, "ancestor", "", "RE2 on the parent's or any ancestor's filename")
	f.StringSliceVar(&e.users, "user", nil, "user names (ssh logins, sessions)")
	f.UintSliceVar(&e.uids, "uid", nil, "uids")
	f.StringSliceVar(&e.pods, "pod", nil, "pod names")
	f.StringSliceVar(&e.namespaces, "namespace", nil, "pod namespaces")
	f.StringSliceVar(&e.containers, "container", nil, "container ids")
	f.StringSliceVar(&e.sessions, "session", nil, "ssh session ids")
	if deny {
		f.StringSliceVar(&e.denyNodes, "exclude-node", nil, "drop events from these nodes")
		f.StringSliceVar(&e.denyNamespaces, "exclude-namespace", nil, "drop events from these pod namespaces")
		f.StringVar(&e.denyBinary, "exclude-binary", "", "drop events whose filename matches this RE2")
	}
}

func (e *eventFlags) filter() (*nodewardv1.EventFilter, error) {
	f := &nodewardv1.EventFilter{NodeNames: e.nodes, BinaryRegex: e.binary, ArgsRegex: e.args, AncestorBinaryRegex: e.ancestor,
		Users: e.users, PodNames: e.pods, Namespaces: e.namespaces, ContainerIds: e.containers, SshSessionIds: e.sessions}
	for _, k := range e.kinds {
		kind, err := eventfilter.ParseKind(k)
		if err != nil {
			return nil, fmt.Errorf("--kind: %w", err)
		}
		f.Kinds = append(f.Kinds, kind)
	}
	for _, u := range e.uids {
		f.Uids = append(f.Uids, uint32(u))
	}
	if _, err := eventfilter.Compile(f); err != nil {
		return nil, err
	}
	return f, nil
}

func (e *eventFlags) deny() []*nodewardv1.EventFilter {
	var out []*nodewardv1.EventFilter
	if len(e.denyNodes) > 0 {
		out = append(out, &nodewardv1.EventFilter{NodeNames: e.denyNodes})
	}
	if len(e.denyNamespaces) > 0 {
		out = append(out, &nodewardv1.EventFilter{Namespaces: e.denyNamespaces})
	}
	if e.denyBinary != "" {
		out = append(out, &nodewardv1.EventFilter{BinaryRegex: e.denyBinary})
	}
	return out
}

func eventsCmd(c *client) *cobra.Command {
	var (
		ef           eventFlags
		since, until string
		text         string
		limit        int
	)
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Search stored exec and SSH events, newest first",
		Example: `  nodeward events --node ip-10-0-1-23.ec2.internal --since 1h
  nodeward events --binary '^/usr/bin/curl$' --namespace shop --limit 50
  nodeward events --kind ssh --user ec2-user -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := ef.filter()
			if err != nil {
				return err
			}
			req := &nodewardv1.QueryEventsRequest{Filter: f, Text: text, PageSize: int32(min(max(limit, 1), 1000))}
			now := time.Now()
			if req.StartTime, err = parseWhen(since, now); err != nil {
				return fmt.Errorf("--since: %w", err)
			}
			if req.EndTime, err = parseWhen(until, now); err != nil {
				return fmt.Errorf("--until: %w", err)
			}
			return c.query(cmd.Context(), func(ctx context.Context, q nodewardv1.QueryServiceClient) error {
				all, err := pages(limit, func(token string) ([]*nodewardv1.Event, string, error) {
					req.PageToken = token
					r, err := q.QueryEvents(ctx, req)
					return r.GetEvents(), r.GetNextPageToken(), err
				})
				if err != nil {
					return err
				}
				if c.output == cli.JSON {
					for _, ev := range all {
						if err := cli.WriteJSON(cmd.OutOrStdout(), ev); err != nil {
							return err
						}
					}
					return nil
				}
				return render.Events(cmd.OutOrStdout(), all)
			})
		},
	}
	ef.add(cmd, false)
	f := cmd.Flags()
	f.StringVar(&since, "since", "", "only events after this: a duration back (1h) or RFC 3339 time")
	f.StringVar(&until, "until", "", "only events before this: a duration back or RFC 3339 time")
	f.StringVar(&text, "text", "", "substring of filename, arguments, user or remote address")
	f.IntVar(&limit, "limit", 100, "at most this many (0: all)")
	return cmd
}

// parseWhen reads "1h" (that long ago) or an RFC 3339 time; empty is unset.
func parseWhen(s string, now time.Time) (*timestamppb.Timestamp, error) {
	if s == "" {
		return nil, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return timestamppb.New(now.Add(-d)), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return nil, fmt.Errorf("%q: want a duration (90m) or an RFC 3339 time", s)
	}
	return timestamppb.New(t), nil
}

func tailCmd(c *client) *cobra.Command {
	var (
		ef     eventFlags
		fields []string
	)
	cmd := &cobra.Command{
		Use:   "tail",
		Short: "Follow exec and SSH events from every node live; reconnects by itself",
		Long: `Stream events as the collector commits them, from every node. Filters given as
flags must all match (allow); --exclude-* flags drop what matches. A line
"-- missed N events --" means this terminal read too slowly; "-- NODE lost sequences
A..B --" means events were lost before reaching the collector. When the stream
breaks, tail reconnects with backoff and says so.`,
		Example: `  nodeward tail
  nodeward tail --namespace kube-system --exclude-binary '^/usr/bin/(ls|cat)$'
  nodeward tail --kind ssh -o json --fields exec.process.filename,ssh`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := ef.filter()
			if err != nil {
				return err
			}
			req := &nodewardv1.TailEventsRequest{Deny: ef.deny()}
			if !proto0(f) {
				req.Allow = []*nodewardv1.EventFilter{f}
			}
			if len(fields) > 0 {
				req.FieldMask = &fieldmaskpb.FieldMask{Paths: fields}
				if _, err := eventfilter.NewMask(req.FieldMask); err != nil {
					return fmt.Errorf("--fields: %w", err)
				}
			}
			return tail(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), c, req)
		},
	}
	ef.add(cmd, true)
	cmd.Flags().StringSliceVar(&fields, "fields", nil, "keep only these Event fields (field mask paths), e.g. exec.process.filename")
	return cmd
}

func proto0(f *nodewardv1.EventFilter) bool {
	return len(f.GetNodeNames())+len(f.GetKinds())+len(f.GetUsers())+len(f.GetUids())+len(f.GetPodNames())+len(f.GetNamespaces())+
		len(f.GetContainerIds())+len(f.GetSshSessionIds()) == 0 && f.GetBinaryRegex() == "" && f.GetArgsRegex() == "" && f.GetAncestorBinaryRegex() == ""
}

// tail follows the stream until ctx ends, reconnecting with backoff.
func tail(ctx context.Context, out, errw io.Writer, c *client, req *nodewardv1.TailEventsRequest) error {
	conn, err := c.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	q := nodewardv1.NewQueryServiceClient(conn)
	backoff := 250 * time.Millisecond
	connected := false
	for {
		stream, err := q.TailEvents(ctx, req)
		if err == nil {
			_, err = stream.Header()
		}
		if err == nil {
			if connected {
				fmt.Fprintf(errw, "nodeward: tail reconnected to %s (events in between are not shown: see 'nodeward events')\n", c.server)
			}
			connected, backoff = true, 250*time.Millisecond
			err = follow(stream, out, c.output)
		}
		if ctx.Err() != nil {
			return nil
		}
		if s, ok := status.FromError(err); ok && (s.Code() == codes.InvalidArgument || s.Code() == codes.Unimplemented ||
			s.Code() == codes.PermissionDenied || s.Code() == codes.Unauthenticated) {
			return err
		}
		fmt.Fprintf(errw, "nodeward: tail: %s; retrying in %s\n", cli.Describe(err, c.server), backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

func follow(stream nodewardv1.QueryService_TailEventsClient, out io.Writer, format cli.Format) error {
	for {
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		for _, ev := range resp.GetEvents() {
			if format == cli.JSON {
				if err := cli.WriteJSON(out, ev); err != nil {
					return err
				}
				continue
			}
			if err := render.EventLine(out, ev); err != nil {
				return err
			}
		}
	}
}

func nodeDetail(ctx context.Context, q nodewardv1.QueryServiceClient, name string) (*nodewardv1.GetNodeResponse, []*nodewardv1.Change, error) {
	resp, err := q.GetNode(ctx, &nodewardv1.GetNodeRequest{Name: name})
	if err != nil {
		return nil, nil, err
	}
	ch, err := q.ListChanges(ctx, &nodewardv1.ListChangesRequest{NodeName: name, PageSize: 20})
	if err != nil {
		// Older collectors answer nodes without history.
		if status.Code(err) == codes.Unimplemented {
			return resp, nil, nil
		}
		return nil, nil, err
	}
	return resp, ch.GetChanges(), nil
}
