package sshdconfig

import (
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
)

var (
	flagValues      = map[string]string{"yes": "yes", "no": "no"}
	rootLoginValues = map[string]string{
		"without-password": "without-password", "prohibit-password": "without-password",
		"forced-commands-only": "forced-commands-only", "yes": "yes", "no": "no",
	}
	tcpFwdValues  = map[string]string{"yes": "yes", "all": "yes", "no": "no", "remote": "remote", "local": "local"}
	familyValues  = map[string]string{"inet": "inet", "inet6": "inet6", "any": "any"}
	logLevelNames = map[string]string{
		"SILENT": "SILENT", "QUIET": "SILENT", "FATAL": "FATAL", "ERROR": "ERROR", "INFO": "INFO", "VERBOSE": "VERBOSE",
		"DEBUG": "DEBUG", "DEBUG1": "DEBUG", "DEBUG2": "DEBUG2", "DEBUG3": "DEBUG3",
	}
	tunnelValues = []string{"no", "point-to-point", "ethernet", "yes"}
)

// kinds of the modelled single-valued options.
var multistate = map[string]map[string]string{
	"usepam": flagValues, "pubkeyauthentication": flagValues, "passwordauthentication": flagValues,
	"kbdinteractiveauthentication": flagValues, "x11forwarding": flagValues, "permitemptypasswords": flagValues,
	"allowagentforwarding": flagValues, "disableforwarding": flagValues,
	"permitrootlogin": rootLoginValues, "allowtcpforwarding": tcpFwdValues, "addressfamily": familyValues,
}

// setOnce is sshd's "first value wins" (if (*activep && *intptr == -1)).
func (o *opts) setOnce(key, val string, src Source, active bool) {
	if !active {
		return
	}
	if _, ok := o.single[key]; !ok {
		o.single[key] = &Setting{Values: []string{val}, Src: src}
	}
}

func (e *evaluator) noteBlock(src Source, key, val string, active bool) {
	if !active || src.Match == "" || e.pass != 1 {
		return
	}
	// Recorded in pass 1, where every block is walked once.
	if i, ok := e.blockByName[src.Match]; ok {
		e.blocks[i].Sets = append(e.blocks[i].Sets, BlockSetting{Keyword: key, Value: val, Line: src.Line})
	}
}

