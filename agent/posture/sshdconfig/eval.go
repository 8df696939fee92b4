package sshdconfig

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/nodeward/nodeward/agent/hostfs"
)

// MainConfig is where sshd reads its configuration.
const MainConfig = "/etc/ssh/sshd_config"

const (
	sshDir       = "/etc/ssh"
	maxDepth     = 16 // sshd's SERVCONF_MAX_DEPTH
	maxPorts     = 256
	flagNever    = 1 << 2 // SSHCFG_NEVERMATCH: Match never matches
	flagOnlyNext = 1 << 3 // SSHCFG_MATCH_ONLY: until the first Match block
)

// ConnInfo is the connection a `sshd -T -C` specification describes. A
// nil field was not given.
type ConnInfo struct {
	User, Host, Addr, LAddr, RDomain *string
	// LPort is the local port: 0 when not given, which makes a Match
	// LocalPort block an error as in sshd -T, or NoLocalPort, which makes
	// it match nothing, like the other criteria when their field is nil.
	LPort int
}

// NoLocalPort is a ConnInfo.LPort that Match LocalPort never matches.
const NoLocalPort = -1

// ParseConnSpec parses "user=U,host=H,addr=A,laddr=L,lport=P[,rdomain=R]"
// as sshd -C does; it stops at an empty element like sshd.
func ParseConnSpec(spec string, services map[string]int) (*ConnInfo, error) {
	ci := &ConnInfo{}
	for _, p := range strings.Split(spec, ",") {
		if p == "" {
			break
		}
		k, v, _ := strings.Cut(p, "=")
		switch k {
		case "user":
			ci.User = &v
		case "host":
			ci.Host = &v
		case "addr":
			ci.Addr = &v
		case "laddr":
			ci.LAddr = &v
		case "rdomain":
			ci.RDomain = &v
		case "lport":
			port := a2port(v, services)
			if port == -1 {
				return nil, fmt.Errorf("invalid port %q in test mode specification %s", v, p)
			}
			ci.LPort = port
		default:
			return nil, fmt.Errorf("invalid test mode specification %s", p)
		}
	}
	return ci, nil
}

// Source is where a value came from.
type Source struct {
	File string
	Line int
	// Match is the Match block that set the value ("Match User x" at
	// file:line), empty for the main section.
	Match string
	// Default is true when no line set the value.
	Default bool
}

func (s Source) String() string {
	switch {
	case s.Default:
		return "default"
	case s.Match != "":
		return fmt.Sprintf("%s:%d in %s", s.File, s.Line, s.Match)
	default:
		return fmt.Sprintf("%s:%d", s.File, s.Line)
	}
}

// Setting is one effective option.
type Setting struct {
	// Values are the printed values: one for most keywords, one per line
	// for listenaddress, port and the allow/deny lists.
	Values []string
	Src    Source
	// From lists every line that contributed to a list option.
	From []Source
}

// Config is an effective sshd configuration.
type Config struct {
	Profile *Profile
	// Files are the config files read, in order.
	Files    []string
	settings map[string]*Setting
	// MatchBlocks are every Match block seen, in order, with whether it
	// applied to the connection evaluated.
	MatchBlocks []MatchBlock
	// Unrecognised lists keywords an unverified build's table may know
	// but this package does not ("file line N: keyword"); they were skipped.
	Unrecognised []string
}

// MatchBlock is one Match line and what it set.
type MatchBlock struct {
	Criteria string
	File     string
	Line     int
	Applied  bool
	// Sets are "keyword value" lines inside the block (modelled keywords).
	Sets []BlockSetting
}

// BlockSetting is one modelled keyword set inside a Match block.
type BlockSetting struct {
	Keyword string
	Value   string
	Line    int
}

// Name is how findings name the block.
func (b MatchBlock) Name() string {
	return fmt.Sprintf("Match %s (%s:%d)", b.Criteria, b.File, b.Line)
}

// Get returns the effective setting of a keyword from Keywords.
func (c *Config) Get(keyword string) *Setting { return c.settings[keyword] }

