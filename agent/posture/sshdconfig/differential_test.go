package sshdconfig

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/nodeward/nodeward/agent/hostfs"
)

// diffValues are candidate values per keyword, valid ones and a few that
// sshd rejects.
var diffValues = map[string][]string{
	"PermitRootLogin":                 {"yes", "no", "prohibit-password", "without-password", "forced-commands-only", "NO", "maybe"},
	"PasswordAuthentication":          {"yes", "no", "Yes", "nO"},
	"KbdInteractiveAuthentication":    {"yes", "no"},
	"ChallengeResponseAuthentication": {"yes", "no"},
	"PermitEmptyPasswords":            {"yes", "no"},
	"PubkeyAuthentication":            {"yes", "no"},
	"UsePAM":                          {"yes", "no"},
	"X11Forwarding":                   {"yes", "no"},
	"AllowTcpForwarding":              {"yes", "no", "all", "local", "remote"},
	"AllowAgentForwarding":            {"yes", "no"},
	"DisableForwarding":               {"yes", "no"},
	"PermitTunnel":                    {"yes", "no", "point-to-point", "ethernet", "Yes"},
	"MaxAuthTries":                    {"0", "3", "6", "+2", "10", "-1", "x"},
	"LoginGraceTime":                  {"0", "30", "2m", "1h30m", "90s", "1x"},
	"ClientAliveInterval":             {"0", "15", "5m", "1d"},
	"LogLevel":                        {"QUIET", "INFO", "verbose", "DEBUG", "DEBUG1", "debug2", "DEBUG3", "LOUD"},
	"Ciphers":                         {"aes128-ctr", "+3des-cbc", "-*cbc", "^aes256-gcm@openssh.com", "aes256-ctr,aes128-ctr", "nope"},
	"MACs":                            {"hmac-sha2-256", "+hmac-md5", "-umac*", "^hmac-sha1"},
	"KexAlgorithms":                   {"curve25519-sha256", "+diffie-hellman-group1-sha1", "-sntrup*", "^diffie-hellman-group14-sha1"},
	"Port":                            {"22", "2222", "ssh", "0", "65536"},
	"ListenAddress":                   {"127.0.0.1", "0.0.0.0", "[::1]:2200", "::", "10.1.2.3:22", "localhost"},
	"AddressFamily":                   {"any", "inet", "inet6"},
	"AuthorizedKeysFile":              {".ssh/authorized_keys", "~/.ssh/k %h/x", "none", "/etc/keys/%u"},
	"AuthorizedKeysCommand":           {"/bin/keys %u", "none", "relative"},
	"AuthorizedKeysCommandUser":       {"nobody", "root"},
	"AllowUsers":                      {"alice", "bob carol", "*@10.0.0.0/8", "root"},
	"DenyUsers":                       {"mallory", "root"},
	"AllowGroups":                     {"admins", "devs alice"},
	"DenyGroups":                      {"devs", "nogroup"},
}

var diffMatch = []string{
	"User alice", "User bob,carol", "User !alice,*", "Group admins", "Group devs,!admins", "Host *.example.com",
	"Address 10.0.0.0/8", "Address 192.168.*,!192.168.1.*", "LocalAddress 127.0.0.1", "LocalPort 2222", "All",
	"User alice Address 10.0.0.0/8", "user=bob",
}

// diffInvalid are lines sshd refuses, used now and then.
var diffInvalid = []string{
	"PermitRootLogin maybe", "MaxAuthTries -1", "MaxAuthTries x", "LoginGraceTime 1x", "LogLevel LOUD",
	"Ciphers nope", "Port 0", "Port 65536", "AuthorizedKeysCommand relative", "PermitTunnel Yes",
	"Match Address 10.0.0.1/8", "Match Colour red", "NoSuchKeyword yes", "PasswordAuthentication", "Match User x\nPort 2",
	"AllowUsers \"alice", "Match User", "Match All User x",
}

var diffSpecs = []string{
	"", "user=alice", "user=bob,host=a.example.com", "user=carol,addr=10.1.1.1", "user=alice,addr=192.168.2.3,laddr=127.0.0.1,lport=2222",
	"user=root,host=x,addr=1.2.3.4,lport=22",
}

