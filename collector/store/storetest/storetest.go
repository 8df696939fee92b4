// Package storetest is the conformance suite every store.Store backend
// must pass: the same behaviour, checked the same way, on SQLite and on a
// real PostgreSQL.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/nodeward/nodeward/collector/store"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Opener returns a new, empty store for one subtest.
type Opener func(t *testing.T) store.Store

// Run runs every conformance test against stores from open.
func Run(t *testing.T, open Opener) {
	for _, c := range []struct {
		name string
		fn   func(*testing.T, store.Store)
	}{
		{"EventsDedupeAndLastSequence", testEventsDedupe},
		{"ConcurrentCommitsStoredOnce", testConcurrent},
		{"SnapshotLatestAndOutOfOrder", testSnapshotLatest},
		{"NodesPagingAndConnected", testNodes},
		{"PackagesVersionsAndHistory", testPackages},
		{"PortsExposedAndHistory", testPorts},
		{"FindingsFiltersAndPosture", testFindings},
		{"QueryEventsFiltersAndPaging", testQueryEvents},
		{"QueryEventsByNodeInFleetOrder", testNodeEvents},
		{"PruneKeepsLatest", testPrune},
	} {
		t.Run(c.name, func(t *testing.T) {
			st := open(t)
			t.Cleanup(func() { _ = st.Close() })
			c.fn(t, st)
		})
	}
}

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

// Exec builds an exec event.
func Exec(node string, at time.Time, bin string, uid uint32, args ...string) *nodewardv1.Event {
	return &nodewardv1.Event{NodeName: node, Time: timestamppb.New(at), Body: &nodewardv1.Event_Exec{Exec: &nodewardv1.ExecEvent{
		Process: &nodewardv1.Process{Filename: bin, Uid: uid, Args: args, Pod: &nodewardv1.Pod{Name: "web-1", Namespace: "shop"}},
		Parent:  &nodewardv1.Process{Filename: "/usr/sbin/sshd"},
	}}}
}

// mustCommitEvents commits evs, every other batch encoded as ingest hands
// them over, so each search below covers both forms.
func mustCommitEvents(t *testing.T, st store.Store, node string, seq uint64, evs ...*nodewardv1.Event) bool {
	t.Helper()
	var wire [][]byte
	if seq%2 == 0 {
		for _, ev := range evs {
			b, err := proto.Marshal(ev)
			if err != nil {
				t.Fatal(err)
			}
			wire = append(wire, b)
		}
		evs = nil
	}
	dup, err := st.CommitEvents(ctx(t), node, seq, evs, wire, t0)
	if err != nil {
		t.Fatalf("CommitEvents(%s, %d): %v", node, seq, err)
	}
	return dup
}

// allEvents pages through a search to its end.
func allEvents(t *testing.T, st store.Store, req *nodewardv1.QueryEventsRequest) []*nodewardv1.Event {
	t.Helper()
	var out []*nodewardv1.Event
	for {
		resp, err := st.QueryEvents(ctx(t), req)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, resp.GetEvents()...)
		if resp.GetNextPageToken() == "" {
			return out
		}
		req.PageToken = resp.GetNextPageToken()
	}
}

func mustSnapshot(t *testing.T, st store.Store, node string, seq uint64, snap *nodewardv1.Snapshot, at time.Time) {
	t.Helper()
	if snap.Node == nil {
		snap.Node = &nodewardv1.Node{}
	}
	snap.Node.Name = node
	if _, err := st.CommitSnapshot(ctx(t), node, seq, snap, at); err != nil {
		t.Fatalf("CommitSnapshot(%s, %d): %v", node, seq, err)
	}
}

