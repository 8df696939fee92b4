package auth

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nodeward/nodeward/internal/auth/authtest"
	"github.com/nodeward/nodeward/internal/testutil"
)

// kubeIssuer is the issuer the test's kube-apiserver signs tokens as.
const kubeIssuer = "https://kubernetes.default.svc"

// TestRealKubernetesTokens asks a real kube-apiserver (with etcd, both
// built from the Go module proxy by deploy/hack/kube-tools.sh) for
// projected service-account tokens the way the kubelet does, bound to a pod
// on a node, and checks what the verifier makes of them with the
// apiserver's own published JWKS: the node comes from the real
// kubernetes.io claim, and unbound, wrong-audience and other-account tokens
// are refused.
func TestRealKubernetesTokens(t *testing.T) {
	testutil.RequirePrivileged(t)
	k := startKube(t)

	for _, obj := range []struct{ path, body string }{
		{"/api/v1/namespaces", `{"metadata":{"name":"nodeward"}}`},
		{"/api/v1/nodes", `{"metadata":{"name":"ip-10-0-7-21.eu-west-1.compute.internal"}}`},
		{"/api/v1/namespaces/nodeward/serviceaccounts", `{"metadata":{"name":"agent"}}`},
		{"/api/v1/namespaces/nodeward/serviceaccounts", `{"metadata":{"name":"intruder"}}`},
		{"/api/v1/namespaces/nodeward/pods", `{"metadata":{"name":"agent-x1"},"spec":{"serviceAccountName":"agent",
			"nodeName":"ip-10-0-7-21.eu-west-1.compute.internal","containers":[{"name":"agent","image":"nodeward/agent"}]}}`},
		{"/api/v1/namespaces/nodeward/pods", `{"metadata":{"name":"intruder"},"spec":{"serviceAccountName":"intruder",
			"nodeName":"ip-10-0-7-21.eu-west-1.compute.internal","containers":[{"name":"x","image":"x"}]}}`},
	} {
		k.call(t, obj.path, obj.body, nil)
	}
	pod := func(name string) map[string]any {
		var p struct {
			Metadata struct{ UID string } `json:"metadata"`
		}
		k.call(t, "/api/v1/namespaces/nodeward/pods/"+name, "", &p)
		return map[string]any{"kind": "Pod", "apiVersion": "v1", "name": name, "uid": p.Metadata.UID}
	}
	// request is a TokenRequest as the kubelet makes it for a projected
	// volume: bound to the pod, for the volume's audience.
	request := func(sa string, audience []string, bound map[string]any) string {
		spec := map[string]any{"audiences": audience, "expirationSeconds": 3600}
		if bound != nil {
			spec["boundObjectRef"] = bound
		}
		b, _ := json.Marshal(map[string]any{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})
		var resp struct {
			Status struct{ Token string } `json:"status"`
		}
		k.call(t, "/api/v1/namespaces/nodeward/serviceaccounts/"+sa+"/token", string(b), &resp)
		if resp.Status.Token == "" {
			t.Fatal("TokenRequest returned no token")
		}
		return resp.Status.Token
	}

	var jwks json.RawMessage
	k.call(t, "/openid/v1/jwks", "", &jwks)
	ks := fileKeySet(t, jwks)
	v, err := NewTokenVerifier(TokenConfig{Issuer: kubeIssuer, ServiceAccounts: []string{"nodeward/agent"}}, ks)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	id, err := v.Verify(ctx, request("agent", []string{"nodeward"}, pod("agent-x1")))
	want := Identity{Kind: KindAgent, Node: "ip-10-0-7-21.eu-west-1.compute.internal", Name: "system:serviceaccount:nodeward:agent", Via: "token"}
	if err != nil || id != want {
		t.Fatalf("pod-bound token: %+v, %v; want %+v", id, err, want)
	}
	for _, tc := range []struct {
		name  string
		token string
		want  Reason
	}{
		{"not bound to a pod", request("agent", []string{"nodeward"}, nil), ReasonNoNodeClaim},
		{"the API server's audience", request("agent", []string{kubeIssuer}, pod("agent-x1")), ReasonWrongAudience},
		{"another account on the same node", request("intruder", []string{"nodeward"}, pod("intruder")), ReasonServiceAccount},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := v.Verify(ctx, tc.token)
			var r *Refusal
			if !errors.As(err, &r) || r.Reason != tc.want {
				t.Fatalf("got %+v, %v; want refusal %s", id, err, tc.want)
			}
		})
	}
	// The same tokens signed by a key the cluster does not publish fail.
	other := fileKeySet(t, authtest.JWKS(t, authtest.NewRSASigner(t, "x")))
	v2, err := NewTokenVerifier(TokenConfig{Issuer: kubeIssuer}, other)
	if err != nil {
		t.Fatal(err)
	}
	var r *Refusal
	if _, err := v2.Verify(ctx, request("agent", []string{"nodeward"}, pod("agent-x1"))); !errors.As(err, &r) || r.Reason != ReasonBadSignature {
		t.Fatalf("token checked against another cluster's keys: %v", err)
	}
}