// apply handles one modelled directive; other known keywords are accepted
// as sshd accepts them.
func (e *evaluator) apply(o *opts, key, kw, str string, args []string, src Source, active bool) error {
	file, ln := src.File, src.Line
	one := func() (string, error) {
		if len(args) == 0 || args[0] == "" {
			return "", cfgErr(file, ln, "%s missing argument.", kw)
		}
		if len(args) > 1 {
			return "", cfgErr(file, ln, "keyword %s extra arguments at end of line", kw)
		}
		return args[0], nil
	}
	// Blocks are walked in pass 1 too, inactive: remember what each sets.
	record := func(val string) { e.noteBlock(src, key, val, src.Match != "") }
	if vals, ok := multistate[key]; ok {
		a, err := one()
		if err != nil {
			return err
		}
		v, ok := vals[strings.ToLower(a)]
		if !ok {
			return cfgErr(file, ln, "unsupported option %q.", a)
		}
		record(v)
		o.setOnce(key, v, src, active)
		return nil
	}
	switch key {
	case "port":
		a, err := one()
		if err != nil {
			return err
		}
		if len(o.ports) >= maxPorts {
			return cfgErr(file, ln, "too many ports.")
		}
		p := a2port(a, e.sys.services)
		if p <= 0 {
			return cfgErr(file, ln, "Badly formatted port number.")
		}
		o.ports = append(o.ports, p)
		o.portSrc = append(o.portSrc, src)
	case "listenaddress":
		return e.listenAddress(o, args, src)
	case "logingracetime", "clientaliveinterval":
		if len(args) == 0 || args[0] == "" {
			return cfgErr(file, ln, "missing time value.")
		}
		v := convtime(args[0])
		if v < 0 {
			return cfgErr(file, ln, "invalid time value.")
		}
		if len(args) > 1 {
			return cfgErr(file, ln, "keyword %s extra arguments at end of line", kw)
		}
		record(strconv.Itoa(v))
		o.setOnce(key, strconv.Itoa(v), src, active)
	case "maxauthtries":
		var a string
		if len(args) > 0 {
			a = args[0]
		}
		v, errstr := atoiErr(a)
		if errstr != "" {
			return cfgErr(file, ln, "%s integer value %s.", kw, errstr)
		}
		if len(args) > 1 {
			return cfgErr(file, ln, "keyword %s extra arguments at end of line", kw)
		}
		record(strconv.Itoa(v))
		o.setOnce(key, strconv.Itoa(v), src, active)
	case "loglevel":
		var a string
		if len(args) > 0 {
			a = args[0]
		}
		v, ok := logLevelNames[strings.ToUpper(a)]
		if !ok {
			return cfgErr(file, ln, "unsupported log level '%s'", a)
		}
		if len(args) > 1 {
			return cfgErr(file, ln, "keyword %s extra arguments at end of line", kw)
		}
		record(v)
		o.setOnce(key, v, src, active)
	case "permittunnel":
		a, err := one()
		if err != nil {
			return err
		}
		found := false
		for _, t := range tunnelValues {
			if t == a {
				found = true
			}
		}
		if !found {
			return cfgErr(file, ln, "bad %s argument %s", kw, a)
		}
		record(a)
		o.setOnce(key, a, src, active)
	case "ciphers", "macs", "kexalgorithms":
		a, err := one()
		if err != nil {
			return err
		}
		all := map[string]string{"ciphers": e.prof.allCiphers, "macs": e.prof.allMACs, "kexalgorithms": e.prof.allKex}[key]
		if a[0] != '-' {
			names := strings.TrimLeft(a[:1], "+^") + a[1:]
			for _, n := range strings.Split(names, ",") {
				if !inList(all, n) {
					return cfgErr(file, ln, "Bad SSH2 %s spec '%s'.", kw, a)
				}
			}
		}
		// sshd sets these whether or not the block is active: they are
		// main-section only, so an inactive block has already failed.
		if _, ok := o.single[key]; !ok {
			o.single[key] = &Setting{Values: []string{a}, Src: src}
		}
	case "authorizedkeyscommand":
		v := strings.TrimLeft(str, whitespace)
		if !strings.HasPrefix(v, "/") && !strings.EqualFold(v, "none") {
			return cfgErr(file, ln, "%s must be an absolute path", kw)
		}
		record(v)
		// sshd tests authorized_keys_command here for both commands.
		o.setOnce(key, v, src, active)
	case "authorizedkeyscommanduser":
		a, err := one()
		if err != nil {
			return err
		}
		record(a)
		o.setOnce(key, a, src, active)
	case "authorizedkeysfile":
		_, set := o.lists[key]
		var vals []string
		for _, a := range args {
			if a == "" {
				return cfgErr(file, ln, "keyword %s empty argument", kw)
			}
			x, err := e.sys.tildeExpand(a)
			if err != nil {
				return cfgErr(file, ln, "%v", err)
			}
			vals = append(vals, x)
		}
		record(strings.Join(vals, " "))
		if active && !set && len(vals) > 0 {
			o.lists[key] = &Setting{Values: vals, Src: src, From: []Source{src}}
		}
	case "allowusers", "denyusers", "allowgroups", "denygroups":
		for _, a := range args {
			if a == "" {
				return cfgErr(file, ln, "empty %s pattern", kw)
			}
		}
		record(strings.Join(args, " "))
		if !active || len(args) == 0 {
			return nil
		}
		s := o.lists[key]
		if s == nil {
			s = &Setting{Src: src}
			o.lists[key] = s
		}
		s.Values = append(s.Values, args...)
		s.From = append(s.From, src)
	}
	return nil
}

func inList(list, name string) bool {
	for _, n := range strings.Split(list, ",") {
		if n == name {
			return true
		}
	}
	return false
}

func (e *evaluator) listenAddress(o *opts, args []string, src Source) error {
	file, ln := src.File, src.Line
	if len(args) == 0 || args[0] == "" {
		return cfgErr(file, ln, "missing address")
	}
	arg := args[0]
	host, port := arg, 0
	if !strings.Contains(arg, "[") && strings.Count(arg, ":") >= 2 {
		// A bare IPv6 address.
	} else {
		h, p, err := hpdelim(arg)
		if err != nil {
			return cfgErr(file, ln, "bad address:port usage")
		}
		host = h
		if p != "" {
			if port = a2port(p, e.sys.services); port <= 0 {
				return cfgErr(file, ln, "bad port number")
			}
		}
	}
	if len(args) > 1 {
		return cfgErr(file, ln, "bad ListenAddress syntax")
	}
	o.listen = append(o.listen, queuedListen{addr: host, port: port, src: src})
	return nil
}

// hpdelim splits "host:port", "[v6]:port", "host" like sshd's hpdelim and
// cleanhostname.
func hpdelim(s string) (host, port string, err error) {
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", "", fmt.Errorf("bad address %q", s)
		}
		host, rest := s[1:end], s[end+1:]
		switch {
		case rest == "":
			return host, "", nil
		case rest[0] == ':' || rest[0] == '/':
			return host, rest[1:], nil
		}
		return "", "", fmt.Errorf("bad address %q", s)
	}
	if i := strings.IndexAny(s, ":/"); i >= 0 {
		return s[:i], s[i+1:], nil
	}
	return s, "", nil
}

