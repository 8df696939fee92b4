package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nodeward/nodeward/internal/auth/authtest"
)

const e2eIssuer = "https://oidc.eks.eu-west-1.amazonaws.com/id/E2E0000000000000"

// TestAuthOverTLS runs the real collector with TLS, a client CA, a token
// issuer's JWKS served over https and a reader token file, and the real
// agent and CLI against it: every bad credential is refused, logged and
// counted; agents report for their own node only; readers query and tail;
// agent credentials cannot query.
func TestAuthOverTLS(t *testing.T) {
	bin := build(t)
	dir := t.TempDir()
	file := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		authtest.WriteFile(t, p, b)
		return p
	}

	ca := authtest.NewCA(t, "nodeward e2e CA")
	caFile := file("ca.crt", ca.CertPEM)
	srvCert, srvKey := ca.Issue(t, authtest.Leaf{CommonName: "collector", DNSNames: []string{"localhost"},
		IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Server: true}).Write(t, dir, "server")
	cert := func(name string, issuer *authtest.CA, uri string, rsa bool) []string {
		c, k := issuer.Issue(t, authtest.Leaf{CommonName: name, URIs: []string{uri}, Client: true, RSA: rsa}).Write(t, dir, name)
		return []string{"--tls-cert", c, "--tls-key", k}
	}

	// The issuer signs with an RSA and an EC key and publishes both over https.
	rsaKey, ecKey := authtest.NewRSASigner(t, "sa-rsa"), authtest.NewECSigner(t, "sa-ec")
	jwks := authtest.JWKS(t, rsaKey, ecKey)
	issuer := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = w.Write(jwks)
	}))
	defer issuer.Close()
	issuerCA := file("issuer-ca.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: issuer.Certificate().Raw}))

	const readerToken, adminToken = "rdr-6c0f3b1e9a2d4f57b8c1", "adm-1f2e3d4c5b6a79880d1e"
	readers := file("readers.csv", []byte(readerToken+",sre-alice,reader\n"+adminToken+",sre-bob,admin\n"))

	// Off loopback, never plaintext.
	for _, listen := range []string{"0.0.0.0:0", "[::]:0"} {
		_, errOut, code := cli(t, bin.collector, "serve", "--listen", listen, "--store", "sqlite:"+filepath.Join(dir, "plain.db"),
			"--reader-tokens", readers)
		if code == 0 || !strings.Contains(errOut, "refusing to serve without TLS") {
			t.Errorf("serve --listen %s without TLS: exit %d: %s", listen, code, errOut)
		}
	}

	col := start(t, bin.collector, "serve", "--listen", "127.0.0.1:0", "--store", "sqlite:"+filepath.Join(dir, "nodeward.db"),
		"--log-format", "json", "--metrics-listen", "127.0.0.1:0",
		"--tls-cert", srvCert, "--tls-key", srvKey, "--client-ca", caFile,
		"--token-jwks", issuer.URL+"/openid/v1/jwks", "--token-jwks-ca", issuerCA, "--token-issuer", e2eIssuer,
		"--token-service-account", "nodeward/agent", "--reader-tokens", readers)
	metricsAddr := fmt.Sprint(col.await("metrics serving", 30*time.Second)["listen"])
	serving := col.await("collector serving", 30*time.Second)
	addr := fmt.Sprint(serving["listen"])
	if serving["tls"] != true {
		t.Fatalf("collector not serving TLS: %v", serving)
	}

	// A small host root keeps each agent's scan cheap.
	root := filepath.Join(dir, "root")
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	file("root/etc/os-release", []byte("ID=e2e\nVERSION_ID=1\nPRETTY_NAME=\"auth e2e\"\n"))
	agent := func(node string, creds ...string) *proc {
		args := append([]string{"run", "--collector", addr, "--node-name", node, "--root", root, "--tls-ca", caFile,
			"--interval", "1h", "--heartbeat", "1s", "--log-format", "json"}, creds...)
		return start(t, bin.agent, args...)
	}
	token := func(name string, s *authtest.Signer, c authtest.Claims) []string {
		return []string{"--token-file", file(name+".token", []byte(s.Token(t, c)+"\n"))}
	}
	now := time.Now()
	claims := func(node string, f func(*authtest.Claims)) authtest.Claims {
		c := authtest.AgentClaims(e2eIssuer, node)
		if f != nil {
			f(&c)
		}
		return c
	}
	readerCreds := []string{"--tls-ca", caFile, "--token-file", file("reader.token", []byte(readerToken))}
	query := func(creds []string, args ...string) (string, string, int) {
		return cli(t, bin.collector, append(append(args, "--server", addr), creds...)...)
	}
	nodeStored := func(name string) bool {
		_, _, code := query(readerCreds, "node", name, "-o", "json")
		return code == 0
	}

	// Good agents: a token agent (EC-signed) and a certificate agent.
	tokenA := token("agent-a", ecKey, claims("e2e-node-a", nil))
	certC := cert("agent-c", ca, "nodeward://node/e2e-node-c", true)
	goodA := agent("e2e-node-a", tokenA...)
	goodC := agent("e2e-node-c", certC...)
	goodA.await("connected to collector", 30*time.Second)
	goodC.await("connected to collector", 30*time.Second)
	waitFor(t, "both good nodes to be stored", 30*time.Second, func() bool {
		return nodeStored("e2e-node-a") && nodeStored("e2e-node-c")
	})

	// Bad agents, one at a time: each is refused on its first connect, says
	// why in its own log, and is stopped.
	otherCA := authtest.NewCA(t, "another CA")
	for _, tc := range []struct {
		name, node, reason, code string
		creds                    []string
	}{
		{"no credential", "e2e-nocred", "no_credential", "Unauthenticated", nil},
		{"expired token", "e2e-expired", "token_expired", "Unauthenticated",
			token("expired", rsaKey, claims("e2e-expired", func(c *authtest.Claims) { c.IssuedAt, c.Expiry = now.Add(-2*time.Hour), now.Add(-time.Hour) }))},
		{"wrong-audience token", "e2e-audience", "wrong_audience", "Unauthenticated",
			token("audience", rsaKey, claims("e2e-audience", func(c *authtest.Claims) { c.Audience = []string{"https://kubernetes.default.svc"} }))},
		{"certificate from another CA", "e2e-other-ca", "untrusted_certificate", "Unauthenticated",
			cert("other-ca", otherCA, "nodeward://node/e2e-other-ca", false)},
		{"token for node A sending for node B", "e2e-node-b", "node_mismatch", "PermissionDenied", tokenA},
		{"certificate for node C sending for node B", "e2e-node-b", "node_mismatch", "PermissionDenied", certC},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := refusals(t, metricsAddr)[tc.reason]
			a := agent(tc.node, tc.creds...)
			l := a.await("collector stream lost, reconnecting", 30*time.Second)
			// A refusal can end the stream before the agent's Hello is
			// written; its Send then sees EOF, not the status.
			if msg := fmt.Sprint(l["err"]); strings.HasSuffix(msg, "EOF") {
				t.Logf("agent saw %q (the refusal raced its Hello)", msg)
			} else if !strings.Contains(msg, tc.code) || !strings.Contains(msg, tc.reason) {
				t.Errorf("agent was told %q, want %s and %s", msg, tc.code, tc.reason)
			}
			a.stop()
			if after := refusals(t, metricsAddr)[tc.reason]; after <= before {
				t.Errorf("%s counted %v before and %v after", tc.reason, before, after)
			}
			if len(a.logged("connected to collector")) != 0 {
				t.Error("the refused agent logged a connection")
			}
			if nodeStored(tc.node) {
				t.Errorf("node %s was stored", tc.node)
			}
		})
	}

	// Readers query with a token or a certificate; agent credentials cannot.
	out, errOut, code := query(readerCreds, "nodes")
	if code != 0 || !strings.Contains(out, "e2e-node-a") || !strings.Contains(out, "e2e-node-c") {
		t.Errorf("reader token: nodes exit %d: %s%s", code, out, errOut)
	}
	for _, bad := range []string{"e2e-node-b", "e2e-nocred", "e2e-expired", "e2e-audience", "e2e-other-ca"} {
		if strings.Contains(out, bad) {
			t.Errorf("refused node %s is in the fleet:\n%s", bad, out)
		}
	}
	readerCert := append([]string{"--tls-ca", caFile}, cert("sre-carol", ca, "nodeward://reader/sre-carol", false)...)
	if out, errOut, code := query(readerCert, "nodes"); code != 0 || !strings.Contains(out, "e2e-node-c") {
		t.Errorf("reader certificate: nodes exit %d: %s%s", code, out, errOut)
	}
	adminCreds := []string{"--tls-ca", caFile, "--token-file", file("admin.token", []byte(adminToken))}
	if _, errOut, code := query(adminCreds, "node", "e2e-node-a"); code != 0 {
		t.Errorf("admin token: node exit %d: %s", code, errOut)
	}

	before := refusals(t, metricsAddr)
	agentCreds := map[string][]string{
		"agent token":       append([]string{"--tls-ca", caFile}, tokenA...),
		"agent certificate": append([]string{"--tls-ca", caFile}, certC...),
	}
	for name, creds := range agentCreds {
		for _, verb := range [][]string{{"nodes"}, {"node", "e2e-node-a"}, {"tail"}} {
			out, errOut, code := query(creds, verb...)
			if code == 0 || !strings.Contains(errOut, "refused: wrong_kind") {
				t.Errorf("%s ran %v: exit %d: %s%s", name, verb, code, out, errOut)
			}
		}
	}
	if got, want := refusals(t, metricsAddr)["wrong_kind"]-before["wrong_kind"], 6.0; got != want {
		t.Errorf("agent credentials on reader RPCs counted %v times, want %v", got, want)
	}
	if _, errOut, code := query([]string{"--tls-ca", caFile}, "nodes"); code == 0 || !strings.Contains(errOut, "no_credential") {
		t.Errorf("query without credential: exit %d: %s", code, errOut)
	}
	if _, errOut, code := query(nil, "nodes"); code == 0 {
		t.Errorf("plaintext query to the TLS collector succeeded: %s", errOut)
	}

	// A reader tails: exec events from node a (its agent traces when it can)
	// arrive on a live tail opened with the reader token.
	tailReader(t, bin.collector, addr, readerCreds, goodA)

	// Every refusal the collector counted, it also logged with its reason;
	// no log line carries any part of a secret.
	goodA.stop()
	goodC.stop()
	final := refusals(t, metricsAddr)
	logged := map[string]float64{}
	for _, l := range col.logged("call refused") {
		logged[fmt.Sprint(l["reason"])]++
	}
	for reason, n := range final {
		if logged[reason] != n {
			t.Errorf("%s: counted %v, logged %v", reason, n, logged[reason])
		}
	}
	t.Logf("refusals counted and logged: %v", final)
	for _, reason := range []string{"no_credential", "token_expired", "wrong_audience", "untrusted_certificate", "node_mismatch", "wrong_kind"} {
		if final[reason] == 0 {
			t.Errorf("%s never counted", reason)
		}
	}
	col.stop()
	col.mu.Lock()
	all := strings.Join(col.raw, "\n")
	col.mu.Unlock()
	agentJWT, err := os.ReadFile(tokenA[1])
	if err != nil {
		t.Fatal(err)
	}
	jwtParts := strings.Split(strings.TrimSpace(string(agentJWT)), ".")
	for name, s := range map[string]string{"reader token": readerToken, "admin token": adminToken,
		"agent token payload": jwtParts[1], "agent token signature": jwtParts[2]} {
		if strings.Contains(all, s) || strings.Contains(all, s[len(s)-12:]) {
			t.Errorf("the collector's log carries (part of) the %s", name)
		}
	}
}

