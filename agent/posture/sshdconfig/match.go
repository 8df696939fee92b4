package sshdconfig

import (
	"net/netip"
	"strconv"
	"strings"
)

// matchPattern is sshd's match_pattern: '*' matches any run, '?' one byte,
// everything else itself. sshd backtracks recursively, which is
// exponential in the number of stars; this is the same language matched
// by the greedy algorithm, linear per star, so a hostile pattern cannot
// stall the agent.
func matchPattern(s, pattern string) bool {
	si, pi := 0, 0
	star, mark := -1, 0
	for si < len(s) {
		switch {
		case pi < len(pattern) && pattern[pi] == '*':
			star, mark = pi, si
			pi++
		case pi < len(pattern) && (pattern[pi] == '?' || pattern[pi] == s[si]):
			si++
			pi++
		case star >= 0:
			mark++
			si, pi = mark, star+1
		default:
			return false
		}
	}
	for pi < len(pattern) && pattern[pi] == '*' {
		pi++
	}
	return pi == len(pattern)
}

// matchPatternList is sshd's match_pattern_list: 1 when s matches a
// positive pattern of the comma-separated list, -1 when it matches a
// negated one (negation wins), 0 otherwise.
func matchPatternList(s, list string, lower bool) int {
	if lower {
		s = strings.ToLower(s)
	}
	got := 0
	for _, p := range strings.Split(list, ",") {
		neg := strings.HasPrefix(p, "!")
		if neg {
			p = p[1:]
		}
		if lower {
			p = strings.ToLower(p)
		}
		if matchPattern(s, p) {
			if neg {
				return -1
			}
			got = 1
		}
	}
	return got
}

// parseCIDR is sshd's addr_pton_cidr: 0 with the prefix, -1 when p is no
// address, -2 when the mask length is invalid or host bits are set.
func parseCIDR(p string) (netip.Prefix, int) {
	addr, bits, hasMask := strings.Cut(p, "/")
	if hasMask {
		if bits == "" || bits[0] < '0' || bits[0] > '9' {
			return netip.Prefix{}, -1
		}
		for _, c := range bits {
			if c < '0' || c > '9' {
				return netip.Prefix{}, -1
			}
		}
	}
	a, err := netip.ParseAddr(addr)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, -1
	}
	n := a.BitLen()
	if hasMask {
		v, err := strconv.Atoi(bits)
		if err != nil || v > 128 {
			return netip.Prefix{}, -1
		}
		if v > a.BitLen() {
			return netip.Prefix{}, -2
		}
		n = v
	}
	pfx := netip.PrefixFrom(a, n)
	if pfx.Masked().Addr() != a {
		return netip.Prefix{}, -2
	}
	return pfx, 0
}

// addrMatchList is sshd's addr_match_list: 1 when addr is in a positive
// entry (CIDR or wildcard pattern), -1 when in a negated one, 0 when in
// none, -2 when the list is malformed. addr "" checks the list only.
func addrMatchList(addr, list string) int {
	var try netip.Addr
	if addr != "" {
		a, err := netip.ParseAddr(addr)
		if err != nil {
			return 0
		}
		try = a
	}
	ret := 0
	for _, cp := range strings.Split(list, ",") {
		neg := strings.HasPrefix(cp, "!")
		if neg {
			cp = cp[1:]
		}
		if cp == "" {
			return -2
		}
		pfx, r := parseCIDR(cp)
		found := false
		switch r {
		case -2:
			return -2
		case 0:
			found = addr != "" && try.Is4() == pfx.Addr().Is4() && pfx.Contains(try)
		default:
			found = addr != "" && matchPattern(addr, cp)
		}
		if found {
			if neg {
				return -1
			}
			ret = 1
		}
	}
	return ret
}
