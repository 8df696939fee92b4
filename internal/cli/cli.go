// Package cli holds what both binaries' command lines share: output formats,
// JSON printing, logging set-up and turning errors into one clear line.
package cli

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Format is an output format chosen with -o.
type Format string

// The output formats every verb supports.
const (
	Table Format = "table"
	JSON  Format = "json"
)

// String implements pflag.Value.
func (f *Format) String() string { return string(*f) }

// Set implements pflag.Value.
func (f *Format) Set(s string) error {
	switch Format(s) {
	case Table, JSON:
		*f = Format(s)
		return nil
	}
	return fmt.Errorf("unknown output format %q: want table or json", s)
}

// Type implements pflag.Value.
func (f *Format) Type() string { return "table|json" }

var jsonOpts = protojson.MarshalOptions{UseProtoNames: true}

// WriteJSON prints m as one line of protojson with the proto field names.
func WriteJSON(w io.Writer, m proto.Message) error {
	b, err := jsonOpts.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	b = append(b, '\n')
	_, err = w.Write(b)
	return err
}

// NewLogger builds the process logger on stderr.
func NewLogger(level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// Describe turns an error into one line a person can act on; gRPC statuses
// lose their Go-ish prefixes.
func Describe(err error, server string) string {
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		st := se.GRPCStatus()
		msg := st.Message()
		switch st.Code() {
		case codes.Unavailable:
			return fmt.Sprintf("cannot reach the collector at %s: %s", server, trimTransport(msg))
		case codes.DeadlineExceeded:
			return fmt.Sprintf("the collector at %s did not answer in time", server)
		case codes.NotFound:
			return msg
		case codes.Unauthenticated, codes.PermissionDenied:
			return fmt.Sprintf("the collector at %s refused: %s", server, msg)
		default:
			return fmt.Sprintf("%s (%s)", msg, strings.ToLower(st.Code().String()))
		}
	}
	return err.Error()
}

// trimTransport shortens grpc-go's transport error text to its cause.
func trimTransport(msg string) string {
	if i := strings.LastIndex(msg, "dial tcp "); i >= 0 {
		rest := msg[i+len("dial tcp "):]
		if j := strings.Index(rest, ": "); j >= 0 {
			return strings.TrimSuffix(rest[j+2:], "\"")
		}
	}
	msg = strings.TrimPrefix(msg, "connection error: desc = ")
	return strings.Trim(msg, "\"")
}
