package inventory

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
)

// maxOSReleaseLine bounds one logical line of os-release.
const maxOSReleaseLine = 64 << 10

// ParseOSRelease reads an os-release file as `set -a; . FILE` in a POSIX
// shell would: single quotes are literal, double quotes honour \$ \` \" \\
// and line continuations, an unquoted backslash escapes the next character,
// and $NAME / ${NAME} expand to variables the file set earlier (the shell
// runs with an empty environment). A line the shell would run as a command,
// or that needs command substitution, is skipped and reported in skipped;
// the file itself is never executed.
func ParseOSRelease(r io.Reader) (fields map[string]string, skipped []string, err error) {
	br := bufio.NewReaderSize(r, 4096)
	fields = map[string]string{}
	lineNo := 0
	for {
		line, readErr := readLogicalLine(br, &lineNo)
		if line != "" {
			if perr := parseAssignmentLine(line, fields); perr != nil {
				skipped = append(skipped, fmt.Sprintf("line %d: %v", lineNo, perr))
			}
		}
		if errors.Is(readErr, io.EOF) {
			return fields, skipped, nil
		}
		if readErr != nil {
			return nil, nil, fmt.Errorf("os-release line %d: %w", lineNo, readErr)
		}
	}
}

// readLogicalLine returns one line, joined with the next while a quote is
// open or the line ends in an unquoted backslash, as the shell reads it.
func readLogicalLine(br *bufio.Reader, lineNo *int) (string, error) {
	var sb strings.Builder
	for {
		part, err := br.ReadString('\n')
		*lineNo++
		sb.WriteString(part)
		if sb.Len() > maxOSReleaseLine {
			return "", fmt.Errorf("line longer than %d bytes", maxOSReleaseLine)
		}
		if err != nil {
			return sb.String(), err
		}
		if !continues(sb.String()) {
			return sb.String(), nil
		}
	}
}

// continues reports whether s ends inside a quote or with a backslash-newline.
func continues(s string) bool {
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote == '\'':
			if c == '\'' {
				quote = 0
			}
		case c == '\\':
			if i+1 == len(s)-1 && s[i+1] == '\n' {
				return true
			}
			i++
		case quote == '"':
			if c == '"' {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '#' && (i == 0 || isBlank(s[i-1])) && quote == 0:
			return false
		}
	}
	return quote != 0
}

func isBlank(c byte) bool { return c == ' ' || c == '\t' || c == '\n' }

var errCommand = errors.New("not an assignment: the shell would run it as a command")

// parseAssignmentLine splits one logical line into shell words and applies
// them when every word is an assignment.
func parseAssignmentLine(line string, fields map[string]string) error {
	type assign struct{ key, val string }
	var pending []assign
	i := 0
	for {
		for i < len(line) && (isBlank(line[i]) || line[i] == ';') {
			i++
		}
		if i >= len(line) || line[i] == '#' {
			break
		}
		start := i
		for i < len(line) && (line[i] == '_' || isAlnum(line[i])) {
			i++
		}
		key := line[start:i]
		if key == "" || isDigit(key[0]) || i >= len(line) || line[i] != '=' {
			return errCommand
		}
		i++
		val, n, err := expandWord(line[i:], func(k string) string {
			for j := len(pending) - 1; j >= 0; j-- {
				if pending[j].key == k {
					return pending[j].val
				}
			}
			return fields[k]
		})
		if err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
		i += n
		pending = append(pending, assign{key, val})
	}
	for _, a := range pending {
		fields[a.key] = a.val
	}
	return nil
}

// expandWord reads one shell word from s and returns its value and length.
func expandWord(s string, lookup func(string) string) (string, int, error) {
	var sb strings.Builder
	i := 0
	for i < len(s) {
		c := s[i]
		switch {
		case isBlank(c) || c == ';':
			return sb.String(), i, nil
		case c == '|' || c == '&' || c == '<' || c == '>' || c == '(' || c == ')' || c == '`':
			return "", 0, fmt.Errorf("unsupported shell syntax %q", c)
		case c == '\'':
			end := strings.IndexByte(s[i+1:], '\'')
			if end < 0 {
				return "", 0, errors.New("unterminated single quote")
			}
			sb.WriteString(s[i+1 : i+1+end])
			i += end + 2
		case c == '"':
			i++
			closed := false
			for i < len(s) && !closed {
				d := s[i]
				switch {
				case d == '"':
					closed = true
					i++
				case d == '\\' && i+1 < len(s):
					switch s[i+1] {
					case '$', '`', '"', '\\':
						sb.WriteByte(s[i+1])
					case '\n':
					default:
						sb.WriteByte('\\')
						sb.WriteByte(s[i+1])
					}
					i += 2
				case d == '`':
					return "", 0, errors.New("command substitution is not evaluated")
				case d == '$':
					v, n, err := expandParam(s[i:], lookup)
					if err != nil {
						return "", 0, err
					}
					sb.WriteString(v)
					i += n
				default:
					sb.WriteByte(d)
					i++
				}
			}
			if !closed {
				return "", 0, errors.New("unterminated double quote")
			}
		case c == '\\':
			if i+1 < len(s) {
				if s[i+1] != '\n' {
					sb.WriteByte(s[i+1])
				}
				i += 2
			} else {
				i++
			}
		case c == '$':
			v, n, err := expandParam(s[i:], lookup)
			if err != nil {
				return "", 0, err
			}
			sb.WriteString(v)
			i += n
		default:
			sb.WriteByte(c)
			i++
		}
	}
	return sb.String(), i, nil
}

// expandParam expands $NAME or ${NAME} at the start of s.
func expandParam(s string, lookup func(string) string) (string, int, error) {
	if len(s) < 2 {
		return "$", 1, nil
	}
	switch {
	case s[1] == '{':
		end := strings.IndexByte(s, '}')
		if end < 0 {
			return "", 0, errors.New("unterminated ${")
		}
		name := s[2:end]
		if !isName(name) {
			return "", 0, fmt.Errorf("unsupported parameter expansion ${%s}", name)
		}
		return lookup(name), end + 1, nil
	case s[1] == '(':
		return "", 0, errors.New("command substitution is not evaluated")
	case s[1] == '_' || isAlpha(s[1]):
		j := 2
		for j < len(s) && (s[j] == '_' || isAlnum(s[j])) {
			j++
		}
		return lookup(s[1:j]), j, nil
	default:
		// A lone $ (or a special parameter we do not model) stays literal.
		return "$", 1, nil
	}
}

func isName(s string) bool {
	if s == "" || isDigit(s[0]) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] != '_' && !isAlnum(s[i]) {
			return false
		}
	}
	return true
}

func isAlpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isDigit(c byte) bool { return c >= '0' && c <= '9' }
func isAlnum(c byte) bool { return isAlpha(c) || isDigit(c) }
