package posture

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nodeward/nodeward/agent/hostfs"
	_ "github.com/nodeward/nodeward/agent/inventory" // the real package sources
	"github.com/nodeward/nodeward/agent/source"
	"github.com/nodeward/nodeward/internal/testutil"
)

// The newest package change is found in real rpm databases: the answer is
// the newest INSTALLTIME the real rpm printed for the same database.
func TestPatchAgeOnFixtureDatabases(t *testing.T) {
	for _, host := range []string{"rpm-amazonlinux2", "rpm-amazonlinux2023-plain", "rpm-sle15-bci", "rpm-epoch-hello-bdb"} {
		t.Run(host, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(testutil.FixtureHost(t, host), "expected-rpm-qa.tsv"))
			if err != nil {
				t.Fatal(err)
			}
			var newest int64
			for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
				f := strings.Split(line, "\t")
				if len(f) < 6 || f[0] == "gpg-pubkey" {
					continue
				}
				if n, err := strconv.ParseInt(f[5], 10, 64); err == nil && n > newest {
					newest = n
				}
			}
			r, err := hostfs.Open(testutil.CopyFixtureRoot(t, host))
			must(t, err)
			defer func() { _ = r.Close() }()
			env := &source.Env{Root: r, Proc: t.TempDir()}
			snap, err := source.Run(context.Background(), env, []string{"os", "packages"})
			must(t, err)
			want := time.Unix(newest, 0).UTC()
			for _, o := range []struct {
				now  time.Time
				want string
			}{
				{want.Add(24 * time.Hour), "FINDING_STATUS_PASS"},
				{want.Add(45 * 24 * time.Hour), "FINDING_STATUS_FAIL"},
			} {
				f := lastPackageChange(snap.GetPackages(), patchOptions{WarnDays: 30, FailDays: 90, Now: o.now})
				if f.GetStatus().String() != o.want || !strings.Contains(evidenceText(f), want.Format(time.RFC3339)) {
					t.Errorf("now %v: %v, want %s with %s\n%s", o.now, f.GetStatus(), o.want, want.Format(time.RFC3339), evidenceText(f))
				}
			}
		})
	}
}
