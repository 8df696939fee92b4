// Package query is the collector's QueryService: what SREs ask of the fleet.
package query

import (
	"context"
	"errors"

	"github.com/nodeward/nodeward/collector/store"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Server implements nodewardv1.QueryServiceServer over a store.
type Server struct {
	nodewardv1.UnimplementedQueryServiceServer
	store store.Store
}

// New returns a query server reading from st.
func New(st store.Store) *Server { return &Server{store: st} }

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

func storeError(err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return status.Error(codes.NotFound, err.Error())
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	return status.Error(codes.Internal, err.Error())
}
