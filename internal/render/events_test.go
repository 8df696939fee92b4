package render

import "testing"

func TestQuoteArgs(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"ls", "-l", "/tmp"}, "ls -l /tmp"},
		{[]string{"sh", "-c", "id; uname -a"}, `sh -c "id; uname -a"`},
		{[]string{"sh", "-c", "a\nb"}, `sh -c "a\nb"`},
		{[]string{"echo", ""}, `echo ""`},
		{[]string{"echo", `say "hi"`}, `echo "say \"hi\""`},
	}
	for _, tc := range tests {
		if got := quoteArgs(tc.args); got != tc.want {
			t.Errorf("quoteArgs(%q) = %s, want %s", tc.args, got, tc.want)
		}
	}
}
