package posture

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"strconv"
	"strings"

	"github.com/nodeward/nodeward/agent/posture/sshdconfig"
	"github.com/nodeward/nodeward/agent/source"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
)

func init() {
	Register(Check{
		Name:  "sshd-config",
		Reads: []string{sshdconfig.MainConfig, "/etc/ssh/ (Include targets)", "/var/lib/dpkg/status", "/usr/sbin/sshd", "/etc/passwd", "/etc/group", "/etc/hosts"},
		Run:   runSSHDConfig,
	})
}

// sshdCfgCheck is one finding judged from the effective configuration.
type sshdCfgCheck struct {
	id, title, remediation string
	keywords               []string
	refs                   []*nodewardv1.Reference
	judge                  func(cfg *sshdconfig.Config) (nodewardv1.Severity, nodewardv1.FindingStatus, string)
}

var (
	sshdCfgEKSRef = refEKS("Minimize access to worker nodes: use SSM Session Manager instead of SSH")
	weakCiphers   = []string{"3des-cbc", "aes128-cbc", "aes192-cbc", "aes256-cbc", "rijndael-cbc@lysator.liu.se", "arcfour", "arcfour128", "arcfour256", "blowfish-cbc", "cast128-cbc"}
	weakMACs      = []string{"hmac-md5", "hmac-md5-96", "hmac-ripemd160", "hmac-sha1-96", "umac-64@openssh.com", "hmac-md5-etm@openssh.com", "hmac-md5-96-etm@openssh.com", "hmac-ripemd160-etm@openssh.com", "hmac-sha1-96-etm@openssh.com", "umac-64-etm@openssh.com"}
	weakKex       = []string{"diffie-hellman-group1-sha1", "diffie-hellman-group14-sha1", "diffie-hellman-group-exchange-sha1"}
)

func flagJudge(keyword string, sev nodewardv1.Severity) func(*sshdconfig.Config) (nodewardv1.Severity, nodewardv1.FindingStatus, string) {
	return func(cfg *sshdconfig.Config) (nodewardv1.Severity, nodewardv1.FindingStatus, string) {
		if cfg.Value(keyword) == "no" {
			return sev, statPass, keyword + " is no"
		}
		return sev, statFail, keyword + " is " + cfg.Value(keyword)
	}
}

func weakJudge(keyword string, weak []string) func(*sshdconfig.Config) (nodewardv1.Severity, nodewardv1.FindingStatus, string) {
	return func(cfg *sshdconfig.Config) (nodewardv1.Severity, nodewardv1.FindingStatus, string) {
		var found []string
		for _, a := range strings.Split(cfg.Value(keyword), ",") {
			for _, w := range weak {
				if a == w {
					found = append(found, a)
				}
			}
		}
		if len(found) == 0 {
			return sevMedium, statPass, "no weak algorithm offered"
		}
		return sevMedium, statFail, "weak algorithms offered: " + strings.Join(found, ",")
	}
}