// Value returns the first value of a keyword.
func (c *Config) Value(keyword string) string {
	if s := c.settings[keyword]; s != nil && len(s.Values) > 0 {
		return s.Values[0]
	}
	return ""
}

// Lines renders the modelled keywords as `sshd -T` prints them.
func (c *Config) Lines() []string {
	var out []string
	for _, k := range Keywords {
		s := c.settings[k]
		if s == nil {
			continue
		}
		if k == "authorizedkeysfile" {
			out = append(out, k+" "+strings.Join(s.Values, " "))
			continue
		}
		for _, v := range s.Values {
			out = append(out, k+" "+v)
		}
	}
	return out
}

// ConfigError is a configuration sshd itself would refuse to start with.
type ConfigError struct {
	File string
	Line int
	Msg  string
}

func (e *ConfigError) Error() string {
	if e.File == "" {
		return e.Msg
	}
	return fmt.Sprintf("%s line %d: %s", e.File, e.Line, e.Msg)
}

// opts is one pass's options: sshd's ServerOptions for the modelled keywords.
type opts struct {
	single  map[string]*Setting
	lists   map[string]*Setting
	ports   []int
	portSrc []Source
	listen  []queuedListen
}

type queuedListen struct {
	addr string
	port int
	src  Source
}

func newOpts() *opts {
	return &opts{single: map[string]*Setting{}, lists: map[string]*Setting{}}
}

type include struct {
	file  string
	lines []string
}

type evaluator struct {
	fs      FS
	prof    *Profile
	sys     *sysDB
	cache   map[string][]include
	files   []string
	blocks  []MatchBlock
	blockIx map[string]int
	// blockByName finds a block by its Name, the Source.Match of its lines.
	blockByName map[string]int
	pass        int
	lines       int // processed so far, against maxLines
	unknown     []string
}

// maxLines bounds the lines processed over all files and both passes: an
// Include fan-out (every line including a file that includes ...) is
// bounded in depth by sshd but not in width.
const maxLines = 1 << 18

// Evaluate computes the effective configuration as `sshd -T` does, with ci
// as the -C specification (nil: none).
func Evaluate(root FS, prof *Profile, ci *ConnInfo) (*Config, error) {
	e := &evaluator{fs: root, prof: prof, sys: loadSysDB(root), cache: map[string][]include{}, blockIx: map[string]int{}, blockByName: map[string]int{}}
	lines, err := e.load(MainConfig)
	if err != nil {
		return nil, err
	}
	if lines == nil {
		return nil, fmt.Errorf("%s: %w", MainConfig, fs.ErrNotExist)
	}
	e.files = append(e.files, MainConfig)
	// Pass 1, at start-up: the main section applies, Match blocks are
	// only checked for syntax (except "Match All", which sshd applies).
	o := newOpts()
	active := true
	e.pass = 1
	if err := e.parse(o, MainConfig, lines, nil, 0, &active, 0, ""); err != nil {
		return nil, err
	}
	if len(o.ports) == 0 {
		o.ports = []int{22}
		o.portSrc = []Source{{Default: true}}
	}
	// Pass 2, for the connection: only Match blocks count, then what they
	// set overrides the start-up values. `sshd -T` without -C uses a blank
	// connection that matches nothing but "Match All".
	if ci == nil {
		ci = &ConnInfo{}
	}
	mo := newOpts()
	active = false
	e.pass = 2
	if err := e.parse(mo, MainConfig, lines, ci, flagOnlyNext, &active, 0, ""); err != nil {
		return nil, err
	}
	cfg := &Config{Profile: prof, Files: e.files, settings: map[string]*Setting{}, MatchBlocks: e.blocks, Unrecognised: e.unknown}
	if err := e.finish(cfg, o, mo); err != nil {
		return nil, err
	}
	return cfg, nil
}

