package sshtrace

//go:generate go run github.com/cilium/ebpf/cmd/bpf2go@v0.22.0 -target amd64,arm64 -cc clang -cflags "-O2 -g -Wall -Werror" -type ssh_event -type exe_key ssh ../../bpf/ssh.bpf.c -- -I../../bpf
