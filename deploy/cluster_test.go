package deploy

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nodeward/nodeward/internal/testutil"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Versions of what the cluster test builds and installs. The binaries come
// from the Go module proxy (deploy/hack/kube-tools.sh); so do the CRDs, from
// the projects' own Go modules.
const (
	certManagerModule = "github.com/cert-manager/cert-manager@v1.21.2"
	promOperatorMod   = "github.com/prometheus-operator/prometheus-operator@v0.85.0"
)

// cluster is a real etcd and kube-apiserver, started for the test, with no
// node, scheduler or controller manager: objects are admitted and stored,
// never run.
type cluster struct {
	kubectl    string
	kubeconfig string
	client     *kubernetes.Clientset
	config     *rest.Config
	warnings   *warningLog
}

// kubeTools returns the directory holding kube-apiserver, kubectl and etcd,
// building them on first use into a cache outside the repository.
func kubeTools(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		testutil.Unavailable(t, "no go toolchain to build kube-apiserver and etcd")
	}
	script := filepath.Join(deployDir(t), "hack", "kube-tools.sh")
	cmd := exec.Command("bash", script)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	out, err := cmd.Output()
	if err != nil {
		tail := stderr.String()
		if len(tail) > 4000 {
			tail = tail[len(tail)-4000:]
		}
		testutil.Unavailable(t, fmt.Sprintf("building kube-apiserver, kubectl and etcd failed (%v):\n%s", err, tail))
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Logf("built kube-apiserver, kubectl and etcd in %s", d.Round(time.Second))
	}
	return strings.TrimSpace(string(out))
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitHTTP(t *testing.T, what, url, token string, client *http.Client) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err == nil {
			var b bytes.Buffer
			_, _ = b.ReadFrom(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, b.String())
		} else {
			last = err.Error()
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s not ready at %s: %s", what, url, last)
}

// startCluster starts etcd and kube-apiserver on loopback, with Pod Security
// admission and privileged containers allowed (the privileged variant must
// be admitted where its namespace allows it).
func startCluster(t *testing.T) *cluster {
	t.Helper()
	testutil.RequirePrivileged(t)
	bin := kubeTools(t)
	dir := t.TempDir()

	clientPort, peerPort := freePort(t), freePort(t)
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", clientPort)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", peerPort)
	testutil.StartProcess(t, dir, "etcd", filepath.Join(bin, "etcd"),
		"--data-dir", filepath.Join(dir, "etcd"), "--name", "default",
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "default="+peerURL, "--unsafe-no-fsync", "--log-level", "warn")
	waitHTTP(t, "etcd", etcdURL+"/health", "", http.DefaultClient)

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	saKey, saPub := filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	writeFile(t, saKey, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
	writeFile(t, saPub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))
	token := rand.Text()
	tokens := filepath.Join(dir, "tokens.csv")
	writeFile(t, tokens, []byte(token+",admin,admin-uid,system:masters\n"))

	port := freePort(t)
	server := fmt.Sprintf("https://127.0.0.1:%d", port)
	testutil.StartProcess(t, dir, "kube-apiserver", filepath.Join(bin, "kube-apiserver"),
		"--etcd-servers="+etcdURL, "--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", port),
		"--cert-dir="+filepath.Join(dir, "certs"),
		"--service-account-issuer=https://kubernetes.default.svc", "--service-account-key-file="+saPub,
		"--service-account-signing-key-file="+saKey, "--token-auth-file="+tokens,
		"--authorization-mode=Node,RBAC", "--service-cluster-ip-range=10.96.0.0/16",
		"--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none", "--allow-privileged=true")
	insecure := &http.Client{Transport: &http.Transport{TLSClientConfig: insecureTLS()}, Timeout: 5 * time.Second}
	waitHTTP(t, "kube-apiserver", server+"/readyz", token, insecure)

	kubeconfig := filepath.Join(dir, "kubeconfig")
	writeFile(t, kubeconfig, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: %q, insecure-skip-tls-verify: true}}]
users: [{name: admin, user: {token: %q}}]
contexts: [{name: test, context: {cluster: test, user: admin}}]
current-context: test
`, server, token)))

	warnings := &warningLog{}
	cfg := &rest.Config{
		Host:            server,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{Insecure: true},
		WarningHandler:  warnings,
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &cluster{kubectl: filepath.Join(bin, "kubectl"), kubeconfig: kubeconfig, client: cs, config: cfg, warnings: warnings}
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// warningLog keeps the API server's warnings (Pod Security "would violate"
// among them) for the test to read.
type warningLog struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warningLog) HandleWarningHeader(_ int, _ string, msg string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, msg)
}

// take returns and forgets the warnings so far.
func (w *warningLog) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.msgs
	w.msgs = nil
	return out
}

// kubectl runs the real kubectl against the test cluster.
func (c *cluster) run(t *testing.T, stdin []byte, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.kubectl, append([]string{"--kubeconfig", c.kubeconfig}, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

func (c *cluster) mustRun(t *testing.T, stdin []byte, args ...string) string {
	t.Helper()
	out, stderr, err := c.run(t, stdin, args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr)
	}
	return out
}

// moduleDir downloads a Go module (a no-op when the module cache has it) and
// returns its directory.
func moduleDir(t *testing.T, mod string) string {
	t.Helper()
	cmd := exec.Command("go", "mod", "download", "-json", mod)
	cmd.Dir = deployDir(t)
	out, err := cmd.Output()
	var info struct{ Dir, Error string }
	if jerr := json.Unmarshal(out, &info); err != nil || jerr != nil || info.Dir == "" {
		testutil.Unavailable(t, fmt.Sprintf("go mod download %s: %v %s", mod, errors.Join(err, jerr), info.Error))
	}
	return info.Dir
}

// installCRDs installs the cert-manager and Prometheus Operator CRDs the
// optional components use, from those projects' own release trees.
func (c *cluster) installCRDs(t *testing.T) {
	t.Helper()
	cm := filepath.Join(moduleDir(t, certManagerModule), "deploy", "crds")
	po := filepath.Join(moduleDir(t, promOperatorMod), "example", "prometheus-operator-crd")
	files := []string{
		filepath.Join(cm, "cert-manager.io_certificates.yaml"),
		filepath.Join(cm, "cert-manager.io_issuers.yaml"),
		filepath.Join(po, "monitoring.coreos.com_servicemonitors.yaml"),
		filepath.Join(po, "monitoring.coreos.com_podmonitors.yaml"),
	}
	args := []string{"apply", "--server-side", "--field-manager=nodeward-test"}
	for _, f := range files {
		args = append(args, "-f", f)
	}
	c.mustRun(t, nil, args...)
	c.mustRun(t, nil, "wait", "--for=condition=Established", "--timeout=60s",
		"crd/certificates.cert-manager.io", "crd/issuers.cert-manager.io",
		"crd/servicemonitors.monitoring.coreos.com", "crd/podmonitors.monitoring.coreos.com")
}