// convtime is sshd's convtime: "90", "1h30m", "2w"; each number is read
// with strtol, so blanks and a sign before it are accepted.
func convtime(s string) int {
	if s == "" {
		return -1
	}
	total := int64(0)
	for s != "" {
		i := 0
		for i < len(s) && strings.IndexByte(" \t\n\v\f\r", s[i]) >= 0 {
			i++
		}
		neg := false
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			neg = s[i] == '-'
			i++
		}
		start := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == start {
			return -1
		}
		secs, err := strconv.ParseInt(s[start:i], 10, 64)
		if err != nil || (neg && secs != 0) {
			return -1
		}
		mult := int64(1)
		s = s[i:]
		if s != "" {
			switch s[0] {
			case 's', 'S':
			case 'm', 'M':
				mult = 60
			case 'h', 'H':
				mult = 3600
			case 'd', 'D':
				mult = 86400
			case 'w', 'W':
				mult = 604800
			default:
				return -1
			}
			s = s[1:]
		}
		if secs > math.MaxInt32/mult {
			return -1
		}
		secs *= mult
		if total > math.MaxInt32-secs {
			return -1
		}
		total += secs
	}
	return int(total)
}

// atoiErr is sshd's atoi_err: 0..INT_MAX or an error word.
func atoiErr(s string) (int, string) {
	if s == "" {
		return 0, "missing"
	}
	n, err := strconv.ParseInt(strings.TrimLeft(s, " \t\n\v\f\r"), 10, 64)
	switch {
	case err != nil && strings.Contains(err.Error(), "range"):
		if strings.HasPrefix(strings.TrimSpace(s), "-") {
			return 0, "too small"
		}
		return 0, "too large"
	case err != nil:
		return 0, "invalid"
	case n < 0:
		return 0, "too small"
	case n > math.MaxInt32:
		return 0, "too large"
	}
	return int(n), ""
}

// finish is sshd's process_queued_listen_addrs, fill_default_server_options
// and copy_set_server_options for the modelled keywords.
func (e *evaluator) finish(cfg *Config, o, mo *opts) error {
	p := e.prof
	def := Source{Default: true}
	defaults := map[string]string{
		"addressfamily": "any", "usepam": "no", "logingracetime": "120", "maxauthtries": "6",
		"clientaliveinterval": "0", "permitrootlogin": "without-password", "pubkeyauthentication": "yes",
		"passwordauthentication": "yes", "kbdinteractiveauthentication": map[bool]string{true: "yes", false: "no"}[p.kbdDefault],
		"x11forwarding": "no", "permitemptypasswords": "no", "allowtcpforwarding": "yes",
		"allowagentforwarding": "yes", "disableforwarding": "no", "authorizedkeyscommand": "none",
		"authorizedkeyscommanduser": "none", "loglevel": "INFO", "permittunnel": "no",
	}
	for k, s := range o.single {
		cfg.settings[k] = s
	}
	for k, s := range o.lists {
		cfg.settings[k] = s
	}
	for k, v := range defaults {
		if cfg.settings[k] == nil {
			cfg.settings[k] = &Setting{Values: []string{v}, Src: def}
		}
	}
	if cfg.settings["authorizedkeysfile"] == nil {
		cfg.settings["authorizedkeysfile"] = &Setting{Values: []string{".ssh/authorized_keys", ".ssh/authorized_keys2"}, Src: def}
	}
	// Ciphers, MACs and KexAlgorithms: default list, or the configured
	// list with "+", "-" and "^" resolved against what the build supports.
	for k, d := range map[string][2]string{"ciphers": {p.defCiphers, p.allCiphers}, "macs": {p.defMACs, p.allMACs}, "kexalgorithms": {p.defKex, p.allKex}} {
		s := cfg.settings[k]
		if s == nil {
			cfg.settings[k] = &Setting{Values: []string{d[0]}, Src: def}
			continue
		}
		v, err := assemble(s.Values[0], d[0], d[1])
		if err != nil {
			return &ConfigError{File: s.Src.File, Line: s.Src.Line, Msg: fmt.Sprintf("%s: %v", k, err)}
		}
		s.Values = []string{v}
	}
	// Ports and listen addresses.
	ports := &Setting{Src: o.portSrc[0]}
	for i, pt := range o.ports {
		ports.Values = append(ports.Values, strconv.Itoa(pt))
		ports.From = append(ports.From, o.portSrc[i])
	}
	cfg.settings["port"] = ports
	la, err := e.listenAddrs(o, cfg.Value("addressfamily"))
	if err != nil {
		return err
	}
	cfg.settings["listenaddress"] = la
	// sshd checks this at start-up, on the main section only.
	if cfg.Value("authorizedkeyscommand") != "none" && cfg.Value("authorizedkeyscommanduser") == "none" {
		return &ConfigError{Msg: "AuthorizedKeysCommand set without AuthorizedKeysCommandUser"}
	}
	// What the connection's Match blocks set overrides the rest.
	for k, s := range mo.single {
		if matchCopied[k] {
			cfg.settings[k] = s
		}
	}
	for k, s := range mo.lists {
		if matchCopied[k] {
			cfg.settings[k] = s
		}
	}
	return nil
}

