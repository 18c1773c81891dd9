package main

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode/utf8"
)

// psql: the options a restore test and a healthcheck use (-h -p -U -d -q -t -A -c -f -v, and
// positional DBNAME [USERNAME]), run in order as the real one runs its -c and -f actions.
// Scripts are split into statements as psql's lexer does (quotes, comments, dollar quotes,
// parentheses) and each is sent as a simple query; the meta-commands of a dump (\connect,
// \c, \set, \q) run client-side, COPY FROM stdin takes the script's following lines up to \.
// Output is psql's aligned table (or -A unaligned, -t tuples only); errors go to stderr,
// prefixed "psql:FILE:LINE: " for a script. Exit codes are psql's: 0, 1 (a file cannot be
// read, a -c query failed), 2 (cannot connect), 3 (an error with ON_ERROR_STOP set).

var psqlSpec = map[string]string{
	"h": "host:", "host": "host:", "p": "port:", "port": "port:", "U": "username:", "username": "username:",
	"d": "dbname:", "dbname": "dbname:", "c": "command:", "command": "command:", "f": "file:", "file": "file:",
	"v": "set:", "set": "set:", "variable": "set:", "q": "quiet", "quiet": "quiet",
	"t": "tuples-only", "tuples-only": "tuples-only", "A": "no-align", "no-align": "no-align",
	"X": "no-psqlrc", "no-psqlrc": "no-psqlrc", "w": "no-password", "no-password": "no-password",
	"V": "version", "version": "version", "?": "help", "help": "help",
}

// psqlAction is one -c or -f, in the order given.
type psqlAction struct{ command, file string }

type psql struct {
	conn        pgConn
	s           *pgSession
	quiet       bool
	tuplesOnly  bool
	unaligned   bool
	onErrorStop bool
	vars        map[string]string
	out         io.Writer
	errw        io.Writer
	source      string // the script's name, for "psql:FILE:LINE: "
	line        int
}

// psqlActions reads the arguments in order: -c/-f repeat, so pgArgs (a map) cannot keep them.
func psqlActions(args []string) []psqlAction {
	var out []psqlAction
	for i := 0; i < len(args); i++ {
		a := args[i]
		for _, f := range [][2]string{{"-c", "--command"}, {"-f", "--file"}} {
			var v string
			switch {
			case a == f[0] || a == f[1]:
				if i+1 < len(args) {
					i++
					v = args[i]
				}
			case strings.HasPrefix(a, f[0]) && !strings.HasPrefix(a, "--"):
				v = a[2:]
			case strings.HasPrefix(a, f[1]+"="):
				v = a[len(f[1])+1:]
			default:
				continue
			}
			if f[0] == "-c" {
				out = append(out, psqlAction{command: v})
			} else {
				out = append(out, psqlAction{file: v})
			}
		}
	}
	return out
}

func psqlTrue(v string) bool {
	switch strings.ToLower(v) {
	case "on", "true", "1", "yes", "y", "t":
		return true
	}
	return false
}

