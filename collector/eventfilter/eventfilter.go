// Package eventfilter matches events against the allow and deny filters of
// QueryEvents and TailEvents, applies field masks, and extracts the columns
// stores index events by. It is pure: no I/O, no state.
package eventfilter

import (
	"fmt"
	"regexp"
	"strings"

	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
)

// Kind is the kind of an event's body.
func Kind(ev *nodewardv1.Event) nodewardv1.EventKind {
	switch ev.GetBody().(type) {
	case *nodewardv1.Event_Exec:
		return nodewardv1.EventKind_EVENT_KIND_EXEC
	case *nodewardv1.Event_Exit:
		return nodewardv1.EventKind_EVENT_KIND_EXIT
	case *nodewardv1.Event_Ssh:
		return nodewardv1.EventKind_EVENT_KIND_SSH
	case *nodewardv1.Event_Loss:
		return nodewardv1.EventKind_EVENT_KIND_LOSS
	case *nodewardv1.Event_Gap:
		return nodewardv1.EventKind_EVENT_KIND_GAP
	}
	return nodewardv1.EventKind_EVENT_KIND_UNSPECIFIED
}

// KindName is the short lower-case name of a kind: "exec", "ssh"...
func KindName(k nodewardv1.EventKind) string {
	if name, ok := kindNames[k]; ok {
		return name // stores name every event they write
	}
	return k.String() // a value this build does not know: its number
}

var kindNames = func() map[nodewardv1.EventKind]string {
	m := map[nodewardv1.EventKind]string{}
	for v, name := range nodewardv1.EventKind_name {
		m[nodewardv1.EventKind(v)] = strings.ToLower(strings.TrimPrefix(name, "EVENT_KIND_"))
	}
	return m
}()

// ParseKind is the inverse of KindName.
func ParseKind(s string) (nodewardv1.EventKind, error) {
	v, ok := nodewardv1.EventKind_value["EVENT_KIND_"+strings.ToUpper(s)]
	if !ok || v == 0 {
		return 0, fmt.Errorf("unknown event kind %q: want exec, exit, ssh, loss or gap", s)
	}
	return nodewardv1.EventKind(v), nil
}

// Process is the process an event is about, nil for SSH, loss and gap events.
func Process(ev *nodewardv1.Event) *nodewardv1.Process {
	switch b := ev.GetBody().(type) {
	case *nodewardv1.Event_Exec:
		return b.Exec.GetProcess()
	case *nodewardv1.Event_Exit:
		return b.Exit.GetProcess()
	}
	return nil
}

// Columns are the fields stores keep beside an event's body to search it.
type Columns struct {
	Kind      nodewardv1.EventKind
	TimeNS    int64 // the event's time in Unix nanoseconds (0 when unset)
	Binary    string
	User      string
	UID       int64 // -1 when the event has none
	Pod       string
	Namespace string
	Container string
	Session   string
}

// Extract returns ev's searchable columns.
func Extract(ev *nodewardv1.Event) Columns {
	c := Columns{Kind: Kind(ev), TimeNS: ev.GetTime().AsTime().UnixNano(), UID: -1}
	if p := Process(ev); p != nil {
		c.Binary = p.GetFilename()
		if c.Binary == "" {
			c.Binary = p.GetComm()
		}
		c.UID = int64(p.GetUid())
		c.Pod = p.GetPod().GetName()
		c.Namespace = p.GetPod().GetNamespace()
		c.Container = p.GetContainerId()
		c.Session = p.GetSession().GetId()
		c.User = p.GetSession().GetUser()
	}
	if s := ev.GetSsh(); s != nil {
		c.User = s.GetUser()
		if s.Uid != nil {
			c.UID = int64(s.GetUid())
		}
		c.Session = s.GetSessionId()
	}
	return c
}

// Filter is a compiled nodewardv1.EventFilter.
type Filter struct {
	src                     *nodewardv1.EventFilter
	nodes, users, pods      map[string]bool
	namespaces, containers  map[string]bool
	sessions                map[string]bool
	kinds                   map[nodewardv1.EventKind]bool
	uids                    map[uint32]bool
	binary, args, ancestors *regexp.Regexp
}

func set(vals []string) map[string]bool {
	if len(vals) == 0 {
		return nil
	}
	m := make(map[string]bool, len(vals))
	for _, v := range vals {
		m[v] = true
	}
	return m
}