func testEventsDedupe(t *testing.T, st store.Store) {
	if n, err := st.LastSequence(ctx(t), "n1"); err != nil || n != 0 {
		t.Fatalf("LastSequence of an unknown node = %d, %v; want 0", n, err)
	}
	if mustCommitEvents(t, st, "n1", 1, Exec("n1", t0, "/bin/true", 0)) {
		t.Fatal("first commit reported duplicate")
	}
	if !mustCommitEvents(t, st, "n1", 1, Exec("n1", t0, "/bin/false", 0)) {
		t.Fatal("replayed sequence not reported duplicate")
	}
	mustCommitEvents(t, st, "n1", 5, Exec("n1", t0, "/bin/ls", 0))
	mustCommitEvents(t, st, "n1", 3, Exec("n1", t0, "/bin/ps", 0)) // a late replay
	if n, _ := st.LastSequence(ctx(t), "n1"); n != 5 {
		t.Fatalf("LastSequence = %d, want 5", n)
	}
	resp, err := st.QueryEvents(ctx(t), &nodewardv1.QueryEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var bins []string
	for _, e := range resp.GetEvents() {
		bins = append(bins, e.GetExec().GetProcess().GetFilename())
	}
	sort.Strings(bins)
	if fmt.Sprint(bins) != "[/bin/ls /bin/ps /bin/true]" {
		t.Fatalf("stored events %v, want /bin/ls /bin/ps /bin/true once each (the duplicate ignored)", bins)
	}
	if _, err := st.CommitEvents(ctx(t), "n1", 0, nil, nil, t0); err == nil {
		t.Fatal("sequence 0 accepted")
	}
}

func testConcurrent(t *testing.T, st store.Store) {
	const nodes, batches = 20, 15
	var wg sync.WaitGroup
	errs := make(chan error, nodes*batches*2)
	for n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			node := fmt.Sprintf("node-%02d", n)
			for seq := uint64(1); seq <= batches; seq++ {
				for range 2 { // every batch sent twice, as a replay would
					evs := []*nodewardv1.Event{Exec(node, t0.Add(time.Duration(seq)*time.Second), "/bin/sh", 1000), Exec(node, t0, "/bin/id", 1000)}
					if _, err := st.CommitEvents(context.Background(), node, seq, evs, nil, t0); err != nil {
						errs <- err
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if total := len(allEvents(t, st, &nodewardv1.QueryEventsRequest{PageSize: 97})); total != nodes*batches*2 {
		t.Fatalf("stored %d events, want %d (each batch exactly once)", total, nodes*batches*2)
	}
	for n := range nodes {
		if s, _ := st.LastSequence(ctx(t), fmt.Sprintf("node-%02d", n)); s != batches {
			t.Fatalf("node-%02d last sequence %d, want %d", n, s, batches)
		}
	}
}

func testSnapshotLatest(t *testing.T, st store.Store) {
	mustSnapshot(t, st, "n1", 2, &nodewardv1.Snapshot{Node: &nodewardv1.Node{KernelRelease: "6.1.2"}}, t0)
	mustSnapshot(t, st, "n1", 1, &nodewardv1.Snapshot{Node: &nodewardv1.Node{KernelRelease: "5.10.0"}}, t0.Add(time.Second))
	n, snap, err := st.GetNode(ctx(t), "n1")
	if err != nil {
		t.Fatal(err)
	}
	if n.GetKernelRelease() != "6.1.2" || snap.GetNode().GetKernelRelease() != "6.1.2" {
		t.Fatalf("latest kernel %q / %q: an older replayed snapshot replaced the newer one", n.GetKernelRelease(), snap.GetNode().GetKernelRelease())
	}
	if n.GetLastSequence() != 2 {
		t.Fatalf("last sequence %d, want 2", n.GetLastSequence())
	}
	if _, _, err := st.GetNode(ctx(t), "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetNode(unknown) = %v, want ErrNotFound", err)
	}
}

func testNodes(t *testing.T, st store.Store) {
	now := time.Now()
	for i := range 7 {
		name := fmt.Sprintf("ip-10-0-0-%d.ec2.internal", i)
		mustSnapshot(t, st, name, 1, &nodewardv1.Snapshot{}, now)
		if err := st.TouchNode(ctx(t), name, now, i%2 == 0); err != nil {
			t.Fatal(err)
		}
	}
	var names []string
	connected := 0
	token := ""
	for {
		nodes, next, err := st.ListNodes(ctx(t), 3, token)
		if err != nil {
			t.Fatal(err)
		}
		if len(nodes) > 3 {
			t.Fatalf("page of %d, asked for 3", len(nodes))
		}
		for _, n := range nodes {
			names = append(names, n.GetName())
			if n.GetConnected() {
				connected++
			}
		}
		if next == "" {
			break
		}
		token = next
	}
	if len(names) != 7 || !sort.StringsAreSorted(names) {
		t.Fatalf("paged names %v: want 7 sorted", names)
	}
	if connected != 4 {
		t.Fatalf("%d connected, want 4", connected)
	}
	if _, _, err := st.ListNodes(ctx(t), 3, "!!not-a-token"); !errors.Is(err, store.ErrBadRequest) {
		t.Fatalf("bad token: %v, want ErrBadRequest", err)
	}
}

func rpmPkg(name, ver, rel string, epoch uint32) *nodewardv1.Package {
	return &nodewardv1.Package{Name: name, Version: ver, Release: rel, Epoch: proto.Uint32(epoch), Arch: "x86_64", Manager: nodewardv1.PackageManager_PACKAGE_MANAGER_RPM, State: "installed"}
}

func debPkg(name, ver string) *nodewardv1.Package {
	return &nodewardv1.Package{Name: name, Version: ver, Arch: "amd64", Manager: nodewardv1.PackageManager_PACKAGE_MANAGER_DPKG, State: "installed"}
}

func testPackages(t *testing.T, st store.Store) {
	inv := func(p ...*nodewardv1.Package) *nodewardv1.Snapshot {
		return &nodewardv1.Snapshot{Packages: &nodewardv1.PackageInventory{Packages: p}}
	}
	mustSnapshot(t, st, "al2023", 1, inv(rpmPkg("openssl-libs", "3.0.8", "1.amzn2023.0.3", 1), rpmPkg("curl", "8.3.0", "1", 0), rpmPkg("kernel", "6.1.50", "1", 0)), t0)
	mustSnapshot(t, st, "deb12", 1, inv(debPkg("openssl", "3.0.17-1~deb12u2"), debPkg("curl", "7.88.1-10+deb12u5")), t0)
	mustSnapshot(t, st, "ubuntu", 1, inv(debPkg("openssl", "3.0.2-0ubuntu1.10")), t0)

	older := func(name, v string) []string {
		op := nodewardv1.VersionOp_VERSION_OP_LT
		resp, err := st.ListPackages(ctx(t), &nodewardv1.ListPackagesRequest{Name: name, VersionOp: op, Version: v})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, p := range resp.GetPackages() {
			out = append(out, p.GetNodeName())
		}
		return out
	}
	if got := older("openssl", "3.0.8"); fmt.Sprint(got) != "[ubuntu]" {
		t.Fatalf("openssl < 3.0.8 on %v, want [ubuntu] (3.0.17 is newer by dpkg rules)", got)
	}
	if got := older("openssl-libs", "3.0.9"); fmt.Sprint(got) != "[al2023]" {
		t.Fatalf("openssl-libs < 3.0.9 on %v, want [al2023]", got)
	}
	if _, err := st.ListPackages(ctx(t), &nodewardv1.ListPackagesRequest{}); !errors.Is(err, store.ErrBadRequest) {
		t.Fatalf("no name and no node: %v, want ErrBadRequest", err)
	}

	// The next snapshot upgrades openssl, removes curl, installs a second
	// kernel (both stay installed).
	mustSnapshot(t, st, "al2023", 2, inv(rpmPkg("openssl-libs", "3.0.8", "1.amzn2023.0.4", 1), rpmPkg("kernel", "6.1.50", "1", 0), rpmPkg("kernel", "6.1.60", "1", 0)), t0.Add(time.Hour))
	// A snapshot without a package inventory (the source did not run)
	// removes nothing.
	mustSnapshot(t, st, "al2023", 3, &nodewardv1.Snapshot{}, t0.Add(2*time.Hour))
	resp, err := st.ListChanges(ctx(t), &nodewardv1.ListChangesRequest{NodeName: "al2023"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range resp.GetChanges() {
		got = append(got, fmt.Sprintf("%s %s %s>%s", c.GetKind(), c.GetSubject(), c.GetFrom(), c.GetTo()))
	}
	sort.Strings(got)
	want := []string{
		"CHANGE_KIND_PACKAGE_INSTALLED kernel >6.1.60-1",
		"CHANGE_KIND_PACKAGE_REMOVED curl 8.3.0-1>",
		"CHANGE_KIND_PACKAGE_UPGRADED openssl-libs 1:3.0.8-1.amzn2023.0.3>1:3.0.8-1.amzn2023.0.4",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("changes:\n got %q\nwant %q", got, want)
	}
	byNode, err := st.ListPackages(ctx(t), &nodewardv1.ListPackagesRequest{NodeName: "al2023", PageSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(byNode.GetPackages()) != 2 || byNode.GetNextPageToken() == "" {
		t.Fatalf("page of 2 of 3 packages: got %d, token %q", len(byNode.GetPackages()), byNode.GetNextPageToken())
	}
	rest, err := st.ListPackages(ctx(t), &nodewardv1.ListPackagesRequest{NodeName: "al2023", PageSize: 2, PageToken: byNode.GetNextPageToken()})
	if err != nil {
		t.Fatal(err)
	}
	if len(rest.GetPackages()) != 1 || rest.GetNextPageToken() != "" {
		t.Fatalf("last page: %d packages, token %q; want 1 and none", len(rest.GetPackages()), rest.GetNextPageToken())
	}
	_, snap, err := st.GetNode(ctx(t), "al2023")
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.GetPackages().GetPackages()) != 3 {
		t.Fatalf("latest snapshot kept %d packages, want the 3 carried over", len(snap.GetPackages().GetPackages()))
	}
}

func port(proto nodewardv1.Protocol, addr string, p uint32, exp nodewardv1.Exposure, proc string) *nodewardv1.ListeningPort {
	return &nodewardv1.ListeningPort{Protocol: proto, Address: addr, Port: p, Exposure: exp, ProcessName: proc, HostNetns: true, Netns: "net:[4026531840]"}
}

func testPorts(t *testing.T, st store.Store) {
	tcp := nodewardv1.Protocol_PROTOCOL_TCP
	mustSnapshot(t, st, "a", 1, &nodewardv1.Snapshot{Ports: &nodewardv1.PortInventory{Ports: []*nodewardv1.ListeningPort{
		port(tcp, "0.0.0.0", 22, nodewardv1.Exposure_EXPOSURE_ANY, "sshd"),
		port(tcp, "127.0.0.1", 10248, nodewardv1.Exposure_EXPOSURE_LOOPBACK, "kubelet"),
	}}}, t0)
	mustSnapshot(t, st, "b", 1, &nodewardv1.Snapshot{Ports: &nodewardv1.PortInventory{Ports: []*nodewardv1.ListeningPort{
		port(tcp, "127.0.0.1", 22, nodewardv1.Exposure_EXPOSURE_LOOPBACK, "sshd"),
	}}}, t0)
	list := func(req *nodewardv1.ListPortsRequest) []string {
		resp, err := st.ListPorts(ctx(t), req)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, p := range resp.GetPorts() {
			out = append(out, fmt.Sprintf("%s:%d", p.GetNodeName(), p.GetPort().GetPort()))
		}
		return out
	}
	if got := list(&nodewardv1.ListPortsRequest{Port: 22}); fmt.Sprint(got) != "[a:22 b:22]" {
		t.Fatalf("port 22: %v", got)
	}
	if got := list(&nodewardv1.ListPortsRequest{Port: 22, ExposedOnly: true}); fmt.Sprint(got) != "[a:22]" {
		t.Fatalf("port 22 exposed: %v, want only a (b binds loopback)", got)
	}
	mustSnapshot(t, st, "a", 2, &nodewardv1.Snapshot{Ports: &nodewardv1.PortInventory{Ports: []*nodewardv1.ListeningPort{
		port(tcp, "127.0.0.1", 10248, nodewardv1.Exposure_EXPOSURE_LOOPBACK, "kubelet"),
		port(tcp, "0.0.0.0", 8080, nodewardv1.Exposure_EXPOSURE_ANY, "python3"),
	}}}, t0.Add(time.Minute))
	resp, err := st.ListChanges(ctx(t), &nodewardv1.ListChangesRequest{NodeName: "a"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range resp.GetChanges() {
		got = append(got, c.GetKind().String()+" "+c.GetSubject())
	}
	sort.Strings(got)
	if fmt.Sprint(got) != "[CHANGE_KIND_PORT_CLOSED tcp/0.0.0.0:22 CHANGE_KIND_PORT_OPENED tcp/0.0.0.0:8080]" {
		t.Fatalf("port changes %q", got)
	}
	first := list(&nodewardv1.ListPortsRequest{NodeName: "a"})
	if fmt.Sprint(first) != "[a:8080 a:10248]" { // ordered by address
		t.Fatalf("ports of a: %v", first)
	}
}

func finding(id string, sev nodewardv1.Severity, st nodewardv1.FindingStatus) *nodewardv1.Finding {
	return &nodewardv1.Finding{CheckId: id, Title: id, Severity: sev, Status: st}
}

func testFindings(t *testing.T, st store.Store) {
	pass, fail := nodewardv1.FindingStatus_FINDING_STATUS_PASS, nodewardv1.FindingStatus_FINDING_STATUS_FAIL
	high, low := nodewardv1.Severity_SEVERITY_HIGH, nodewardv1.Severity_SEVERITY_LOW
	mustSnapshot(t, st, "a", 1, &nodewardv1.Snapshot{Findings: []*nodewardv1.Finding{
		finding("ssh.root-login", high, fail), finding("ssh.x11", low, pass),
		finding("lsm.enforcing", nodewardv1.Severity_SEVERITY_CRITICAL, nodewardv1.FindingStatus_FINDING_STATUS_UNKNOWN),
	}}, t0)
	mustSnapshot(t, st, "b", 1, &nodewardv1.Snapshot{Findings: []*nodewardv1.Finding{
		finding("ssh.root-login", high, pass), finding("ssh.x11", low, fail),
	}}, t0)
	ids := func(req *nodewardv1.ListFindingsRequest) []string {
		resp, err := st.ListFindings(ctx(t), req)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, f := range resp.GetFindings() {
			out = append(out, f.GetNodeName()+"/"+f.GetCheckId())
		}
		return out
	}
	if got := ids(&nodewardv1.ListFindingsRequest{Status: fail}); fmt.Sprint(got) != "[a/ssh.root-login b/ssh.x11]" {
		t.Fatalf("failing: %v", got)
	}
	if got := ids(&nodewardv1.ListFindingsRequest{Status: fail, MinSeverity: high}); fmt.Sprint(got) != "[a/ssh.root-login]" {
		t.Fatalf("failing high+: %v", got)
	}
	if got := ids(&nodewardv1.ListFindingsRequest{CheckId: "ssh.x11", NodeName: "b"}); fmt.Sprint(got) != "[b/ssh.x11]" {
		t.Fatalf("by check and node: %v", got)
	}
	n, _, err := st.GetNode(ctx(t), "a")
	if err != nil {
		t.Fatal(err)
	}
	// high fails (5), low passes (1): 1/6 -> 17; the unknown critical is not scored.
	if p := n.GetPosture(); p.GetScore() != 17 || p.GetFailingHigh() != 1 || p.GetUnknown() != 1 || p.GetDecided() != 2 {
		t.Fatalf("posture %v", p)
	}
	// Status unchanged keeps changed_at; a change moves it and is recorded.
	mustSnapshot(t, st, "a", 2, &nodewardv1.Snapshot{Findings: []*nodewardv1.Finding{
		finding("ssh.root-login", high, pass), finding("ssh.x11", low, pass),
	}}, t0.Add(time.Hour))
	resp, err := st.ListFindings(ctx(t), &nodewardv1.ListFindingsRequest{NodeName: "a"})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range resp.GetFindings() {
		want := t0
		if f.GetCheckId() == "ssh.root-login" {
			want = t0.Add(time.Hour)
		}
		if !f.GetChangedAt().AsTime().Equal(want) {
			t.Fatalf("%s changed_at %v, want %v", f.GetCheckId(), f.GetChangedAt().AsTime(), want)
		}
	}
	ch, err := st.ListChanges(ctx(t), &nodewardv1.ListChangesRequest{NodeName: "a", Kinds: []nodewardv1.ChangeKind{nodewardv1.ChangeKind_CHANGE_KIND_FINDING_CHANGED}})
	if err != nil {
		t.Fatal(err)
	}
	if len(ch.GetChanges()) != 1 || ch.GetChanges()[0].GetSubject() != "ssh.root-login" || ch.GetChanges()[0].GetFrom() != "fail" || ch.GetChanges()[0].GetTo() != "pass" {
		t.Fatalf("finding changes %v", ch.GetChanges())
	}
	if n, _, _ := st.GetNode(ctx(t), "a"); n.GetPosture().GetScore() != 100 {
		t.Fatalf("score after fixing: %d, want 100", n.GetPosture().GetScore())
	}
}

func testQueryEvents(t *testing.T, st store.Store) {
	seq := map[string]uint64{}
	for i := range 300 {
		node := []string{"a", "b", "c"}[i%3]
		bin := []string{"/usr/bin/curl", "/bin/sh", "/usr/bin/kubectl"}[i%5%3]
		seq[node]++
		ev := Exec(node, t0.Add(time.Duration(i)*time.Second), bin, uint32(i%4), "-x", fmt.Sprintf("arg%d", i))
		mustCommitEvents(t, st, node, seq[node], ev)
	}
	ssh := &nodewardv1.Event{Time: timestamppb.New(t0.Add(time.Hour)), Body: &nodewardv1.Event_Ssh{Ssh: &nodewardv1.SshEvent{
		Kind: nodewardv1.SshEventKind_SSH_EVENT_KIND_LOGIN, User: "ec2-user", Uid: proto.Uint32(1000), SessionId: "s-1", RemoteAddress: "10.1.2.3"}}}
	mustCommitEvents(t, st, "a", 1000, ssh)

	all := func(req *nodewardv1.QueryEventsRequest) []*nodewardv1.Event { return allEvents(t, st, req) }
	evs := all(&nodewardv1.QueryEventsRequest{PageSize: 7})
	if len(evs) != 301 {
		t.Fatalf("paged through %d events, want 301", len(evs))
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].GetTime().AsTime().After(evs[i-1].GetTime().AsTime()) {
			t.Fatal("events not newest first")
		}
	}
	count := func(name string, want int, req *nodewardv1.QueryEventsRequest) {
		t.Helper()
		if got := len(all(req)); got != want {
			t.Errorf("%s: %d events, want %d", name, got, want)
		}
	}
	count("node b", 100, &nodewardv1.QueryEventsRequest{Filter: &nodewardv1.EventFilter{NodeNames: []string{"b"}}})
	count("ssh kind", 1, &nodewardv1.QueryEventsRequest{Filter: &nodewardv1.EventFilter{Kinds: []nodewardv1.EventKind{nodewardv1.EventKind_EVENT_KIND_SSH}}})
	count("exact binary", 120, &nodewardv1.QueryEventsRequest{PageSize: 50, Filter: &nodewardv1.EventFilter{BinaryRegex: "^/usr/bin/curl$"}})
	count("binary regex", 180, &nodewardv1.QueryEventsRequest{PageSize: 50, Filter: &nodewardv1.EventFilter{BinaryRegex: "^/usr/bin/"}})
	count("uid 3", 75, &nodewardv1.QueryEventsRequest{Filter: &nodewardv1.EventFilter{Uids: []uint32{3}}})
	count("user", 1, &nodewardv1.QueryEventsRequest{Filter: &nodewardv1.EventFilter{Users: []string{"ec2-user"}}})
	count("session", 1, &nodewardv1.QueryEventsRequest{Filter: &nodewardv1.EventFilter{SshSessionIds: []string{"s-1"}}})
	count("namespace", 300, &nodewardv1.QueryEventsRequest{Filter: &nodewardv1.EventFilter{Namespaces: []string{"shop"}}})
	count("args regex", 11, &nodewardv1.QueryEventsRequest{Filter: &nodewardv1.EventFilter{ArgsRegex: `arg1\d?$`}})
	count("ancestor", 300, &nodewardv1.QueryEventsRequest{Filter: &nodewardv1.EventFilter{AncestorBinaryRegex: "sshd$"}})
	count("text", 1, &nodewardv1.QueryEventsRequest{Text: "10.1.2.3"})
	count("time range", 60, &nodewardv1.QueryEventsRequest{StartTime: timestamppb.New(t0.Add(10 * time.Second)), EndTime: timestamppb.New(t0.Add(70 * time.Second))})
	if _, err := st.QueryEvents(ctx(t), &nodewardv1.QueryEventsRequest{Filter: &nodewardv1.EventFilter{BinaryRegex: "("}}); !errors.Is(err, store.ErrBadRequest) {
		t.Errorf("bad regex: %v, want ErrBadRequest", err)
	}
}

// testNodeEvents holds node-filtered searches to the fleet-wide order:
// batches whose time spans overlap, arrive out of order and share
// timestamps must page out exactly as the unfiltered search lists them.
func testNodeEvents(t *testing.T, st store.Store) {
	r := rand.New(rand.NewPCG(1, 2))
	type batch struct {
		node string
		seq  uint64
		evs  []*nodewardv1.Event
	}
	var batches []batch
	n := 0
	for _, node := range []string{"a", "b", "c"} {
		for seq := uint64(1); seq <= 150; seq++ {
			// Batches a second apart, each spanning up to 30s: dozens overlap.
			base := t0.Add(time.Duration(seq)*time.Second + time.Duration(r.IntN(25))*time.Second)
			var evs []*nodewardv1.Event
			for range r.IntN(12) { // some batches are empty
				n++
				at := base.Add(time.Duration(r.IntN(30)) * time.Second)
				evs = append(evs, Exec(node, at, []string{"/bin/sh", "/usr/bin/curl", "/bin/ls"}[r.IntN(3)], uint32(r.IntN(3)), fmt.Sprintf("ev-%d", n)))
			}
			batches = append(batches, batch{node, seq, evs})
		}
	}
	// Node d: uid-2 events sit in its oldest 30 batches, and two more, hours
	// older, in a later batch (an agent's backlog): batch order is not time
	// order.
	for seq := uint64(1); seq <= 100; seq++ {
		newest := t0.Add(time.Duration(seq) * 10 * time.Second)
		n++
		evs := []*nodewardv1.Event{Exec("d", newest, "/bin/sh", 1, fmt.Sprintf("ev-%d", n))}
		var uid2 []time.Time
		switch {
		case seq <= 30:
			uid2 = []time.Time{newest.Add(-time.Second)}
		case seq == 37:
			uid2 = []time.Time{t0.Add(-3 * time.Hour), t0.Add(-3*time.Hour + time.Second)}
		}
		for _, at := range uid2 {
			n++
			evs = append(evs, Exec("d", at, "/bin/sh", 2, fmt.Sprintf("ev-%d", n)))
		}
		batches = append(batches, batch{"d", seq, evs})
	}
	r.Shuffle(len(batches), func(i, j int) { batches[i], batches[j] = batches[j], batches[i] })
	// Committed from several goroutines, so they share commit groups.
	work := make(chan batch)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range work {
				if _, err := st.CommitEvents(ctx(t), b.node, b.seq, b.evs, nil, t0); err != nil {
					t.Errorf("CommitEvents(%s, %d): %v", b.node, b.seq, err)
				}
			}
		}()
	}
	for _, b := range batches {
		work <- b
	}
	close(work)
	wg.Wait()
	mustSnapshot(t, st, "a", 100, &nodewardv1.Snapshot{}, t0)

	all := func(req *nodewardv1.QueryEventsRequest) []*nodewardv1.Event { return allEvents(t, st, req) }
	id := func(e *nodewardv1.Event) string { return e.GetExec().GetProcess().GetArgs()[0] }
	// The fleet-wide order, from unfiltered pages.
	fleet := all(&nodewardv1.QueryEventsRequest{PageSize: 1000})
	if len(fleet) != n {
		t.Fatalf("%d events stored, want %d", len(fleet), n)
	}
	start, end := t0.Add(40*time.Second), t0.Add(100*time.Second)
	for _, c := range []struct {
		name  string
		req   *nodewardv1.QueryEventsRequest
		match func(*nodewardv1.Event) bool
	}{
		{"one node", &nodewardv1.QueryEventsRequest{PageSize: 7, Filter: &nodewardv1.EventFilter{NodeNames: []string{"a"}}},
			func(e *nodewardv1.Event) bool { return e.GetNodeName() == "a" }},
		{"two nodes", &nodewardv1.QueryEventsRequest{PageSize: 7, Filter: &nodewardv1.EventFilter{NodeNames: []string{"c", "a"}}},
			func(e *nodewardv1.Event) bool { return e.GetNodeName() == "a" || e.GetNodeName() == "c" }},
		{"node and time range", &nodewardv1.QueryEventsRequest{PageSize: 5, StartTime: timestamppb.New(start), EndTime: timestamppb.New(end),
			Filter: &nodewardv1.EventFilter{NodeNames: []string{"b"}}},
			func(e *nodewardv1.Event) bool {
				at := e.GetTime().AsTime()
				return e.GetNodeName() == "b" && !at.Before(start) && at.Before(end)
			}},
		{"node and uid", &nodewardv1.QueryEventsRequest{PageSize: 100, Filter: &nodewardv1.EventFilter{NodeNames: []string{"b"}, Uids: []uint32{2}}},
			func(e *nodewardv1.Event) bool {
				return e.GetNodeName() == "b" && e.GetExec().GetProcess().GetUid() == 2
			}},
		{"node, a page reaching an old event", &nodewardv1.QueryEventsRequest{PageSize: 1, Filter: &nodewardv1.EventFilter{NodeNames: []string{"d"}, Uids: []uint32{2}}},
			func(e *nodewardv1.Event) bool {
				return e.GetNodeName() == "d" && e.GetExec().GetProcess().GetUid() == 2
			}},
		{"node and binary", &nodewardv1.QueryEventsRequest{PageSize: 3, Filter: &nodewardv1.EventFilter{NodeNames: []string{"c"}, BinaryRegex: "^/bin/ls$"}},
			func(e *nodewardv1.Event) bool {
				return e.GetNodeName() == "c" && e.GetExec().GetProcess().GetFilename() == "/bin/ls"
			}},
	} {
		var want, got []string
		for _, e := range fleet {
			if c.match(e) {
				want = append(want, id(e))
			}
		}
		for _, e := range all(c.req) {
			got = append(got, id(e))
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: paged out %d events %v\nwant %d in fleet order %v", c.name, len(got), got, len(want), want)
		}
	}
}

func testPrune(t *testing.T, st store.Store) {
	old, recent := time.Now().Add(-30*24*time.Hour), time.Now()
	for i := range 50 {
		at := old
		if i >= 40 {
			at = recent
		}
		if _, err := st.CommitEvents(ctx(t), "a", uint64(i+1), []*nodewardv1.Event{Exec("a", at, "/bin/true", 0)}, nil, at); err != nil {
			t.Fatal(err)
		}
	}
	mustSnapshot(t, st, "a", 100, &nodewardv1.Snapshot{Node: &nodewardv1.Node{KernelRelease: "old"}}, old)
	cutoff := time.Now().Add(-14 * 24 * time.Hour)
	total := 0
	for {
		n, err := st.Prune(ctx(t), cutoff, 7)
		if err != nil {
			t.Fatal(err)
		}
		if n > 7 {
			t.Fatalf("pruned %d rows in one call, limit 7", n)
		}
		total += n
		if n == 0 {
			break
		}
	}
	resp, err := st.QueryEvents(ctx(t), &nodewardv1.QueryEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetEvents()) != 10 {
		t.Fatalf("%d events left, want the 10 recent ones", len(resp.GetEvents()))
	}
	n, _, err := st.GetNode(ctx(t), "a")
	if err != nil || n.GetKernelRelease() != "old" {
		t.Fatalf("latest snapshot pruned: %v %v", n, err)
	}
	if s, _ := st.LastSequence(ctx(t), "a"); s != 100 {
		t.Fatalf("last sequence %d after prune, want 100", s)
	}
}
