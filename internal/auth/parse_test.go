package auth

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/nodeward/nodeward/internal/auth/authtest"
)

func b64json(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func TestParseReaderTokens(t *testing.T) {
	const tokA, tokB = "0123456789abcdef0123", "fedcba9876543210fedc"
	for _, tc := range []struct {
		name    string
		in      string
		want    map[string]Identity
		wantErr string
	}{
		{"two readers", "# comment\n\n" + tokA + ",alice,reader\n " + tokB + " , bob , admin \n", map[string]Identity{
			tokA: {Kind: KindReader, Name: "alice", Role: RoleReader, Via: "token"},
			tokB: {Kind: KindReader, Name: "bob", Role: RoleAdmin, Via: "token"},
		}, ""},
		{"empty", "", map[string]Identity{}, ""},
		{"unknown role", tokA + ",alice,root\n", nil, "line 1: unknown role"},
		{"short token", "abc,alice,reader\n", nil, "line 1: token shorter"},
		{"two fields", tokA + ",alice\n", nil, "want token,name,role"},
		{"bad name", tokA + ",Alice Smith,reader\n", nil, "line 1: reader name"},
		{"same token twice", tokA + ",alice,reader\n" + tokA + ",bob,reader\n", nil, "line 2: token already given"},
		{"same name twice", tokA + ",alice,reader\n" + tokB + ",alice,admin\n", nil, "already named on line 1"},
		{"control character", "0123456789abc\x01def,alice,reader\n", nil, "cannot carry"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseReaderTokens(strings.NewReader(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				for _, tok := range []string{tokA, tokB, "abc"} {
					if strings.Contains(err.Error(), tok) {
						t.Errorf("error carries a token: %v", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Len() != len(tc.want) {
				t.Errorf("%d readers, want %d", got.Len(), len(tc.want))
			}
			for tok, want := range tc.want {
				if id, ok := got.Lookup(tok); !ok || id != want {
					t.Errorf("Lookup = %+v %v, want %+v", id, ok, want)
				}
			}
			if _, ok := got.Lookup(tokA + "x"); ok {
				t.Error("a longer token matched")
			}
		})
	}
}

func FuzzParseReaderTokens(f *testing.F) {
	f.Add("0123456789abcdef0123,alice,reader\n# c\nfedcba9876543210fedc,bob,admin\n")
	f.Add(",,\n\n#\n")
	f.Fuzz(func(t *testing.T, in string) {
		rt, err := ParseReaderTokens(strings.NewReader(in))
		if err != nil {
			return
		}
		for _, line := range strings.Split(in, "\n") {
			fields := strings.Split(strings.TrimSpace(line), ",")
			if len(fields) != 3 || strings.HasPrefix(strings.TrimSpace(line), "#") {
				continue
			}
			id, ok := rt.Lookup(strings.TrimSpace(fields[0]))
			if !ok || id.Kind != KindReader || ValidName(id.Name) != nil {
				t.Fatalf("line %q parsed but its token looks up as %+v %v", line, id, ok)
			}
		}
	})
}

func TestParseJWKS(t *testing.T) {
	pub := authtest.JWKS(t, authtest.NewRSASigner(t, "a"), authtest.NewECSigner(t, "b"))
	set, err := ParseJWKS(bytes.NewReader(pub))
	if err != nil || len(set.Keys) != 2 {
		t.Fatalf("%v, %v", set, err)
	}
	for _, tc := range []struct{ name, in, want string }{
		{"not json", "<html>", "decode JWKS"},
		{"no keys", `{"keys":[]}`, "no signing key"},
		{"only encryption keys", strings.ReplaceAll(string(pub), `"use":"sig"`, `"use":"enc"`), "no signing key"},
		{"private key", `{"keys":[{"kty":"EC","crv":"P-256","kid":"p","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM","d":"870MB6gfuTJ4HtUnUvYMyJpr5eUZNP4Bk43bVdj3eAE"}]}`, "private key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseJWKS(strings.NewReader(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func FuzzParseJWKS(f *testing.F) {
	f.Add(`{"keys":[{"kty":"EC","crv":"P-256","kid":"p","use":"sig","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}]}`)
	f.Add(`{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}`)
	f.Fuzz(func(t *testing.T, in string) {
		set, err := ParseJWKS(strings.NewReader(in))
		if err != nil {
			return
		}
		for _, k := range set.Keys {
			if !k.IsPublic() || !k.Valid() {
				t.Fatalf("kept key %q that is not a valid public key", k.KeyID)
			}
		}
	})
}

func TestCertIdentity(t *testing.T) {
	ca := authtest.NewCA(t, "nodeward test CA")
	for _, tc := range []struct {
		name string
		uris []string
		want Identity
	}{
		{"agent", []string{"nodeward://node/ip-10-0-1-17.ec2.internal"}, Identity{Kind: KindAgent, Node: "ip-10-0-1-17.ec2.internal", Name: "nodeward://node/ip-10-0-1-17.ec2.internal", Via: "certificate"}},
		{"reader", []string{"spiffe://cluster/ns/x", "nodeward://reader/alice"}, Identity{Kind: KindReader, Name: "alice", Role: RoleReader, Via: "certificate"}},
		{"admin", []string{"nodeward://admin/bob"}, Identity{Kind: KindReader, Name: "bob", Role: RoleAdmin, Via: "certificate"}},
		{"none", []string{"spiffe://cluster/ns/x"}, Identity{}},
		{"two", []string{"nodeward://node/a", "nodeward://node/b"}, Identity{}},
		{"unknown kind", []string{"nodeward://root/a"}, Identity{}},
		{"nested path", []string{"nodeward://node/a/b"}, Identity{}},
		{"query", []string{"nodeward://node/a?role=admin"}, Identity{}},
		{"upper case", []string{"nodeward://node/Node-A"}, Identity{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kp := ca.Issue(t, authtest.Leaf{CommonName: tc.name, URIs: tc.uris, DNSNames: []string{"node.example"}, Client: true})
			cert := parseLeaf(t, kp.CertPEM)
			id, err := CertIdentity(cert)
			if tc.want.Kind == "" {
				var r *Refusal
				if !errors.As(err, &r) || r.Reason != ReasonCertNoIdentity {
					t.Fatalf("got %+v, %v; want refusal", id, err)
				}
				return
			}
			if err != nil || id != tc.want {
				t.Fatalf("got %+v, %v; want %+v", id, err, tc.want)
			}
		})
	}
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:7420": true, "[::1]:7420": true, "localhost:7420": true, "127.3.4.5:1": true,
		":7420": false, "0.0.0.0:7420": false, "10.0.0.1:7420": false, "[::]:7420": false, "collector:7420": false, "junk": false,
	} {
		if got := IsLoopback(addr); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
}
