// Package query is the collector's QueryService: what SREs ask of the fleet,
// and the live tail.
package query

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nodeward/nodeward/collector/eventfilter"
	"github.com/nodeward/nodeward/collector/hub"
	"github.com/nodeward/nodeward/collector/store"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Server implements nodewardv1.QueryServiceServer over a store and a hub.
type Server struct {
	nodewardv1.UnimplementedQueryServiceServer
	store    store.Store
	hub      *hub.Hub
	stopping chan struct{}
	stopOnce sync.Once
}

// New returns a query server reading from st; h feeds TailEvents (nil
// refuses tails).
func New(st store.Store, h *hub.Hub) *Server {
	return &Server{store: st, hub: h, stopping: make(chan struct{})}
}

// Shutdown ends every tail (they would otherwise hold a graceful stop
// forever); clients reconnect to another replica or after the restart.
func (s *Server) Shutdown() { s.stopOnce.Do(func() { close(s.stopping) }) }

// ListNodes implements QueryService.
func (s *Server) ListNodes(ctx context.Context, req *nodewardv1.ListNodesRequest) (*nodewardv1.ListNodesResponse, error) {
	if req.GetPageSize() < 0 {
		return nil, status.Error(codes.InvalidArgument, "page_size must not be negative")
	}
	nodes, next, err := s.store.ListNodes(ctx, int(req.GetPageSize()), req.GetPageToken())
	if err != nil {
		return nil, storeError(err)
	}
	return &nodewardv1.ListNodesResponse{Nodes: nodes, NextPageToken: next}, nil
}

// GetNode implements QueryService.
func (s *Server) GetNode(ctx context.Context, req *nodewardv1.GetNodeRequest) (*nodewardv1.GetNodeResponse, error) {
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "name is required")
	}
	node, snap, err := s.store.GetNode(ctx, req.GetName())
	if err != nil {
		return nil, storeError(err)
	}
	return &nodewardv1.GetNodeResponse{Node: node, Snapshot: snap}, nil
}

func negative(n int32) error {
	if n < 0 {
		return status.Error(codes.InvalidArgument, "page_size must not be negative")
	}
	return nil
}

// ListFindings implements QueryService.
func (s *Server) ListFindings(ctx context.Context, req *nodewardv1.ListFindingsRequest) (*nodewardv1.ListFindingsResponse, error) {
	if err := negative(req.GetPageSize()); err != nil {
		return nil, err
	}
	resp, err := s.store.ListFindings(ctx, req)
	return resp, storeError(err)
}

// ListPackages implements QueryService.
func (s *Server) ListPackages(ctx context.Context, req *nodewardv1.ListPackagesRequest) (*nodewardv1.ListPackagesResponse, error) {
	if err := negative(req.GetPageSize()); err != nil {
		return nil, err
	}
	resp, err := s.store.ListPackages(ctx, req)
	return resp, storeError(err)
}

// ListPorts implements QueryService.
func (s *Server) ListPorts(ctx context.Context, req *nodewardv1.ListPortsRequest) (*nodewardv1.ListPortsResponse, error) {
	if err := negative(req.GetPageSize()); err != nil {
		return nil, err
	}
	resp, err := s.store.ListPorts(ctx, req)
	return resp, storeError(err)
}

// ListChanges implements QueryService.
func (s *Server) ListChanges(ctx context.Context, req *nodewardv1.ListChangesRequest) (*nodewardv1.ListChangesResponse, error) {
	if err := negative(req.GetPageSize()); err != nil {
		return nil, err
	}
	resp, err := s.store.ListChanges(ctx, req)
	return resp, storeError(err)
}

// QueryEvents implements QueryService.
func (s *Server) QueryEvents(ctx context.Context, req *nodewardv1.QueryEventsRequest) (*nodewardv1.QueryEventsResponse, error) {
	if err := negative(req.GetPageSize()); err != nil {
		return nil, err
	}
	resp, err := s.store.QueryEvents(ctx, req)
	return resp, storeError(err)
}