func runPsql(args []string) int {
	opts, rest, err := pgArgs("psql", args, psqlSpec)
	if err != nil {
		fmt.Fprintf(os.Stderr, "psql: %v\npsql: hint: Try \"psql --help\" for more information.\n", err)
		return 1
	}
	if pgVersionOrHelp("psql", opts, "psql is the PostgreSQL interactive terminal.\n\nUsage:\n  psql [OPTION]... [DBNAME [USERNAME]]") {
		return 0
	}
	c := defaultPgConn()
	if len(rest) > 0 {
		c.database = rest[0]
	}
	if len(rest) > 1 {
		c.user = rest[1]
	}
	if len(rest) > 2 {
		fmt.Fprintf(os.Stderr, "psql: warning: extra command-line argument \"%s\" ignored\n", rest[2])
	}
	c.apply(opts)
	ps := &psql{conn: c, quiet: opts["quiet"] != "", tuplesOnly: opts["tuples-only"] != "", unaligned: opts["no-align"] != "",
		vars: map[string]string{}, out: os.Stdout, errw: os.Stderr}
	for i := 0; i < len(args); i++ { // every -v, not just the last
		a := args[i]
		var v string
		switch {
		case (a == "-v" || a == "--set" || a == "--variable") && i+1 < len(args):
			i++
			v = args[i]
		case strings.HasPrefix(a, "-v") && !strings.HasPrefix(a, "--"):
			v = a[2:]
		case strings.HasPrefix(a, "--set="), strings.HasPrefix(a, "--variable="):
			_, v, _ = strings.Cut(a, "=")
		default:
			continue
		}
		name, value, ok := strings.Cut(v, "=")
		if !ok {
			fmt.Fprintf(os.Stderr, "psql: error: could not set variable \"%s\"\n", v)
			return 1
		}
		ps.set(name, value)
	}
	s, err := c.connect()
	if err != nil {
		fmt.Fprintf(os.Stderr, "psql: error: %v\n", err)
		return 2
	}
	ps.s = s
	defer func() {
		if ps.s != nil {
			ps.s.close()
		}
	}()
	actions := psqlActions(args)
	if len(actions) == 0 {
		actions = []psqlAction{{file: "-"}}
	}
	code := 0
	for _, a := range actions {
		if a.file != "" {
			code = ps.runFile(a.file)
		} else {
			ps.source = ""
			ok := false
			if strings.HasPrefix(strings.TrimSpace(a.command), "\\") {
				ok, _ = ps.runScript(a.command)
			} else { // -c sends its text as one query, as psql does
				ok, _ = ps.send(a.command, nil, 0)
			}
			if ok {
				code = 0
			} else {
				code = 1
			}
		}
		if code != 0 && ps.onErrorStop {
			break
		}
	}
	return code
}

func (ps *psql) set(name, value string) {
	ps.vars[name] = value
	if name == "ON_ERROR_STOP" {
		ps.onErrorStop = psqlTrue(value)
	}
}

// fail prints an error as psql does: "psql:FILE:LINE: " before it when a script runs.
func (ps *psql) fail(msg string) {
	if ps.source != "" {
		fmt.Fprintf(ps.errw, "psql:%s:%d: %s\n", ps.source, ps.line, msg)
	} else {
		fmt.Fprintln(ps.errw, msg)
	}
}

// runFile is -f FILE ("-" is stdin): 0, 1 (cannot read it), 2 (connection lost) or 3 (ON_ERROR_STOP).
func (ps *psql) runFile(name string) int {
	var data []byte
	var err error
	if name == "-" {
		data, err = io.ReadAll(os.Stdin)
		ps.source = "<stdin>"
	} else {
		data, err = os.ReadFile(name)
		ps.source = name
	}
	if err != nil {
		reason := err.Error()
		if pe, ok := err.(*os.PathError); ok {
			reason = pe.Err.Error()
			reason = strings.ToUpper(reason[:1]) + reason[1:]
		}
		fmt.Fprintf(ps.errw, "psql: error: %s: %s\n", name, reason)
		return 1
	}
	if ok, _ := ps.runScript(string(data)); !ok && ps.onErrorStop {
		return 3
	}
	return 0
}

