package render

import (
	"strings"
	"testing"
)

func TestDecode(t *testing.T) {
	scheme, err := Scheme()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		in      string
		kinds   []string
		wantErr string
	}{
		{name: "empty", in: ""},
		{name: "comments and separators only", in: "# a template whose condition is off\n---\n---\n# another\n"},
		{name: "two documents", in: "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a}\n---\n# c\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n", kinds: []string{"ServiceAccount", "ConfigMap"}},
		{name: "custom resource", in: "apiVersion: monitoring.coreos.com/v1\nkind: PodMonitor\nmetadata: {name: a}\nspec: {selector: {}}\n", kinds: []string{"PodMonitor"}},
		{name: "unknown field", in: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndatta: {}\n", wantErr: `unknown field "datta"`},
		{name: "wrong case", in: "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {hostPid: true}\n", wantErr: `unknown field "spec.hostPid"`},
		{name: "duplicate field", in: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\nmetadata: {name: b}\n", wantErr: "strict decoding error"},
		{name: "unknown kind", in: "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: a}\n", wantErr: "no kind"},
		{name: "error names the document", in: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\nx: 1\n", wantErr: "document 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, err := Decode(strings.NewReader(tt.in), scheme)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var kinds []string
			for _, o := range objs {
				kinds = append(kinds, o.GVK.Kind)
			}
			if strings.Join(kinds, ",") != strings.Join(tt.kinds, ",") {
				t.Errorf("kinds = %v, want %v", kinds, tt.kinds)
			}
		})
	}
}

// FuzzDecode: arbitrary input never panics, and what decodes is the
// objects of its non-empty documents, each with a kind.
func FuzzDecode(f *testing.F) {
	scheme, err := Scheme()
	if err != nil {
		f.Fatal(err)
	}
	f.Add("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {k: v}\n")
	f.Add("---\n# only a comment\n---\napiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: a}\n")
	f.Add("apiVersion: v1\nkind: Pod\nspec: {containers: [{name: a, image: b, args: [--x=1]}]}\n")
	f.Add("{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{\"name\":\"n\"}}")
	f.Fuzz(func(t *testing.T, in string) {
		objs, err := Decode(strings.NewReader(in), scheme)
		if err != nil {
			return
		}
		if len(objs) > strings.Count(in, "---")+1 {
			t.Fatalf("%d objects from %d documents", len(objs), strings.Count(in, "---")+1)
		}
		for _, o := range objs {
			if o.GVK.Kind == "" || o.Obj == nil {
				t.Fatalf("object without a kind: %+v", o)
			}
		}
	})
}