// tailBatch bounds how many events one TailEventsResponse carries.
const tailBatch = 512

// tailLinger is how long a tail waits for more events before sending what
// it has.
const tailLinger = 10 * time.Millisecond

// TailEvents implements QueryService: it streams what ingest commits from
// now on, filtered and masked. A subscriber that reads too slowly misses
// events and is told how many with a gap event; it never slows ingest.
func (s *Server) TailEvents(req *nodewardv1.TailEventsRequest, stream nodewardv1.QueryService_TailEventsServer) error {
	if s.hub == nil {
		return status.Error(codes.Unimplemented, "this collector has no live tail")
	}
	set, err := eventfilter.CompileSet(req.GetAllow(), req.GetDeny())
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	mask, err := eventfilter.NewMask(req.GetFieldMask())
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	sub := s.hub.Subscribe()
	defer sub.Close()
	// Headers go out now, so the client knows the tail is live before
	// the first event.
	if err := stream.SendHeader(nil); err != nil {
		return err
	}
	ctx := stream.Context()
	var out tailResponse
	linger := time.NewTimer(tailLinger)
	defer linger.Stop()
	for {
		var batch *hub.Batch
		select {
		case <-ctx.Done():
			return nil
		case <-s.stopping:
			return status.Error(codes.Unavailable, "collector shutting down")
		case batch = <-sub.C:
		}
		// Gather what else arrives within tailLinger, up to one response's
		// worth: with a thousand agents each committing small batches, a
		// message per commit per tail costs more than the events in it.
		linger.Reset(tailLinger)
		for gathering := true; gathering; {
			err := out.add(batch, set, mask)
			sub.Done(len(batch.Events))
			if err != nil {
				return status.Error(codes.Internal, err.Error())
			}
			if out.n >= tailBatch {
				break
			}
			select {
			case batch = <-sub.C:
			case <-linger.C:
				gathering = false
			case <-ctx.Done():
				return nil
			case <-s.stopping:
				return status.Error(codes.Unavailable, "collector shutting down")
			}
		}
		if out.n == 0 {
			continue
		}
		if err := stream.Send(out.message()); err != nil {
			return err
		}
		out = tailResponse{}
	}
}

// eventsField is TailEventsResponse.events.
var eventsField = (&nodewardv1.TailEventsResponse{}).ProtoReflect().Descriptor().Fields().ByName("events").Number()

// tailResponse builds a TailEventsResponse's wire form from the hub's
// already encoded events: with ten tails open, encoding each event once
// instead of once per tail is most of what a tail costs.
type tailResponse struct {
	wire []byte
	n    int
}

func (r *tailResponse) add(batch *hub.Batch, set *eventfilter.Set, mask *eventfilter.Mask) error {
	for i, ev := range batch.Events {
		// Gap markers always pass: a filtered tail still must know it
		// missed something.
		if ev.GetGap() == nil && !set.Match(ev) {
			continue
		}
		var (
			enc []byte
			err error
		)
		if mask == nil {
			enc, err = batch.Encoded(i)
		} else {
			enc, err = proto.Marshal(mask.Apply(ev))
		}
		if err != nil {
			return err
		}
		r.wire = protowire.AppendTag(r.wire, eventsField, protowire.BytesType)
		r.wire = protowire.AppendBytes(r.wire, enc)
		r.n++
	}
	return nil
}

// message carries the built events as the message's raw fields, which
// marshal to exactly those bytes: the receiver decodes ordinary events.
func (r *tailResponse) message() *nodewardv1.TailEventsResponse {
	m := &nodewardv1.TailEventsResponse{}
	m.ProtoReflect().SetUnknown(r.wire)
	return m
}

func storeError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, store.ErrBadRequest):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	return status.Error(codes.Internal, err.Error())
}