// runScript runs a script's statements and meta-commands. ok is false when one failed;
// stopped when it ended early (ON_ERROR_STOP, \q).
func (ps *psql) runScript(text string) (ok, stopped bool) {
	lines := strings.SplitAfter(text, "\n")
	ok = true
	var buf strings.Builder
	quote := byte(0) // ' or " while in a quoted string
	dollar := ""     // the tag while in a dollar-quoted string
	comment, paren := 0, 0
	next := 0
	for next < len(lines) {
		line := lines[next]
		next++
		ps.line = next
		for i := 0; i < len(line); i++ {
			c := line[i]
			switch {
			case comment > 0:
				if c == '*' && i+1 < len(line) && line[i+1] == '/' {
					comment--
					i++
				} else if c == '/' && i+1 < len(line) && line[i+1] == '*' {
					comment++
					i++
				}
				continue
			case dollar != "":
				if strings.HasPrefix(line[i:], dollar) {
					buf.WriteString(dollar)
					i += len(dollar) - 1
					dollar = ""
					continue
				}
			case quote != 0:
				if c == quote {
					quote = 0
				}
			case c == '\'' || c == '"':
				quote = c
			case c == '-' && i+1 < len(line) && line[i+1] == '-':
				i = len(line) - 1
				if strings.TrimSpace(buf.String()) != "" {
					buf.WriteString("\n")
				}
				continue
			case c == '/' && i+1 < len(line) && line[i+1] == '*':
				comment++
				i++
				continue
			case c == '$':
				if tag := dollarTag(line[i:]); tag != "" && !identChar(prevByte(buf.String())) {
					dollar = tag
					buf.WriteString(tag)
					i += len(tag) - 1
					continue
				}
			case c == '(':
				paren++
			case c == ')':
				if paren > 0 {
					paren--
				}
			case c == ';' && paren == 0:
				buf.WriteByte(';')
				sql := strings.TrimSpace(buf.String())
				buf.Reset()
				var good bool
				good, next = ps.send(sql, lines, next)
				if !good {
					ok = false
					if ps.onErrorStop {
						return false, true
					}
				}
				continue
			case c == '\\':
				cmd := strings.TrimRight(line[i+1:], "\r\n")
				if strings.HasPrefix(cmd, "\\") { // \\ separates SQL from a meta-command
					i++
					continue
				}
				good, quit := ps.meta(cmd)
				if quit {
					return ok, true
				}
				if !good {
					ok = false
					if ps.onErrorStop {
						return false, true
					}
				}
				i = len(line)
				continue
			}
			if c == '\n' && strings.TrimSpace(buf.String()) == "" {
				continue
			}
			if buf.Len() == 0 && (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
				continue
			}
			buf.WriteByte(c)
		}
	}
	if sql := strings.TrimSpace(buf.String()); sql != "" {
		if good, _ := ps.send(sql, lines, next); !good {
			ok = false
		}
	}
	return ok, !ok && ps.onErrorStop
}

func identChar(c byte) bool {
	return c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}

func prevByte(s string) byte {
	if s == "" {
		return ' '
	}
	return s[len(s)-1]
}

// dollarTag is the $tag$ that s starts with, or "".
func dollarTag(s string) string {
	for i := 1; i < len(s); i++ {
		if s[i] == '$' {
			if i > 1 && s[1] >= '0' && s[1] <= '9' {
				return ""
			}
			return s[:i+1]
		}
		if !identChar(s[i]) {
			return ""
		}
	}
	return ""
}

// metaArgs splits a meta-command's arguments: 'single' and "double" quotes, whitespace otherwise.
func metaArgs(s string) []string {
	var out []string
	var cur strings.Builder
	quote, in := byte(0), false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				if i+1 < len(s) && s[i+1] == quote {
					cur.WriteByte(c)
					i++
				} else {
					quote = 0
				}
			} else {
				cur.WriteByte(c)
			}
		case c == '\'' || c == '"':
			quote, in = c, true
		case c == ' ' || c == '\t':
			if in {
				out = append(out, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteByte(c)
			in = true
		}
	}
	if in {
		out = append(out, cur.String())
	}
	return out
}