var sshdCfgChecks = []sshdCfgCheck{
	{
		id: "ssh.permit-root-login", title: "sshd refuses root logins", keywords: []string{"permitrootlogin"},
		remediation: "Set `PermitRootLogin no` in /etc/ssh/sshd_config (before any Include that sets it) and reload sshd; log in as a user and escalate, or better use SSM Session Manager.",
		refs:        []*nodewardv1.Reference{refCIS("Ensure sshd PermitRootLogin is disabled"), sshdCfgEKSRef},
		judge: func(cfg *sshdconfig.Config) (nodewardv1.Severity, nodewardv1.FindingStatus, string) {
			switch v := cfg.Value("permitrootlogin"); v {
			case "no":
				return sevHigh, statPass, "root cannot log in over SSH"
			case "yes":
				return sevHigh, statFail, "root may log in with any method, passwords included"
			default:
				return sevMedium, statFail, "root may log in with keys (" + v + ")"
			}
		},
	},
	{
		id: "ssh.password-authentication", title: "sshd refuses password authentication", keywords: []string{"passwordauthentication"},
		remediation: "Set `PasswordAuthentication no` and use keys (or SSM Session Manager); reload sshd.",
		refs:        []*nodewardv1.Reference{sshdCfgEKSRef},
		judge:       flagJudge("passwordauthentication", sevHigh),
	},
	{
		id: "ssh.kbd-interactive-authentication", title: "sshd refuses keyboard-interactive authentication", keywords: []string{"kbdinteractiveauthentication", "usepam"},
		remediation: "Set `KbdInteractiveAuthentication no` (older name: ChallengeResponseAuthentication): with UsePAM it is password authentication by another name.",
		refs:        []*nodewardv1.Reference{sshdCfgEKSRef},
		judge: func(cfg *sshdconfig.Config) (nodewardv1.Severity, nodewardv1.FindingStatus, string) {
			if cfg.Value("kbdinteractiveauthentication") == "no" {
				return sevMedium, statPass, "kbdinteractiveauthentication is no"
			}
			if cfg.Value("usepam") == "yes" {
				return sevHigh, statFail, "kbdinteractiveauthentication is yes with usepam yes: PAM asks for passwords"
			}
			return sevMedium, statFail, "kbdinteractiveauthentication is yes"
		},
	},
	{
		id: "ssh.permit-empty-passwords", title: "sshd refuses accounts with empty passwords", keywords: []string{"permitemptypasswords"},
		remediation: "Set `PermitEmptyPasswords no` and reload sshd.",
		refs:        []*nodewardv1.Reference{refCIS("Ensure sshd PermitEmptyPasswords is disabled"), sshdCfgEKSRef},
		judge:       flagJudge("permitemptypasswords", sevHigh),
	},
	{
		id: "ssh.weak-ciphers", title: "sshd offers no weak ciphers", keywords: []string{"ciphers"},
		remediation: "Remove CBC and other weak ciphers, e.g. `Ciphers -*-cbc` (or an explicit list of chacha20-poly1305, aes-gcm and aes-ctr).",
		refs:        []*nodewardv1.Reference{refCIS("Ensure sshd Ciphers are configured")},
		judge:       weakJudge("ciphers", weakCiphers),
	},
	{
		id: "ssh.weak-macs", title: "sshd offers no weak MACs", keywords: []string{"macs"},
		remediation: "Remove MD5, RIPEMD, 96-bit and 64-bit MACs, e.g. `MACs -hmac-md5*,hmac-sha1-96*,umac-64*,hmac-ripemd160*`.",
		refs:        []*nodewardv1.Reference{refCIS("Ensure sshd MACs are configured")},
		judge:       weakJudge("macs", weakMACs),
	},
	{
		id: "ssh.weak-kex", title: "sshd offers no weak key exchange", keywords: []string{"kexalgorithms"},
		remediation: "Remove SHA-1 key exchange, e.g. `KexAlgorithms -diffie-hellman-group1-sha1,diffie-hellman-group14-sha1,diffie-hellman-group-exchange-sha1`.",
		refs:        []*nodewardv1.Reference{refCIS("Ensure sshd KexAlgorithms is configured")},
		judge:       weakJudge("kexalgorithms", weakKex),
	},
	{
		id: "ssh.listen-non-loopback", title: "sshd listens on loopback only", keywords: []string{"listenaddress", "port"},
		remediation: "If SSH must stay, bind it to an admin network with `ListenAddress`; on EKS worker nodes prefer removing SSH and using SSM Session Manager.",
		refs:        []*nodewardv1.Reference{sshdCfgEKSRef},
		judge: func(cfg *sshdconfig.Config) (nodewardv1.Severity, nodewardv1.FindingStatus, string) {
			var exposed []string
			for _, la := range cfg.Get("listenaddress").Values {
				ap, err := netip.ParseAddrPort(la)
				if err != nil || !ap.Addr().IsLoopback() {
					exposed = append(exposed, la)
				}
			}
			// A socket-activated sshd (ssh.socket) listens where the socket
			// unit says; the unit-state check reports that case.
			if len(exposed) == 0 {
				return sevMedium, statPass, "every ListenAddress is loopback (a socket-activated sshd listens per ssh.socket instead)"
			}
			return sevMedium, statFail, "listens beyond loopback on " + strings.Join(exposed, " ") + " (a socket-activated sshd listens per ssh.socket instead)"
		},
	},
}

