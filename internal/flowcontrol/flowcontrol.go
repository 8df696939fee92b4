// Package flowcontrol fixes the HTTP/2 flow-control windows of the agent
// stream on both ends. Left alone, grpc-go sizes windows by estimating the
// bandwidth-delay product with a PING after data arrives; with a thousand
// agents each sending a few small batches a second, those pings and their
// window updates cost the collector 6-7% of its CPU per event, the
// simulated agents a third of theirs, and doubled the ack latency
// (docs/BENCHMARKS.md).
package flowcontrol

import "google.golang.org/grpc"

// Window is each stream's and connection's receive window: room for dozens
// of event batches between window updates, and a bound on what one agent
// can have waiting in the collector while its stream is throttled.
const Window = 256 << 10

// ServerOptions are the collector's windows.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.InitialWindowSize(Window), grpc.InitialConnWindowSize(Window)}
}

// DialOptions are an agent's windows.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithInitialWindowSize(Window), grpc.WithInitialConnWindowSize(Window)}
}