// load reads one config file; a directory reads as empty, as with sshd's
// fopen+getline. nil lines and no error: the file does not exist.
func (e *evaluator) load(name string) ([]string, error) {
	b, err := e.fs.ReadFile(name, MaxConfigSize)
	switch {
	case errors.Is(err, hostfs.ErrNotRegular):
		if fi, serr := e.fs.ReadDir(name); serr == nil && fi != nil {
			return []string{""}, nil
		}
		return nil, &ConfigError{File: name, Msg: err.Error()}
	case errors.Is(err, hostfs.ErrTooLarge):
		return nil, &ConfigError{File: name, Msg: fmt.Sprintf("%v (%d bytes at most)", ErrTooLarge, MaxConfigSize)}
	case errors.Is(err, fs.ErrNotExist):
		return nil, nil
	case err != nil:
		return nil, &ConfigError{File: name, Msg: err.Error()}
	}
	return SplitLines(strings.NewReader(string(b)))
}

func (e *evaluator) parse(o *opts, file string, lines []string, ci *ConnInfo, flags int, active *bool, depth int, block string) error {
	if depth > maxDepth {
		return &ConfigError{File: file, Msg: "Too many recursive configuration includes"}
	}
	for i, line := range lines {
		if e.lines++; e.lines > maxLines {
			return &ConfigError{File: file, Line: i + 1, Msg: fmt.Sprintf("more than %d configuration lines through Includes", maxLines)}
		}
		if err := e.line(o, line, file, i+1, active, ci, &flags, depth, &block); err != nil {
			return err
		}
	}
	return nil
}

func cfgErr(file string, line int, format string, a ...any) error {
	return &ConfigError{File: file, Line: line, Msg: fmt.Sprintf(format, a...)}
}

// line is sshd's process_server_config_line_depth for one line.
func (e *evaluator) line(o *opts, line, file string, ln int, active *bool, ci *ConnInfo, incFlags *int, depth int, block *string) error {
	line = strings.TrimRight(line, whitespace+"\f")
	if line == "" {
		return nil
	}
	kw, str, ok, more := strdelim(line)
	if !ok {
		return nil
	}
	if kw == "" {
		kw, str, ok, more = strdelim(str)
		if !ok {
			return nil
		}
	}
	if kw == "" || kw[0] == '#' {
		return nil
	}
	if !more || str == "" {
		return cfgErr(file, ln, "no argument after keyword %q", kw)
	}
	key := strings.ToLower(kw)
	flags, known := knownKeywords[key]
	if !known {
		if later, ok := laterKeywords[key]; ok && e.prof.num >= later.since {
			flags, known = later.flags, true
		}
	}
	if !known && !e.prof.Verified {
		// A build whose keyword table is not known (vendor patches add
		// keywords): note the keyword rather than refuse the config.
		if e.pass == 1 {
			e.unknown = append(e.unknown, fmt.Sprintf("%s line %d: %s", file, ln, kw))
		}
		return nil
	}
	if !known {
		return cfgErr(file, ln, "Bad configuration option: %s", kw)
	}
	args, err := argvSplit(str)
	if err != nil {
		return cfgErr(file, ln, "invalid quotes")
	}
	if !*active && flags&cfgMatch == 0 {
		if ci == nil {
			return cfgErr(file, ln, "Directive '%s' is not allowed within a Match block", kw)
		}
		return nil
	}
	if canon, ok := aliases[key]; ok {
		key = canon
	}
	src := Source{File: file, Line: ln, Match: *block}
	switch key {
	case "include":
		return e.include(o, args, file, ln, active, ci, *incFlags, depth, *block)
	case "match":
		return e.match(str, file, ln, active, ci, incFlags, block)
	}
	return e.apply(o, key, kw, str, args, src, *active)
}

