package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nodeward/nodeward/agent/hostfs"
	"github.com/nodeward/nodeward/agent/inventory"
	"github.com/nodeward/nodeward/internal/testutil"
	"golang.org/x/sys/unix"
)

// TestNodeArrives runs the collector and an agent on this machine and checks
// through the CLI that the node arrived with its real OS and kernel.
func TestNodeArrives(t *testing.T) {
	bin := build(t)
	col, addr := serve(t, bin, filepath.Join(t.TempDir(), "nodeward.db"), "")
	const name = "e2e-arrives"
	agent := start(t, bin.agent, "run", "--collector", addr, "--node-name", name, "--interval", "1h", "--log-format", "json",
		"--metrics-listen", "127.0.0.1:0")
	metricsAddr := fmt.Sprint(agent.await("serving metrics and health", 30*time.Second)["listen"])

	var node map[string]any
	waitFor(t, "the node to arrive", 30*time.Second, func() bool {
		m, ok := getNode(t, bin, addr, name)
		node = m
		return ok && get(m, "snapshot") != nil
	})

	root, err := hostfs.Open("/")
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	osr, err := inventory.ReadOSRelease(root)
	if err != nil {
		t.Fatal(err)
	}
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		t.Fatal(err)
	}
	checks := map[string][2]any{
		"os id":          {get(node, "node", "os", "id"), osr.GetId()},
		"os version_id":  {get(node, "node", "os", "version_id"), osr.GetVersionId()},
		"os pretty_name": {get(node, "node", "os", "pretty_name"), osr.GetPrettyName()},
		"kernel":         {get(node, "node", "kernel_release"), unix.ByteSliceToString(uts.Release[:])},
		"connected":      {get(node, "node", "connected"), true},
	}
	for what, c := range checks {
		if fmt.Sprint(c[0]) != fmt.Sprint(c[1]) {
			t.Errorf("%s = %v, want %v", what, c[0], c[1])
		}
	}

	// The agent's own health: ready once its stream is up, and metrics that
	// promtool accepts.
	waitFor(t, "the agent to be ready", 30*time.Second, func() bool {
		resp, err := http.Get("http://" + metricsAddr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if promtool, err := exec.LookPath("promtool"); err == nil {
		resp, err := http.Get("http://" + metricsAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		check := exec.Command(promtool, "check", "metrics")
		check.Stdin = bytes.NewReader(body)
		if out, err := check.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
		if !bytes.Contains(body, []byte("nodeward_agent_collector_connected 1")) {
			t.Errorf("agent metrics do not show the stream up:\n%s", body)
		}
	} else {
		testutil.Unavailable(t, "promtool not installed (Debian package prometheus)")
	}

	out, _, code := cli(t, bin.collector, "nodes", "--server", addr)
	if code != 0 || !strings.Contains(out, name) || !strings.Contains(out, osr.GetPrettyName()) {
		t.Errorf("nodes table (exit %d) lacks the node:\n%s", code, out)
	}
	col.stop()
}

// TestCollectorKilledMidSession kills the collector with SIGKILL while an
// agent streams changing snapshots, restarts it on the same SQLite file, and
// checks that the agent reconnects by itself and nothing acked is missing.
func TestCollectorKilledMidSession(t *testing.T) {
	bin := build(t)
	db := filepath.Join(t.TempDir(), "nodeward.db")
	col, addr := serve(t, bin, db, "")

	// The agent watches a host root whose os-release the test keeps
	// changing, so it sends a new snapshot every interval.
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	var build int
	bump := func() {
		build++
		s := fmt.Sprintf("ID=e2e\nVERSION_ID=1\nBUILD_ID=%d\n", build)
		tmp := filepath.Join(root, "etc", "os-release.tmp")
		if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(root, "etc", "os-release")); err != nil {
			t.Fatal(err)
		}
	}
	bump()
	const name = "e2e-killed"
	agent := start(t, bin.agent, "run", "--collector", addr, "--node-name", name, "--root", root,
		"--interval", "100ms", "--heartbeat", "1s", "--log-format", "json", "--log-level", "debug")
	agent.await("connected to collector", 30*time.Second)

	// churn keeps changing the host until the agent has had n more acks:
	// collection time varies with the machine's load, so count, don't time.
	churn := func(n int) {
		want := len(agent.logged("acked")) + n
		waitFor(t, fmt.Sprintf("%d acks", want), time.Minute, func() bool {
			bump()
			time.Sleep(150 * time.Millisecond)
			return len(agent.logged("acked")) >= want
		})
	}
	churn(3)
	col.kill()
	// The agent queues while the collector is gone.
	for range 5 {
		bump()
		time.Sleep(150 * time.Millisecond)
	}
	col, _ = serve(t, bin, db, addr)
	waitFor(t, "a second connection", 30*time.Second, func() bool { return len(agent.logged("connected to collector")) >= 2 })
	churn(3)
	final := fmt.Sprint(build)
	waitFor(t, "the last snapshot to be stored", 30*time.Second, func() bool {
		m, ok := getNode(t, bin, addr, name)
		return ok && fmt.Sprint(get(m, "node", "os", "build_id")) == final
	})
	agent.stop()
	col.stop()

	stored := map[uint64]bool{}
	conn := openStore(t, db)
	rows, err := conn.Query(`SELECT seq FROM sequences WHERE node = ?`, name)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var s uint64
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		stored[s] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	ackedSeqs := agent.logged("acked")
	for _, l := range ackedSeqs {
		seq := uint64(l["seq"].(float64))
		if !stored[seq] {
			t.Errorf("sequence %d was acked but is not in the store", seq)
		}
	}
	// Sequences are dense: a replay after the restart filled every hole.
	for s := uint64(1); s <= uint64(len(stored)); s++ {
		if !stored[s] {
			t.Errorf("sequence %d missing: %d stored", s, len(stored))
		}
	}
	t.Logf("%d acks, %d sequences stored, final build %s", len(ackedSeqs), len(stored), final)
}

// TestReportOSReleaseFixtures runs `nodeward-agent report --root DIR -o json`
// over every fixture that recorded what a real shell made of its
// os-release.
func TestReportOSReleaseFixtures(t *testing.T) {
	bin := build(t)
	oracles, err := filepath.Glob(filepath.Join(testutil.FixturesDir(t), "hosts", "*", "expected-os-release.env"))
	if err != nil || len(oracles) == 0 {
		t.Fatalf("no oracles: %v", err)
	}
	for _, oracle := range oracles {
		host := filepath.Base(filepath.Dir(oracle))
		t.Run(host, func(t *testing.T) {
			root := testutil.CopyFixtureRoot(t, host)
			out, errOut, code := cli(t, bin.agent, "report", "--root", root, "--only", "os", "-o", "json")
			if code != 0 {
				t.Fatalf("report exit %d: %s", code, errOut)
			}
			var snap map[string]any
			if err := jsonUnmarshal(out, &snap); err != nil {
				t.Fatal(err)
			}
			fields, _ := get(snap, "node", "os", "fields").(map[string]any)
			want := envFile(t, oracle)
			if len(fields) != len(want) {
				t.Errorf("%d fields, oracle has %d: %v", len(fields), len(want), fields)
			}
			for k, v := range want {
				if fmt.Sprint(fields[k]) != v {
					t.Errorf("%s = %q, oracle %q", k, fields[k], v)
				}
			}
			for json, env := range map[string]string{"id": "ID", "version_id": "VERSION_ID", "pretty_name": "PRETTY_NAME"} {
				if got := fmt.Sprint(get(snap, "node", "os", json)); got != want[env] {
					t.Errorf("%s = %q, oracle %q", json, got, want[env])
				}
			}
		})
	}
}

// envFile reads `env` output: KEY=VALUE lines (these fixtures have no
// multi-line values; a line without '=' fails the test).
func envFile(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, line := range strings.Split(string(bytes.TrimRight(b, "\n")), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: unexpected line %q", path, line)
		}
		env[k] = v
	}
	delete(env, "PWD")
	return env
}