// runSSHDConfig judges the effective sshd configuration: what a
// connection that matches no Match block gets (sshd -T), plus every Match
// block that loosens a setting for the connections it matches.
func runSSHDConfig(_ context.Context, env *source.Env, _ *nodewardv1.Snapshot) []*nodewardv1.Finding {
	cfg, status, reason := sshdCfgEvaluate(env)
	var out []*nodewardv1.Finding
	for _, c := range sshdCfgChecks {
		f := &nodewardv1.Finding{CheckId: c.id, Title: c.title, Remediation: c.remediation, References: c.refs, Severity: sevMedium}
		if cfg == nil {
			f.Status = status
			f.Evidence = []*nodewardv1.Evidence{evd(sshdconfig.MainConfig, "", reason)}
			out = append(out, f)
			continue
		}
		sev, st, why := c.judge(cfg)
		f.Severity, f.Status = sev, st
		for _, k := range c.keywords {
			f.Evidence = append(f.Evidence, sshdCfgEvidence(cfg, k, why))
		}
		if len(cfg.Unrecognised) > 0 {
			f.Evidence = append(f.Evidence, evd(sshdconfig.MainConfig, strings.Join(cfg.Unrecognised, "; "),
				"skipped: keywords of "+cfg.Profile.Name()+" that nodeward does not model (vendor additions); they cannot change the keywords judged here unless they are aliases"))
		}
		out = append(out, f)
	}
	return append(out, sshdMatchLoosens(cfg, status, reason))
}

// sshdCfgEvaluate finds the build and computes the effective config; on
// failure it says which status the findings take and why.
func sshdCfgEvaluate(env *source.Env) (*sshdconfig.Config, nodewardv1.FindingStatus, string) {
	prof, perr := sshdconfig.DetectProfile(env.Root)
	if _, err := env.Root.Stat(sshdconfig.MainConfig); errors.Is(err, fs.ErrNotExist) {
		if perr != nil {
			return nil, statNA, "openssh-server is not installed and there is no " + sshdconfig.MainConfig
		}
		return nil, statError, prof.Name() + " is installed but " + sshdconfig.MainConfig + " is missing: sshd would not start"
	}
	if perr != nil {
		return nil, statUnknown, "cannot tell sshd's defaults: " + perr.Error()
	}
	// The connection sshd -T assumes without -C: it matches no Match block
	// but "Match All". Unlike sshd -T, a Match LocalPort block is not an
	// error here: it simply does not match.
	cfg, err := sshdconfig.Evaluate(env.Root, prof, &sshdconfig.ConnInfo{LPort: sshdconfig.NoLocalPort})
	var ce *sshdconfig.ConfigError
	switch {
	case errors.As(err, &ce):
		return nil, statError, "sshd would refuse this configuration: " + err.Error()
	case err != nil:
		return nil, statError, "reading the sshd configuration: " + err.Error()
	}
	return cfg, statPass, ""
}