var refusalLine = regexp.MustCompile(`^nodeward_auth_refusals_total\{reason="([a-z_]+)"\} ([0-9.e+]+)$`)

// refusals scrapes the collector's refusal counter by reason.
func refusals(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	seen := false
	for sc.Scan() {
		if m := refusalLine.FindStringSubmatch(sc.Text()); m != nil {
			v, err := strconv.ParseFloat(m[2], 64)
			if err != nil {
				t.Fatal(err)
			}
			out[m[1]], seen = v, true
		}
	}
	if !seen {
		t.Fatal("no nodeward_auth_refusals_total in /metrics")
	}
	return out
}

// tailReader opens `nodeward tail -o json` with a reader's credentials and
// waits for an event from the agent's node, running commands so there are
// execs to see. An agent whose tracer cannot load here sends no events;
// then the tail must still stay open, unrefused.
func tailReader(t *testing.T, bin, addr string, creds []string, agent *proc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"tail", "-o", "json", "--server", addr}, creds...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	lines := make(chan map[string]any, 64)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				select {
				case lines <- m:
				default:
				}
			}
		}
	}()
	tracing := len(agent.logged("tracing")) > 0
	deadline := time.After(30 * time.Second)
	if !tracing {
		t.Logf("the agent's tracer did not start here; checking only that the reader's tail is accepted")
		deadline = time.After(3 * time.Second)
	}
	tick := time.NewTicker(300 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case m, ok := <-lines:
			if !ok {
				t.Fatalf("tail ended: %s", stderr.String())
			}
			if m["node_name"] == "e2e-node-a" {
				t.Logf("reader's tail received an event from e2e-node-a: sequence %v", m["sequence"])
				return
			}
		case <-tick.C:
			_ = exec.Command("/bin/true").Run()
		case <-deadline:
			if tracing {
				t.Fatalf("no event from e2e-node-a on the reader's tail; stderr: %s", stderr.String())
			}
			if cmd.ProcessState != nil || strings.Contains(stderr.String(), "nodeward:") {
				t.Fatalf("tail refused or ended: %s", stderr.String())
			}
			return
		}
	}
}