// meta runs a meta-command (cmd is after the backslash).
func (ps *psql) meta(cmd string) (ok, quit bool) {
	name, argText, _ := strings.Cut(strings.TrimSpace(cmd), " ")
	args := metaArgs(argText)
	switch name {
	case "q", "quit":
		return true, true
	case "set":
		if len(args) == 0 {
			return true, false
		}
		ps.set(args[0], strings.Join(args[1:], ""))
		return true, false
	case "unset":
		if len(args) > 0 {
			delete(ps.vars, args[0])
			if args[0] == "ON_ERROR_STOP" {
				ps.onErrorStop = false
			}
		}
		return true, false
	case "c", "connect":
		next := ps.conn
		var pos []string
		for _, a := range args {
			if strings.HasPrefix(a, "-reuse-previous=") {
				continue
			}
			pos = append(pos, a)
		}
		fields := []*string{&next.database, &next.user, &next.host, &next.port}
		for i, a := range pos {
			if i >= len(fields) {
				break
			}
			if strings.Contains(a, "=") && i == 0 { // a connection string: dbname=x user=y
				for _, kv := range strings.Fields(a) {
					k, v, _ := strings.Cut(kv, "=")
					v = strings.Trim(v, "'")
					switch k {
					case "dbname":
						next.database = v
					case "user":
						next.user = v
					case "host":
						next.host = v
					case "port":
						next.port = v
					}
				}
				continue
			}
			if a != "-" {
				*fields[i] = a
			}
		}
		s, err := next.connect()
		if err != nil {
			ps.fail(`\connect: ` + err.Error())
			if ps.s != nil { // a script's failed \connect closes the old connection too
				ps.s.close()
				ps.s = nil
			}
			return false, false
		}
		if ps.s != nil {
			ps.s.close()
		}
		ps.s, ps.conn = s, next
		if !ps.quiet {
			fmt.Fprintf(ps.out, "You are now connected to database \"%s\" as user \"%s\".\n", next.database, next.user)
		}
		return true, false
	}
	ps.fail(fmt.Sprintf("invalid command \\%s", name))
	fmt.Fprintln(ps.errw, `Try \? for help.`)
	return false, false
}

// pgResult is one statement's answer.
type pgResult struct {
	columns []string
	types   []int32
	rows    [][]*string
	tag     string
	hasRows bool
}

// send runs one statement; COPY FROM stdin reads the script's lines from next up to "\.".
// It returns whether the statement worked and the next line to read.
func (ps *psql) send(sql string, lines []string, next int) (bool, int) {
	if ps.s == nil {
		ps.fail("You are currently not connected to a database.")
		return false, next
	}
	s := ps.s
	if _, err := s.conn.Write(pgMsg('Q', cstr(sql))); err != nil {
		return ps.lost(), next
	}
	var results []pgResult
	var cur *pgResult
	ok := true
	for {
		typ, payload, err := readPgMsg(s.r)
		if err != nil {
			return ps.lost(), next
		}
		switch typ {
		case 'T':
			results = append(results, pgResult{hasRows: true})
			cur = &results[len(results)-1]
			n := int(binary.BigEndian.Uint16(payload))
			payload = payload[2:]
			for i := 0; i < n; i++ {
				end := strings.IndexByte(string(payload), 0)
				cur.columns = append(cur.columns, string(payload[:end]))
				payload = payload[end+1:]
				cur.types = append(cur.types, int32(binary.BigEndian.Uint32(payload[6:10])))
				payload = payload[18:]
			}
		case 'D':
			if cur == nil {
				continue
			}
			cur.rows = append(cur.rows, dataRow(payload))
		case 'C':
			tag := strings.TrimRight(string(payload), "\x00")
			if cur != nil && cur.tag == "" {
				cur.tag = tag
			} else {
				results = append(results, pgResult{tag: tag})
			}
			cur = nil
		case 'G': // CopyInResponse: the script's lines up to \. are the data
			var data strings.Builder
			for next < len(lines) {
				l := lines[next]
				next++
				ps.line = next
				if strings.TrimRight(l, "\r\n") == `\.` {
					break
				}
				data.WriteString(l)
			}
			if ps.source == "" { // -c: the data comes from stdin
				b, _ := io.ReadAll(os.Stdin)
				data.Write(b)
			}
			msg := pgMsg('d', []byte(data.String()))
			if _, err := s.conn.Write(append(msg, pgMsg('c', nil)...)); err != nil {
				return ps.lost(), next
			}
		case 'E':
			f := errorFields(payload)
			ps.fail(fmt.Sprintf("%s:  %s", f['S'], f['M']))
			ok = false
		case 'N':
			f := errorFields(payload)
			ps.fail(fmt.Sprintf("%s:  %s", f['S'], f['M']))
		case 'Z':
			for _, r := range results {
				ps.print(r)
			}
			return ok, next
		}
	}
}