func compileRE(field, expr string) (*regexp.Regexp, error) {
	if expr == "" {
		return nil, nil
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	return re, nil
}

// Compile checks f and prepares it for matching.
func Compile(f *nodewardv1.EventFilter) (*Filter, error) {
	c := &Filter{
		src:        f,
		nodes:      set(f.GetNodeNames()),
		users:      set(f.GetUsers()),
		pods:       set(f.GetPodNames()),
		namespaces: set(f.GetNamespaces()),
		containers: set(f.GetContainerIds()),
		sessions:   set(f.GetSshSessionIds()),
	}
	if len(f.GetKinds()) > 0 {
		c.kinds = map[nodewardv1.EventKind]bool{}
		for _, k := range f.GetKinds() {
			c.kinds[k] = true
		}
	}
	if len(f.GetUids()) > 0 {
		c.uids = map[uint32]bool{}
		for _, u := range f.GetUids() {
			c.uids[u] = true
		}
	}
	var err error
	if c.binary, err = compileRE("binary_regex", f.GetBinaryRegex()); err != nil {
		return nil, err
	}
	if c.args, err = compileRE("args_regex", f.GetArgsRegex()); err != nil {
		return nil, err
	}
	if c.ancestors, err = compileRE("ancestor_binary_regex", f.GetAncestorBinaryRegex()); err != nil {
		return nil, err
	}
	return c, nil
}

// Source is the filter as given.
func (f *Filter) Source() *nodewardv1.EventFilter { return f.src }

// ExactBinary is the binary the filter's regex can only match exactly, when
// it is a plain anchored literal like ^/usr/bin/curl$; stores use it as an
// index key.
func (f *Filter) ExactBinary() (string, bool) {
	if f.binary == nil {
		return "", false
	}
	expr := f.binary.String()
	if !strings.HasPrefix(expr, "^") || !strings.HasSuffix(expr, "$") {
		return "", false
	}
	re, err := regexp.Compile(expr[1 : len(expr)-1])
	if err != nil {
		return "", false
	}
	lit, complete := re.LiteralPrefix()
	if !complete {
		return "", false
	}
	return lit, true
}

func in(m map[string]bool, v string) bool { return m == nil || m[v] }

// Match reports whether ev passes every condition of the filter.
func (f *Filter) Match(ev *nodewardv1.Event) bool {
	if !in(f.nodes, ev.GetNodeName()) {
		return false
	}
	if f.kinds != nil && !f.kinds[Kind(ev)] {
		return false
	}
	if f.nodes == nil && f.kinds == nil && f.binary == nil && f.args == nil && f.ancestors == nil &&
		f.users == nil && f.uids == nil && f.pods == nil && f.namespaces == nil && f.containers == nil && f.sessions == nil {
		return true
	}
	c := Extract(ev)
	if !in(f.users, c.User) || !in(f.pods, c.Pod) || !in(f.namespaces, c.Namespace) ||
		!in(f.containers, c.Container) || !in(f.sessions, c.Session) {
		return false
	}
	if f.uids != nil && (c.UID < 0 || !f.uids[uint32(c.UID)]) {
		return false
	}
	p := Process(ev)
	if f.binary != nil && (c.Binary == "" || !f.binary.MatchString(c.Binary)) {
		return false
	}
	if f.args != nil && (p == nil || !f.args.MatchString(strings.Join(p.GetArgs(), " "))) {
		return false
	}
	if f.ancestors != nil && !f.matchAncestor(ev) {
		return false
	}
	return true
}

func (f *Filter) matchAncestor(ev *nodewardv1.Event) bool {
	ex := ev.GetExec()
	if ex == nil {
		return false
	}
	for _, a := range append([]*nodewardv1.Process{ex.GetParent()}, ex.GetAncestors()...) {
		if a != nil && a.GetFilename() != "" && f.ancestors.MatchString(a.GetFilename()) {
			return true
		}
	}
	return false
}

// Set is allow and deny lists: an event passes when it matches any allow
// filter (or there is none) and no deny filter.
type Set struct {
	Allow, Deny []*Filter
}

// CompileSet compiles allow and deny lists.
func CompileSet(allow, deny []*nodewardv1.EventFilter) (*Set, error) {
	s := &Set{}
	for i, f := range allow {
		c, err := Compile(f)
		if err != nil {
			return nil, fmt.Errorf("allow[%d]: %w", i, err)
		}
		s.Allow = append(s.Allow, c)
	}
	for i, f := range deny {
		c, err := Compile(f)
		if err != nil {
			return nil, fmt.Errorf("deny[%d]: %w", i, err)
		}
		s.Deny = append(s.Deny, c)
	}
	return s, nil
}

// Match applies the allow and deny lists to ev.
func (s *Set) Match(ev *nodewardv1.Event) bool {
	ok := len(s.Allow) == 0
	for _, f := range s.Allow {
		if f.Match(ev) {
			ok = true
			break
		}
	}
	if !ok {
		return false
	}
	for _, f := range s.Deny {
		if f.Match(ev) {
			return false
		}
	}
	return true
}

// ContainsText reports whether text occurs in the event's filename,
// arguments, user or remote address.
func ContainsText(ev *nodewardv1.Event, text string) bool {
	if text == "" {
		return true
	}
	if p := Process(ev); p != nil {
		if strings.Contains(p.GetFilename(), text) || strings.Contains(p.GetComm(), text) ||
			strings.Contains(strings.Join(p.GetArgs(), " "), text) || strings.Contains(p.GetSession().GetUser(), text) {
			return true
		}
	}
	if s := ev.GetSsh(); s != nil {
		if strings.Contains(s.GetUser(), text) || strings.Contains(s.GetRemoteAddress(), text) || strings.Contains(s.GetDetail(), text) {
			return true
		}
	}
	return false
}