func sshdCfgEvidence(cfg *sshdconfig.Config, keyword, why string) *nodewardv1.Evidence {
	s := cfg.Get(keyword)
	var where string
	switch {
	case s == nil:
		where = "unset"
	case s.Src.Default:
		where = "default of " + cfg.Profile.Name()
		if !cfg.Profile.Verified {
			where += " (upstream's default, not checked against this build)"
		}
	default:
		var from []string
		for _, src := range s.From {
			from = append(from, src.String())
		}
		if len(from) == 0 {
			from = []string{s.Src.String()}
		}
		where = "set at " + strings.Join(from, ", ")
	}
	val := ""
	if s != nil {
		val = keyword + " " + strings.Join(s.Values, " ")
	}
	return evd(sshdconfig.MainConfig+" (effective, as sshd -T)", val,
		fmt.Sprintf("%s; %s; first value wins, Includes and Match blocks evaluated as sshd does", why, where))
}

// looser says whether value v is more permissive than base for a keyword.
func looser(keyword, v, base string) bool {
	rank := func(order []string, x string) int {
		for i, o := range order {
			if o == x {
				return i
			}
		}
		return -1
	}
	switch keyword {
	case "permitrootlogin":
		o := []string{"no", "forced-commands-only", "without-password", "yes"}
		return rank(o, v) > rank(o, base)
	case "allowtcpforwarding":
		o := map[string]int{"no": 0, "local": 1, "remote": 1, "yes": 2}
		return o[v] > o[base] || (o[v] == 1 && o[base] == 1 && v != base)
	case "permittunnel":
		return base == "no" && v != "no" || base != "yes" && v == "yes"
	case "passwordauthentication", "kbdinteractiveauthentication", "permitemptypasswords", "x11forwarding", "allowagentforwarding":
		return base == "no" && v == "yes"
	case "disableforwarding", "pubkeyauthentication":
		return false // turning these off is not a loosening
	case "maxauthtries", "logingracetime", "clientaliveinterval":
		a, err1 := strconv.Atoi(v)
		b, err2 := strconv.Atoi(base)
		return keyword == "maxauthtries" && err1 == nil && err2 == nil && a > b
	}
	return false
}

// sshdMatchLoosens names every Match block that makes a setting more
// permissive than the main section for the connections it matches.
func sshdMatchLoosens(cfg *sshdconfig.Config, status nodewardv1.FindingStatus, reason string) *nodewardv1.Finding {
	f := &nodewardv1.Finding{
		CheckId:     "ssh.match-loosens",
		Title:       "No sshd Match block loosens a setting",
		Severity:    sevMedium,
		Remediation: "Remove the loosening lines from the named Match blocks, or narrow the blocks' criteria; a Match block overrides the main section for every connection it matches.",
		References:  []*nodewardv1.Reference{sshdCfgEKSRef},
	}
	if cfg == nil {
		f.Status = status
		f.Evidence = []*nodewardv1.Evidence{evd(sshdconfig.MainConfig, "", reason)}
		return f
	}
	var blocks []string
	sev := sevMedium
	for _, b := range cfg.MatchBlocks {
		loosened := false
		for _, s := range b.Sets {
			base := cfg.Value(s.Keyword)
			if !looser(s.Keyword, s.Value, base) {
				continue
			}
			loosened = true
			switch s.Keyword {
			case "permitrootlogin", "passwordauthentication", "kbdinteractiveauthentication", "permitemptypasswords":
				sev = sevHigh
			}
			f.Evidence = append(f.Evidence, evd(fmt.Sprintf("%s:%d", b.File, s.Line), s.Keyword+" "+s.Value,
				fmt.Sprintf("inside %s; the main section's effective value is %q", b.Name(), base)))
		}
		if loosened {
			blocks = append(blocks, b.Name())
		}
	}
	if len(blocks) == 0 {
		f.Status = statPass
		f.Evidence = []*nodewardv1.Evidence{evd(sshdconfig.MainConfig, fmt.Sprintf("%d Match blocks", len(cfg.MatchBlocks)), "no Match block sets a modelled keyword to a looser value than the main section")}
		return f
	}
	f.Status, f.Severity = statFail, sev
	f.Title = "sshd Match block loosens settings: " + strings.Join(blocks, "; ")
	return f
}
