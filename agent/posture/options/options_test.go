package options

import "testing"

func TestParsePort(t *testing.T) {
	good := map[string]Port{
		"tcp/22":               {"tcp", 22, ""},
		"UDP/53/node-cache":    {"udp", 53, "node-cache"},
		"tcp/*/nodeward-agent": {"tcp", 0, "nodeward-agent"},
		"tcp/65535/x":          {"tcp", 65535, "x"},
	}
	for in, want := range good {
		if got, err := ParsePort(in); err != nil || got != want {
			t.Errorf("ParsePort(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "tcp", "sctp/1", "tcp/0", "tcp/65536", "tcp/*", "tcp/22/", "tcp/a/b", "tcp/1/2/3"} {
		if p, err := ParsePort(bad); err == nil {
			t.Errorf("ParsePort(%q) = %+v, want an error", bad, p)
		}
	}
	if err := Default().Validate(); err != nil {
		t.Error(err)
	}
	if err := (Posture{PatchWarnDays: 90, PatchFailDays: 30}).Validate(); err == nil {
		t.Error("warn > fail accepted")
	}
}

func FuzzParsePort(f *testing.F) {
	f.Add("tcp/22/sshd")
	f.Add("udp/*/x")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePort(s)
		if err != nil {
			return
		}
		if (p.Protocol != "tcp" && p.Protocol != "udp") || p.Number > 65535 || (p.Number == 0 && p.Process == "") {
			t.Fatalf("ParsePort(%q) accepted %+v", s, p)
		}
	})
}