func (e *evaluator) include(o *opts, args []string, file string, ln int, active *bool, ci *ConnInfo, incFlags int, depth int, block string) error {
	if len(args) == 0 {
		return cfgErr(file, ln, "Include missing filename argument")
	}
	for _, a := range args {
		if a == "" {
			return cfgErr(file, ln, "keyword Include empty argument")
		}
		sel := a
		if a[0] != '/' && a[0] != '~' {
			sel = sshDir + "/" + a
		}
		oactive := *active
		childFlags := flagNever
		switch {
		case incFlags&flagOnlyNext != 0:
			childFlags = flagOnlyNext
		case oactive:
			childFlags = 0
		}
		if items, ok := e.cache[sel]; ok {
			for _, it := range items {
				if err := e.parse(o, it.file, it.lines, ci, childFlags, active, depth+1, block); err != nil {
					return err
				}
				*active = oactive
			}
			continue
		}
		matches, err := e.glob(sel)
		if err != nil {
			return cfgErr(file, ln, "include %q glob failed: %v", sel, err)
		}
		if len(matches) == 0 {
			e.cache[sel] = nil
		}
		for _, m := range matches {
			lines, err := e.load(m)
			if err != nil {
				return err
			}
			if lines == nil {
				// Listed a moment ago, gone now, or a dangling link: sshd's
				// fopen fails and it exits.
				return cfgErr(file, ln, "include %s: %v", m, fs.ErrNotExist)
			}
			e.files = append(e.files, m)
			if err := e.parse(o, m, lines, ci, childFlags, active, depth+1, block); err != nil {
				return err
			}
			*active = oactive
			e.cache[sel] = append(e.cache[sel], include{file: m, lines: lines})
		}
	}
	return nil
}

func (e *evaluator) match(str, file string, ln int, active *bool, ci *ConnInfo, incFlags *int, block *string) error {
	never := *incFlags&flagNever != 0
	eci := ci
	if never {
		eci = nil
	}
	res, consumed, err := e.matchLine(str, eci)
	if err != nil {
		return cfgErr(file, ln, "%v", err)
	}
	if res < 0 {
		return cfgErr(file, ln, "Bad Match condition")
	}
	*active = !never && res == 1
	*incFlags &^= flagOnlyNext
	if !consumed {
		return cfgErr(file, ln, "keyword Match extra arguments at end of line")
	}
	crit := strings.TrimSpace(strings.SplitN(str, "#", 2)[0])
	*block = fmt.Sprintf("Match %s (%s:%d)", crit, file, ln)
	key := fmt.Sprintf("%s:%d", file, ln)
	ix, seen := e.blockIx[key]
	if !seen {
		ix = len(e.blocks)
		e.blockIx[key] = ix
		e.blocks = append(e.blocks, MatchBlock{Criteria: crit, File: file, Line: ln})
		e.blockByName[*block] = ix
	}
	if e.pass == 2 && ci != nil && !never && *active {
		e.blocks[ix].Applied = true
	}
	return nil
}

