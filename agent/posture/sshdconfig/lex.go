// Package sshdconfig computes sshd's effective configuration the way sshd
// itself does for `sshd -T`: the main file and its Includes are read through
// the host root, parsed line by line with sshd's own tokenising rules, the
// first value of a keyword wins, Match blocks are evaluated against a
// connection specification, and unset keywords take the defaults of the
// OpenSSH build installed on that root.
//
// Only the keywords that matter for hardening are modelled (see Keywords);
// every other keyword sshd knows is still recognised, so that an unknown or
// misplaced keyword is reported as the error sshd would report.
package sshdconfig

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
)

// MaxConfigSize bounds one configuration file. sshd has no such bound; a
// config file of this size on a node is hostile or broken, not a config.
const MaxConfigSize = 1 << 20

// ErrTooLarge is returned for a config file above MaxConfigSize.
var ErrTooLarge = errors.New("config file exceeds size limit")

// SplitLines reads a config file the way sshd's load_server_config does:
// leading blanks and carriage returns of each line are dropped, and a NUL
// byte ends the line's text and swallows its newline (sshd copies each line
// with strlen), which joins it to the next line.
func SplitLines(r io.Reader) ([]string, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	if len(data) > MaxConfigSize {
		return nil, fmt.Errorf("%w of %d bytes", ErrTooLarge, MaxConfigSize)
	}
	var buf bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), MaxConfigSize+1)
	sc.Split(scanLinesKeepNL)
	for sc.Scan() {
		line := sc.Bytes()
		line = bytes.TrimLeft(line, " \t\r")
		if i := bytes.IndexByte(line, 0); i >= 0 {
			line = line[:i]
		}
		buf.Write(line)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	// sshd then splits the buffer on newlines, numbering lines from 1.
	return strings.Split(buf.String(), "\n"), nil
}

func scanLinesKeepNL(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		return i + 1, data[:i+1], nil
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}

const whitespace = " \t\r\n"

// strdelim returns the next token of s and the rest, splitting on
// whitespace, a double quote or one '=' (sshd's strdelim). ok is false for
// an unterminated quote.
func strdelim(s string) (tok, rest string, ok bool, more bool) {
	i := strings.IndexAny(s, whitespace+"\"=")
	if i < 0 {
		return s, "", true, false
	}
	if s[i] == '"' {
		// sshd removes the quote and takes up to the next quote.
		t := s[:i] + s[i+1:]
		j := strings.IndexByte(t[i:], '"')
		if j < 0 {
			return "", "", false, false
		}
		j += i
		tok = t[:j]
		r := t[j+1:]
		return tok, strings.TrimLeft(r, whitespace), true, true
	}
	tok = s[:i]
	wasEq := s[i] == '='
	r := strings.TrimLeft(s[i+1:], whitespace)
	if !wasEq && strings.HasPrefix(r, "=") {
		r = strings.TrimLeft(r[1:], whitespace)
	}
	return tok, r, true, true
}

// argvSplit splits a directive's arguments like sshd's argv_split with
// comment termination: tokens split on blanks, single and double quotes
// group, a backslash escapes a quote, a backslash or (outside quotes) a
// space, and a '#' at the start of a token ends the line.
func argvSplit(s string) ([]string, error) {
	var args []string
	i := 0
	for i < len(s) {
		if s[i] == ' ' || s[i] == '\t' {
			i++
			continue
		}
		if s[i] == '#' {
			break
		}
		var b strings.Builder
		var quote byte
		for ; i < len(s); i++ {
			c := s[i]
			switch {
			case c == '\\' && i+1 < len(s) && (s[i+1] == '\'' || s[i+1] == '"' || s[i+1] == '\\' || (quote == 0 && s[i+1] == ' ')):
				i++
				b.WriteByte(s[i])
				continue
			case quote == 0 && (c == ' ' || c == '\t'):
			case quote == 0 && (c == '"' || c == '\''):
				quote = c
				continue
			case quote != 0 && c == quote:
				quote = 0
				continue
			default:
				b.WriteByte(c)
				continue
			}
			break
		}
		if i >= len(s) && quote != 0 {
			return nil, errors.New("invalid quotes")
		}
		args = append(args, b.String())
	}
	return args, nil
}