// lost is the server gone mid-script: psql says so and ends (exit 2).
func (ps *psql) lost() bool {
	ps.fail("server closed the connection unexpectedly\n\tThis probably means the server terminated abnormally\n\tbefore or while processing the request.")
	fmt.Fprintln(ps.errw, "psql: error: connection to server was lost")
	ps.s.conn.Close()
	ps.s = nil
	os.Exit(2)
	return false
}

// numericTypes are the type oids psql aligns right: int2/4/8, oid, xid, cid, float4/8, money, numeric.
var numericTypes = map[int32]bool{20: true, 21: true, 23: true, 26: true, 28: true, 29: true, 700: true, 701: true, 790: true, 1700: true}

// print writes a result as psql does (aligned or -A unaligned; -t drops header and footer;
// a command's tag unless -q).
func (ps *psql) print(r pgResult) {
	if !r.hasRows {
		if !ps.quiet && r.tag != "" {
			fmt.Fprintln(ps.out, r.tag)
		}
		return
	}
	ps.table(ps.out, r)
}

func (ps *psql) table(w io.Writer, r pgResult) {
	cell := func(v *string) string {
		if v == nil {
			return ""
		}
		return *v
	}
	footer := fmt.Sprintf("(%d rows)", len(r.rows))
	if len(r.rows) == 1 {
		footer = "(1 row)"
	}
	if ps.unaligned {
		if !ps.tuplesOnly {
			fmt.Fprintln(w, strings.Join(r.columns, "|"))
		}
		for _, row := range r.rows {
			cells := make([]string, len(row))
			for i, v := range row {
				cells[i] = cell(v)
			}
			fmt.Fprintln(w, strings.Join(cells, "|"))
		}
		if !ps.tuplesOnly {
			fmt.Fprintln(w, footer)
		}
		return
	}
	widths := make([]int, len(r.columns))
	for i, c := range r.columns { // the headers count with -t too, as in psql
		widths[i] = utf8.RuneCountInString(c)
		for _, row := range r.rows {
			if n := utf8.RuneCountInString(cell(row[i])); n > widths[i] {
				widths[i] = n
			}
		}
	}
	last := len(r.columns) - 1
	if !ps.tuplesOnly {
		var head, rule []string
		for i, c := range r.columns {
			pad := widths[i] - utf8.RuneCountInString(c)
			head = append(head, " "+strings.Repeat(" ", pad/2)+c+strings.Repeat(" ", pad-pad/2)+" ")
			rule = append(rule, strings.Repeat("-", widths[i]+2))
		}
		fmt.Fprintln(w, strings.Join(head, "|"))
		fmt.Fprintln(w, strings.Join(rule, "+"))
	}
	for _, row := range r.rows {
		var b strings.Builder
		for i, v := range row {
			text := cell(v)
			pad := strings.Repeat(" ", widths[i]-utf8.RuneCountInString(text))
			if i > 0 {
				b.WriteString("|")
			}
			switch {
			case numericTypes[r.types[i]]:
				b.WriteString(" " + pad + text)
			case i == last: // no blanks after the last cell
				b.WriteString(" " + text)
			default:
				b.WriteString(" " + text + pad)
			}
			if i < last {
				b.WriteString(" ")
			}
		}
		fmt.Fprintln(w, b.String())
	}
	if !ps.tuplesOnly {
		fmt.Fprintln(w, footer)
	}
	fmt.Fprintln(w)
}
