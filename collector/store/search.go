package store

import (
	"context"
	"fmt"
	"math"

	"github.com/nodeward/nodeward/collector/eventfilter"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/protobuf/proto"
)

// EventQuery is the part of an event search a backend answers with SQL,
// over indexed or stored columns; the rest (regexes, text) is matched in Go.
type EventQuery struct {
	StartNS, EndNS int64 // [start, end)
	Nodes          []string
	Kinds          []string
	Binary         string // exact, when the filter's regex is a literal
	Users          []string
	UIDs           []int64
	Pods           []string
	Namespaces     []string
	Containers     []string
	Sessions       []string
	Before         TimeCursor // rows strictly older than this
	Limit          int
}

// EventRow is one stored event as a backend reads it.
type EventRow struct {
	TimeNS, ID int64
	Body       []byte
}

// maxScan bounds the rows one page reads when filters are matched in Go; a
// short page then still carries a next token.
const maxScan = 20000

// SearchEvents runs the paging loop both backends share: fetch rows newest
// first in chunks, decode them, apply what SQL could not, and stop at a
// full page or after maxScan rows.
func SearchEvents(ctx context.Context, req *nodewardv1.QueryEventsRequest, fetch func(context.Context, *EventQuery) ([]EventRow, error)) (*nodewardv1.QueryEventsResponse, error) {
	f, err := eventfilter.Compile(req.GetFilter())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	size := PageSize(req.GetPageSize())
	q := &EventQuery{StartNS: math.MinInt64, EndNS: math.MaxInt64, Before: TimeCursor{TimeNS: math.MaxInt64, ID: math.MaxInt64}}
	if req.GetStartTime() != nil {
		q.StartNS = req.GetStartTime().AsTime().UnixNano()
	}
	if req.GetEndTime() != nil {
		q.EndNS = req.GetEndTime().AsTime().UnixNano()
	}
	if err := DecodeToken(req.GetPageToken(), &q.Before); err != nil {
		return nil, err
	}
	src := req.GetFilter()
	q.Nodes = src.GetNodeNames()
	for _, k := range src.GetKinds() {
		q.Kinds = append(q.Kinds, eventfilter.KindName(k))
	}
	q.Users, q.Pods, q.Namespaces, q.Containers, q.Sessions = src.GetUsers(), src.GetPodNames(), src.GetNamespaces(), src.GetContainerIds(), src.GetSshSessionIds()
	for _, u := range src.GetUids() {
		q.UIDs = append(q.UIDs, int64(u))
	}
	exact := false
	// An exact binary uses the (bin, time) index, unless nodes are given:
	// a node's events are few, and the planner cannot know the node index
	// is the narrower one, so the binary is then matched in Go.
	if b, ok := f.ExactBinary(); ok && len(q.Nodes) == 0 {
		q.Binary, exact = b, true
	}
	// When SQL does all the filtering, read exactly one page plus one row.
	post := req.GetText() != "" || src.GetArgsRegex() != "" || src.GetAncestorBinaryRegex() != "" || (src.GetBinaryRegex() != "" && !exact)
	q.Limit = size + 1
	if post {
		q.Limit = 1000
	}
	resp := &nodewardv1.QueryEventsResponse{}
	scanned := 0
	for {
		rows, err := fetch(ctx, q)
		if err != nil {
			return nil, err
		}
		for i, r := range rows {
			if len(resp.Events) == size {
				resp.NextPageToken = EncodeToken(q.Before)
				return resp, nil
			}
			q.Before = TimeCursor{TimeNS: r.TimeNS, ID: r.ID}
			scanned++
			ev := &nodewardv1.Event{}
			if err := proto.Unmarshal(r.Body, ev); err != nil {
				return nil, fmt.Errorf("decode event: %w", err)
			}
			if !post || (f.Match(ev) && eventfilter.ContainsText(ev, req.GetText())) {
				resp.Events = append(resp.Events, ev)
			}
			if scanned >= maxScan && i < len(rows)-1 {
				resp.NextPageToken = EncodeToken(q.Before)
				return resp, nil
			}
		}
		if len(rows) < q.Limit {
			return resp, nil
		}
		if scanned >= maxScan {
			resp.NextPageToken = EncodeToken(q.Before)
			return resp, nil
		}
	}
}