func diffLine(r *rand.Rand, inMatch bool) string {
	keys := make([]string, 0, len(diffValues))
	for k := range diffValues {
		// Main-section-only keywords inside a Match block make sshd
		// refuse the whole file; keep those rare (diffInvalid has one).
		if inMatch && knownKeywords[strings.ToLower(k)]&cfgMatch == 0 {
			continue
		}
		keys = append(keys, k)
	}
	// map order is random per process: sort for a seed-stable choice.
	sortStrings(keys)
	k := keys[r.IntN(len(keys))]
	vals := diffValues[k]
	v := vals[r.IntN(len(vals))]
	switch r.IntN(6) {
	case 0:
		k = strings.ToLower(k)
	case 1:
		k = strings.ToUpper(k)
	}
	sep := []string{" ", "=", " = ", "\t", "  "}[r.IntN(5)]
	indent := []string{"", "", "\t", "  "}[r.IntN(4)]
	return indent + k + sep + v
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

func diffFile(r *rand.Rand, includes, inMatch bool) string {
	var b strings.Builder
	n := 3 + r.IntN(10)
	for i := 0; i < n; i++ {
		switch x := r.IntN(60); {
		case x == 0:
			b.WriteString(diffInvalid[r.IntN(len(diffInvalid))])
		case x < 39:
			b.WriteString(diffLine(r, inMatch))
		case x < 48:
			b.WriteString("Match " + diffMatch[r.IntN(len(diffMatch))])
			inMatch = true
		case x < 54 && includes && (!inMatch || r.IntN(3) == 0):
			b.WriteString("Include " + []string{"inc/*.conf", "/etc/ssh/inc/a.conf", "inc/[ab].conf", "/etc/ssh/missing/*"}[r.IntN(4)])
		case x < 57:
			b.WriteString("# comment " + strconv.Itoa(i))
		}
		b.WriteString("\n")
	}
	return b.String()
}

// TestRandomConfigsAgainstRealSSHD generates configs from sshd's grammar
// (valid and invalid values, Match blocks, Includes) with a fixed seed and
// requires the same answer as the real sshd -T for each: the same value for
// every listed keyword, or a refusal at the same line.
// NODEWARD_SSHD_DIFF_N and NODEWARD_SSHD_DIFF_SEED run more or other configs.
func TestRandomConfigsAgainstRealSSHD(t *testing.T) {
	requireRealSSHD(t)
	host, err := hostfs.Open("/")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = host.Close() }()
	hostProf, err := DetectProfile(host)
	if err != nil || !hostProf.Verified {
		t.Skipf("this machine's sshd has no verified profile: %v", err)
	}
	n := 30
	if s := os.Getenv("NODEWARD_SSHD_DIFF_N"); s != "" {
		if n, err = strconv.Atoi(s); err != nil {
			t.Fatal(err)
		}
	}
	seed := uint64(42)
	if s := os.Getenv("NODEWARD_SSHD_DIFF_SEED"); s != "" {
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatal(err)
		}
	}
	r := rand.New(rand.NewPCG(seed, 2))
	agree, refused := 0, 0
	for i := 0; i < n; i++ {
		main := diffFile(r, true, false)
		// Included files may land inside a Match block: then only
		// Match-allowed keywords keep sshd from refusing them.
		incA, incB := diffFile(r, false, r.IntN(2) == 0), diffFile(r, r.IntN(4) == 0, r.IntN(2) == 0)
		spec := diffSpecs[r.IntN(len(diffSpecs))]
		root := caseRoot(t, "01-include-glob-order", hostProf.Package)
		_ = os.RemoveAll(filepath.Join(root, "etc/ssh/conf.d"))
		for name, content := range map[string]string{"sshd_config": main, "inc/a.conf": incA, "inc/b.conf": incB} {
			p := filepath.Join(root, "etc/ssh", name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, realErr := sshdT(t, root, spec)
		rr, err := hostfs.Open(root)
		if err != nil {
			t.Fatal(err)
		}
		var ci *ConnInfo
		if spec != "" {
			if ci, err = ParseConnSpec(spec, Services(rr)); err != nil {
				t.Fatal(err)
			}
		}
		cfg, ourErr := Evaluate(rr, hostProf, ci)
		_ = rr.Close()
		show := "--- sshd_config\n" + main + "--- inc/a.conf\n" + incA + "--- inc/b.conf\n" + incB + "--- -C " + spec
		switch {
		case realErr != nil && ourErr != nil:
			refused++
			if w, g := lineRE.FindStringSubmatch(realErr.Error()), lineRE.FindStringSubmatch(ourErr.Error()); w != nil && (g == nil || g[1] != w[1]) {
				t.Errorf("config %d: sshd refuses (%v), we refuse at another line (%v)\n%s", i, realErr, ourErr, show)
			}
		case realErr != nil:
			t.Errorf("config %d: sshd refuses (%v), we accept\n%s", i, realErr, show)
		case ourErr != nil:
			t.Errorf("config %d: sshd accepts, we refuse (%v)\n%s", i, ourErr, show)
		default:
			agree++
			compareKeywords(t, "config "+strconv.Itoa(i)+"\n"+show+"\n", want, cfg.Lines())
		}
	}
	t.Logf("%d random configs: %d computed, %d refused by both", n, agree, refused)
}