// maxListen bounds address:port pairs; sshd has no bound, but 256 ports
// times every ListenAddress line of a hostile file would exhaust memory.
const maxListen = 4096

func (e *evaluator) listenAddrs(o *opts, family string) (*Setting, error) {
	s := &Setting{}
	queue := o.listen
	if len(queue) == 0 {
		queue = []queuedListen{{src: Source{Default: true}}}
		s.Src = Source{Default: true}
	} else {
		s.Src = queue[0].src
	}
	for _, q := range queue {
		ports := o.ports
		if q.port > 0 {
			ports = []int{q.port}
		}
		addrs, err := e.resolve(q.addr, family)
		if err != nil {
			return nil, &ConfigError{File: q.src.File, Line: q.src.Line, Msg: err.Error()}
		}
		if len(s.Values)+len(ports)*len(addrs) > maxListen {
			return nil, &ConfigError{File: q.src.File, Line: q.src.Line, Msg: fmt.Sprintf("more than %d listen addresses", maxListen)}
		}
		for _, pt := range ports {
			// sshd prints each getaddrinfo answer list in reverse.
			for i := len(addrs) - 1; i >= 0; i-- {
				a := addrs[i]
				if a.Is6() {
					s.Values = append(s.Values, fmt.Sprintf("[%s]:%d", a, pt))
				} else {
					s.Values = append(s.Values, fmt.Sprintf("%s:%d", a, pt))
				}
				s.From = append(s.From, q.src)
			}
		}
	}
	return s, nil
}

// resolve is getaddrinfo for a listen address: numeric addresses, the
// wildcard, and names from the root's /etc/hosts. The answer is in
// getaddrinfo's order (IPv6 first).
func (e *evaluator) resolve(host, family string) ([]netip.Addr, error) {
	ok := func(a netip.Addr) bool {
		return family == "any" || (family == "inet") == a.Is4()
	}
	var out []netip.Addr
	if host == "" {
		for _, a := range []netip.Addr{netip.IPv4Unspecified(), netip.IPv6Unspecified()} {
			if ok(a) {
				out = append(out, a)
			}
		}
		return out, nil
	}
	if a, err := netip.ParseAddr(host); err == nil && a.Zone() == "" {
		if !ok(a) {
			return nil, fmt.Errorf("bad addr or host: %s (Address family for hostname not supported)", host)
		}
		return []netip.Addr{a}, nil
	}
	var v4, v6 []netip.Addr
	for _, a := range e.sys.hosts[strings.ToLower(host)] {
		if !ok(a) {
			continue
		}
		if a.Is4() {
			v4 = append(v4, a)
		} else {
			v6 = append(v6, a)
		}
	}
	out = append(v6, v4...)
	if len(out) == 0 {
		return nil, fmt.Errorf("bad addr or host: %s (not in the root's /etc/hosts; DNS is not consulted)", host)
	}
	return out, nil
}

// assemble is sshd's kex_assemble_names for a configured list.
func assemble(list, def, all string) (string, error) {
	switch list[0] {
	case '-':
		var keep []string
		for _, n := range strings.Split(def, ",") {
			if matchPatternList(n, list[1:], false) != 1 {
				keep = append(keep, n)
			}
		}
		return strings.Join(keep, ","), nil
	case '+':
		list = def + "," + list[1:]
	case '^':
		list = list[1:] + "," + def
	}
	var out []string
	seen := map[string]bool{}
	for _, pat := range strings.Split(list, ",") {
		if strings.HasPrefix(pat, "!") {
			return "", fmt.Errorf("negated algorithm pattern %q", pat)
		}
		for _, n := range strings.Split(all, ",") {
			if matchPattern(n, pat) && !seen[n] {
				seen[n] = true
				out = append(out, n)
			}
		}
	}
	if len(out) == 0 {
		return "", fmt.Errorf("empty algorithm list %q", list)
	}
	return strings.Join(out, ","), nil
}
