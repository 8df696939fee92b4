package tracer

//go:generate go run github.com/cilium/ebpf/cmd/bpf2go@v0.22.0 -target amd64,arm64 -cc clang -cflags "-O2 -g -Wall -Werror" -type exec_event -type exit_event -type fork_event bpf ../../bpf/exec.bpf.c -- -I../../bpf
