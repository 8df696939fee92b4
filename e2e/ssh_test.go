package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nodeward/nodeward/internal/testutil"
)

// TestSSHEventsReachTheCollector runs a real sshd, the real agent and the
// real collector, logs in with a key to run two commands and fails a
// password once, then asks the collector after the fact: `nodeward events
// --type ssh` shows the login and the failure, and `--ssh-session ID` lists
// the commands run in the session.
func TestSSHEventsReachTheCollector(t *testing.T) {
	testutil.RequirePrivileged(t)
	for _, tool := range []string{"/usr/sbin/sshd", "ssh", "ssh-keygen", "useradd"} {
		if _, err := exec.LookPath(tool); err != nil {
			testutil.Unavailable(t, tool+" not installed")
		}
	}
	bin := build(t)
	dir := t.TempDir()
	sh := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
	}
	const user = "nwe2essh"
	if exec.Command("id", user).Run() != nil {
		sh("useradd", "-m", "-s", "/bin/bash", user)
	}
	sh("sh", "-c", "echo '"+user+":Correct-Horse-1' | chpasswd")
	sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, "hostkey"))
	sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, "userkey"))
	sh("install", "-d", "-m", "700", "-o", user, "-g", user, "/home/"+user+"/.ssh")
	sh("install", "-m", "600", "-o", user, "-g", user, filepath.Join(dir, "userkey.pub"), "/home/"+user+"/.ssh/authorized_keys")
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	conf := fmt.Sprintf("Port %d\nListenAddress 127.0.0.1\nHostKey %s/hostkey\nPidFile %s/sshd.pid\nUsePAM yes\n"+
		"PasswordAuthentication yes\nPubkeyAuthentication yes\nPermitRootLogin no\nLogLevel VERBOSE\n", port, dir, dir)
	if err := os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	sshdLog := filepath.Join(dir, "sshd.log")
	if err := os.WriteFile(sshdLog, nil, 0o600); err != nil {
		t.Fatal(err)
	}

	col, addr := serve(t, bin, filepath.Join(dir, "nodeward.db"), "")
	const node = "e2e-ssh"
	agent := start(t, bin.agent, "run", "--collector", addr, "--node-name", node, "--interval", "1h",
		"--ssh-log", sshdLog, "--log-format", "json")
	agent.await("tracing", 60*time.Second)
	agent.await("connected to collector", 30*time.Second)
	time.Sleep(500 * time.Millisecond)

	sshd := exec.Command("/usr/sbin/sshd", "-D", "-f", filepath.Join(dir, "sshd_config"), "-E", sshdLog)
	if err := sshd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sshd.Process.Kill(); _ = sshd.Wait() })
	agent.await("ssh tracking: following sshd", 30*time.Second)
	waitFor(t, "sshd to listen", 10*time.Second, func() bool {
		b, _ := os.ReadFile(sshdLog)
		return strings.Contains(string(b), "Server listening")
	})

	common := []string{"-p", strconv.Itoa(port), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"}
	login := exec.Command("ssh", append(common, "-o", "BatchMode=yes", "-i", filepath.Join(dir, "userkey"), user+"@127.0.0.1", "id; uname -a")...)
	if out, err := login.CombinedOutput(); err != nil {
		t.Fatalf("key login: %v\n%s", err, out)
	}
	askpass := filepath.Join(dir, "askpass.sh")
	if err := os.WriteFile(askpass, []byte("#!/bin/sh\necho wrong-password\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	fail := exec.Command("setsid", append([]string{"-w", "ssh"}, append(common, "-o", "PubkeyAuthentication=no",
		"-o", "PreferredAuthentications=password", "-o", "NumberOfPasswordPrompts=1", user+"@127.0.0.1", "true")...)...)
	fail.Env = append(os.Environ(), "SSH_ASKPASS="+askpass, "SSH_ASKPASS_REQUIRE=force")
	if fail.Run() == nil {
		t.Fatal("the wrong password logged in")
	}

	events := func(args ...string) []map[string]any {
		out, errOut, code := cli(t, bin.collector, append([]string{"events", "--server", addr, "--node", node, "-o", "json"}, args...)...)
		if code != 0 {
			t.Fatalf("events %v: exit %d: %s", args, code, errOut)
		}
		var evs []map[string]any
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if line == "" {
				continue
			}
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatalf("events -o json printed %q: %v", line, err)
			}
			evs = append(evs, m)
		}
		return evs
	}
	var session string
	var sawFailure bool
	var seen []map[string]any
	defer func() {
		if t.Failed() {
			t.Logf("ssh events in the collector: %v", seen)
		}
	}()
	waitFor(t, "the login and the failure in the collector", 60*time.Second, func() bool {
		session, sawFailure = "", false
		seen = events("--type", "ssh")
		for _, e := range seen {
			switch get(e, "ssh", "kind") {
			case "SSH_EVENT_KIND_LOGIN":
				if get(e, "ssh", "user") == user && get(e, "ssh", "auth_method") == "publickey" {
					session = fmt.Sprint(get(e, "ssh", "session_id"))
				}
			case "SSH_EVENT_KIND_AUTH_FAILURE":
				sawFailure = sawFailure || get(e, "ssh", "auth_method") == "password" && get(e, "ssh", "user") == user
			}
		}
		return session != "" && sawFailure
	})
	var cmds []string
	waitFor(t, "the session's commands", 30*time.Second, func() bool {
		cmds = nil
		for _, e := range events("--ssh-session", session, "--type", "exec") {
			p, _ := get(e, "exec", "process").(map[string]any)
			if fmt.Sprint(get(p, "session", "user")) != user || fmt.Sprint(get(p, "uid")) != fmt.Sprint(get(p, "session", "uid")) {
				continue
			}
			cmds = append(cmds, filepath.Base(fmt.Sprint(p["filename"])))
		}
		return len(cmds) >= 3
	})
	for _, want := range []string{"bash", "id", "uname"} {
		found := false
		for _, c := range cmds {
			found = found || c == want
		}
		if !found {
			t.Errorf("session %s commands %v lack %s", session, cmds, want)
		}
	}
	agent.stop()
	col.stop()
}