// matchLine is sshd's match_cfg_line. It returns 1 (match), 0 (no match)
// or -1 (bad condition, with err for fatal cases), and whether every
// argument was consumed.
func (e *evaluator) matchLine(cond string, ci *ConnInfo) (int, bool, error) {
	result, attributes := 1, 0
	cp := cond
	for {
		attrib, rest, ok, _ := strdelim(cp)
		if !ok || attrib == "" {
			break
		}
		cp = rest
		if attrib[0] == '#' {
			break
		}
		attributes++
		if strings.EqualFold(attrib, "all") {
			arg, _, _, _ := strdelim(cp)
			if attributes > 1 || (arg != "" && arg[0] != '#') {
				return -1, true, errors.New("'all' cannot be combined with other Match attributes")
			}
			return 1, true, nil
		}
		arg, rest, ok, _ := strdelim(cp)
		if !ok || arg == "" || arg[0] == '#' {
			return -1, true, fmt.Errorf("missing Match criteria for %s", attrib)
		}
		cp = rest
		switch strings.ToLower(attrib) {
		case "user":
			if ci == nil || ci.User == nil {
				result = 0
				continue
			}
			if matchPatternList(*ci.User, arg, false) != 1 {
				result = 0
			}
		case "group":
			if ci == nil || ci.User == nil {
				result = 0
				continue
			}
			if !e.sys.userInGroups(*ci.User, arg) {
				result = 0
			}
		case "host":
			if ci == nil || ci.Host == nil {
				result = 0
				continue
			}
			if matchPatternList(*ci.Host, arg, true) != 1 {
				result = 0
			}
		case "address", "localaddress":
			var a *string
			if ci != nil {
				a = ci.Addr
				if strings.EqualFold(attrib, "localaddress") {
					a = ci.LAddr
				}
			}
			if a == nil {
				if addrMatchList("", arg) != 0 {
					return -1, true, fmt.Errorf("invalid Match %s argument '%s'", strings.ToLower(attrib), arg)
				}
				result = 0
				continue
			}
			switch addrMatchList(*a, arg) {
			case 1:
			case -2:
				return -1, true, nil
			default:
				result = 0
			}
		case "localport":
			port := a2port(arg, e.sys.services)
			if port == -1 {
				return -1, true, fmt.Errorf("invalid LocalPort '%s' on Match line", arg)
			}
			if ci == nil || ci.LPort == NoLocalPort {
				result = 0
				continue
			}
			if ci.LPort == 0 {
				return -1, true, errors.New("'Match LocalPort' in configuration but 'lport' not in connection test specification")
			}
			if port != ci.LPort {
				result = 0
			}
		case "rdomain":
			if ci == nil || ci.RDomain == nil {
				result = 0
				continue
			}
			if matchPatternList(*ci.RDomain, arg, false) != 1 {
				result = 0
			}
		default:
			return -1, true, fmt.Errorf("unsupported Match attribute %s", attrib)
		}
	}
	if attributes == 0 {
		return -1, true, errors.New("one or more attributes required for Match")
	}
	return result, true, nil
}

// a2port is sshd's a2port: a number 0..65535 or a tcp service name.
func a2port(s string, services map[string]int) int {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 || n > 65535 {
			return -1
		}
		return int(n)
	}
	if p, ok := services[s]; ok {
		return p
	}
	return -1
}

// glob expands an Include pattern inside the root like glob(3) with no
// flags: sorted, and a leading dot only matched by a leading dot.
func (e *evaluator) glob(pattern string) ([]string, error) {
	if !strings.HasPrefix(pattern, "/") {
		// A "~" path: glob(3) without GLOB_TILDE takes it relative to
		// sshd's working directory "/"; nothing sane matches.
		pattern = "/" + pattern
	}
	parts := strings.Split(strings.Trim(pattern, "/"), "/")
	cur := []string{"/"}
	for i, part := range parts {
		last := i == len(parts)-1
		var next []string
		for _, dir := range cur {
			if part == "" {
				next = append(next, dir)
				continue
			}
			if !hasMeta(part) {
				p := path.Join(dir, part)
				if last {
					if e.exists(p) {
						next = append(next, p)
					}
				} else {
					next = append(next, p)
				}
				continue
			}
			ents, err := e.fs.ReadDir(dir)
			if err != nil {
				continue
			}
			for _, ent := range ents {
				n := ent.Name()
				if strings.HasPrefix(n, ".") && !strings.HasPrefix(part, ".") {
					continue
				}
				if globMatch(part, n) {
					next = append(next, path.Join(dir, n))
				}
			}
		}
		cur = next
	}
	sort.Strings(cur)
	return cur, nil
}

func (e *evaluator) exists(p string) bool {
	ents, err := e.fs.ReadDir(path.Dir(p))
	if err != nil {
		return false
	}
	base := path.Base(p)
	for _, ent := range ents {
		if ent.Name() == base {
			return true
		}
	}
	return false
}

func hasMeta(s string) bool { return strings.ContainsAny(s, `*?[\`) }

// globMatch is fnmatch for one path component: "[!...]" negates like
// "[^...]", and a malformed bracket matches itself literally, as in glob(3).
func globMatch(pattern, name string) bool {
	pattern = strings.ReplaceAll(pattern, "[!", "[^")
	ok, err := path.Match(pattern, name)
	if err != nil {
		return pattern == name
	}
	return ok
}
