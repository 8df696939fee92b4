package inventory

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/nodeward/nodeward/agent/hostfs"
	"github.com/nodeward/nodeward/internal/testutil"
	"golang.org/x/sys/unix"
)

func benchmarkReadPackages(b *testing.B, dir string) {
	root, err := hostfs.Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer root.Close()
	ctx := context.Background()
	b.ReportAllocs()
	var before, after unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &before)
	n := 0
	for b.Loop() {
		inv, err := ReadPackages(ctx, root)
		if err != nil || len(inv.Packages) == 0 {
			b.Fatalf("%d packages, %v", len(inv.GetPackages()), err)
		}
		n++
	}
	// CPU time (user+system, GC included) per read: on a shared machine it
	// moves far less with load than wall time.
	_ = unix.Getrusage(unix.RUSAGE_SELF, &after)
	cpu := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(n), "cpu-ns/op")
}

// BenchmarkReadPackagesLive reads this machine's own package database.
func BenchmarkReadPackagesLive(b *testing.B) { benchmarkReadPackages(b, "/") }

// BenchmarkReadPackagesFixture reads each rpm backend's fixture.
func BenchmarkReadPackagesFixture(b *testing.B) {
	for _, h := range []string{"rpm-amazonlinux2", "rpm-amazonlinux2023-plain", "rpm-sle15-bci", "debian-12-bookworm-minbase-openssh"} {
		b.Run(h, func(b *testing.B) { benchmarkReadPackages(b, filepath.Join(testutil.FixtureHost(b, h), "root")) })
	}
}