type kube struct {
	url, token string
	client     *http.Client
}

// call POSTs body (or GETs without one) as the cluster admin and decodes
// the answer into out.
func (k *kube) call(t *testing.T, path, body string, out any) {
	t.Helper()
	method := http.MethodGet
	var rd io.Reader
	if body != "" {
		method, rd = http.MethodPost, strings.NewReader(body)
	}
	req, err := http.NewRequest(method, k.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+k.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := k.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		t.Fatalf("%s %s: %s: %s", method, path, resp.Status, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
}

// startKube starts etcd and kube-apiserver on loopback for the test.
func startKube(t *testing.T) *kube {
	t.Helper()
	script := filepath.Join(testutil.RepoRoot(t), "deploy", "hack", "kube-tools.sh")
	cmd := exec.Command("bash", script)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		tail := stderr.String()
		if len(tail) > 3000 {
			tail = tail[len(tail)-3000:]
		}
		testutil.Unavailable(t, fmt.Sprintf("building kube-apiserver and etcd failed (%v): %s", err, tail))
	}
	bin := strings.TrimSpace(string(out))
	dir := t.TempDir()

	etcdURL, peerURL := "http://"+freeAddr(t), "http://"+freeAddr(t)
	testutil.StartProcess(t, dir, "etcd", filepath.Join(bin, "etcd"), "--data-dir", filepath.Join(dir, "etcd"), "--name", "default",
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "default="+peerURL, "--unsafe-no-fsync", "--log-level", "warn")

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	saKey, saPub, tokens := filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub"), filepath.Join(dir, "tokens.csv")
	authtest.WriteFile(t, saKey, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
	authtest.WriteFile(t, saPub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))
	admin := rand.Text()
	authtest.WriteFile(t, tokens, []byte(admin+",admin,admin-uid,system:masters\n"))
	addr := freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	testutil.StartProcess(t, dir, "kube-apiserver", filepath.Join(bin, "kube-apiserver"),
		"--etcd-servers="+etcdURL, "--bind-address=127.0.0.1", "--secure-port="+port,
		"--cert-dir="+filepath.Join(dir, "certs"), "--service-account-issuer="+kubeIssuer,
		"--service-account-key-file="+saPub, "--service-account-signing-key-file="+saKey,
		"--token-auth-file="+tokens, "--authorization-mode=RBAC", "--service-cluster-ip-range=10.96.0.0/16",
		"--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none")

	// The apiserver's serving certificate is self-signed into --cert-dir;
	// trust exactly that one.
	k := &kube{url: "https://" + addr, token: admin}
	deadline := time.Now().Add(90 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		if c, err := os.ReadFile(filepath.Join(dir, "certs", "apiserver.crt")); err == nil && k.client == nil {
			// A file caught while still being written holds no certificate yet.
			if pool := x509.NewCertPool(); pool.AppendCertsFromPEM(c) {
				k.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "kubernetes.default.svc"}}}
			}
		}
		if k.client != nil {
			req, _ := http.NewRequest(http.MethodGet, k.url+"/readyz", nil)
			req.Header.Set("Authorization", "Bearer "+admin)
			resp, err := k.client.Do(req)
			if err == nil {
				_ = resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return k
				}
				err = errors.New(resp.Status)
			}
			last = err
		}
		time.Sleep(300 * time.Millisecond)
	}
	t.Fatalf("kube-apiserver not ready: %v", last)
	return nil
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().String()
}
