package main

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
)

// What the PostgreSQL stand-in runs of a restored dump (what its pg_dumpall writes, loaded by
// psql): CREATE/ALTER ROLE, CREATE/ALTER/DROP DATABASE, CREATE/ALTER/DROP TABLE, COPY ... FROM
// stdin, and count(*) over pg_database, pg_roles and the tables. What they make lives in memory
// only (a restart forgets it), as a scratch database of a restore test needs.

// sqlCommands are the first words of SQL statements: any other first word is a syntax error.
var sqlCommands = map[string]bool{}

func init() {
	for _, w := range strings.Fields(`ABORT ALTER ANALYZE BEGIN CALL CHECKPOINT CLOSE CLUSTER COMMENT COMMIT COPY
		CREATE DEALLOCATE DECLARE DELETE DISCARD DO DROP END EXECUTE EXPLAIN FETCH GRANT IMPORT INSERT LISTEN LOAD
		LOCK MERGE MOVE NOTIFY PREPARE REASSIGN REFRESH REINDEX RELEASE RESET REVOKE ROLLBACK SAVEPOINT SECURITY
		SELECT SET SHOW START TABLE TRUNCATE UNLISTEN UPDATE VACUUM VALUES WITH`) {
		sqlCommands[w] = true
	}
}

// copyIn matches `COPY table [(columns)] FROM stdin` (in sqlWords form).
var copyIn = regexp.MustCompile(`^copy\s+([^\s(]+)\s*(?:\(([^)]*)\))?\s*from\s+stdin\s*;?$`)

// sqlPlain is a statement without comments, its whitespace runs made single spaces.
func sqlPlain(stmt string) string {
	var b strings.Builder
	quote := byte(0)
	for i := 0; i < len(stmt); i++ {
		c := stmt[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '-' && i+1 < len(stmt) && stmt[i+1] == '-':
			for i < len(stmt) && stmt[i] != '\n' {
				i++
			}
			c = ' '
		case c == '/' && i+1 < len(stmt) && stmt[i+1] == '*':
			end := strings.Index(stmt[i+2:], "*/")
			if end < 0 {
				i = len(stmt)
			} else {
				i += end + 3
			}
			b.WriteByte(' ')
			continue
		}
		if i < len(stmt) {
			b.WriteByte(c)
		}
	}
	return strings.Join(strings.Fields(b.String()), " ")
}

// sqlWords is sqlPlain in lower case.
func sqlWords(stmt string) string { return strings.ToLower(sqlPlain(stmt)) }

// pgIdent reads an identifier: "Quoted" as written, else folded to lower case.
func pgIdent(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return strings.ReplaceAll(s[1:len(s)-1], `""`, `"`)
	}
	return strings.ToLower(s)
}

// tableName is a table's name without the public schema.
func tableName(s string) string {
	return pgIdent(strings.TrimPrefix(strings.TrimPrefix(s, "public."), "PUBLIC."))
}

func pgTag(tag string) []byte { return pgMsg('C', cstr(tag)) }

func pgNotice(msg string) []byte {
	var p []byte
	for _, f := range [][2]string{{"S", "NOTICE"}, {"V", "NOTICE"}, {"C", "00000"}, {"M", msg}} {
		p = append(p, f[0][0])
		p = append(p, cstr(f[1])...)
	}
	return pgMsg('N', append(p, 0))
}

// table is db's table of that name that CREATE TABLE or COPY made, or nil.
func (p *pgServer) table(db, name string) *pgTable {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.tables[db][name]
}

// virtual reports the data directory's listing: standin_files in POSTGRES_DB.
func (p *pgServer) virtual(db, name string) bool { return db == p.database && name == "standin_files" }

func (p *pgServer) setTable(db, name string, t *pgTable) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tables == nil {
		p.tables = map[string]map[string]*pgTable{}
	}
	if p.tables[db] == nil {
		p.tables[db] = map[string]*pgTable{}
	}
	if t == nil {
		delete(p.tables[db], name)
	} else {
		p.tables[db][name] = t
	}
}

// words skips optional leading keywords ("if exists", "only") of a statement's name part.
func skipWords(w []string, lower ...string) []string {
	for _, kw := range lower {
		ks := strings.Fields(kw)
		if len(w) >= len(ks) && strings.EqualFold(strings.Join(w[:len(ks)], " "), kw) {
			w = w[len(ks):]
		}
	}
	return w
}

// ddl runs the statements of a dump that make things; done is false for any other statement.
func (p *pgServer) ddl(db, plain string) (done bool, reply []byte) {
	lower := strings.ToLower(plain)
	w := strings.Fields(plain)
	if len(w) < 2 {
		return false, nil
	}
	kind := strings.ToLower(w[0] + " " + w[1])
	switch kind {
	case "create role", "create user", "alter role", "alter user", "create database", "alter database",
		"drop database", "create table", "alter table", "drop table":
	default:
		return p.selectTable(db, lower)
	}
	rest := skipWords(w[2:], "if not exists", "if exists", "only")
	if len(rest) == 0 {
		return true, pgError("ERROR", "42601", "syntax error at end of input")
	}
	ifExists := strings.Contains(strings.ToLower(strings.Join(w[2:len(w)-len(rest)], " ")), "exists")
	switch kind {
	case "create role", "create user":
		name := pgIdent(rest[0])
		if contains(p.roleNames(), name) {
			return true, pgError("ERROR", "42710", fmt.Sprintf("role \"%s\" already exists", name))
		}
		p.mu.Lock()
		p.roles = append(p.roles, name)
		p.mu.Unlock()
		return true, pgTag("CREATE ROLE")
	case "alter role", "alter user":
		if name := pgIdent(rest[0]); !contains(p.roleNames(), name) {
			return true, pgError("ERROR", "42704", fmt.Sprintf("role \"%s\" does not exist", name))
		}
		return true, pgTag("ALTER ROLE")
	case "create database":
		name := pgIdent(rest[0])
		if contains(p.databases(), name) {
			return true, pgError("ERROR", "42P04", fmt.Sprintf("database \"%s\" already exists", name))
		}
		p.mu.Lock()
		p.created = append(p.created, name)
		p.mu.Unlock()
		return true, pgTag("CREATE DATABASE")
	case "alter database":
		if name := pgIdent(rest[0]); !contains(p.databases(), name) {
			return true, pgError("ERROR", "3D000", fmt.Sprintf("database \"%s\" does not exist", name))
		}
		return true, pgTag("ALTER DATABASE")
	case "drop database":
		name := pgIdent(rest[0])
		p.mu.Lock()
		defer p.mu.Unlock()
		for i, d := range p.created {
			if d == name {
				p.created = append(p.created[:i:i], p.created[i+1:]...)
				delete(p.tables, name)
				return true, pgTag("DROP DATABASE")
			}
		}
		switch {
		case name == db:
			return true, pgError("ERROR", "55006", "cannot drop the currently open database")
		case name == "postgres" || name == "template0" || name == "template1" || name == p.database:
			return true, pgError("ERROR", "0A000", fmt.Sprintf("the stand-in PostgreSQL keeps database \"%s\"", name))
		case ifExists:
			return true, append(pgNotice(fmt.Sprintf("database \"%s\" does not exist, skipping", name)), pgTag("DROP DATABASE")...)
		}
		return true, pgError("ERROR", "3D000", fmt.Sprintf("database \"%s\" does not exist", name))
	case "create table":
		name, _, _ := strings.Cut(rest[0], "(")
		name = tableName(name)
		if p.virtual(db, name) || p.table(db, name) != nil {
			if ifExists {
				return true, append(pgNotice(fmt.Sprintf("relation \"%s\" already exists, skipping", name)), pgTag("CREATE TABLE")...)
			}
			return true, pgError("ERROR", "42P07", fmt.Sprintf("relation \"%s\" already exists", name))
		}
		open, end := strings.Index(plain, "("), strings.LastIndex(plain, ")")
		if open < 0 || end < open {
			return true, pgError("ERROR", "42601", "syntax error at end of input")
		}
		t := &pgTable{}
		for _, col := range splitTop(plain[open+1 : end]) {
			f := strings.Fields(col)
			if len(f) == 0 {
				continue
			}
			switch strings.ToUpper(f[0]) {
			case "CONSTRAINT", "PRIMARY", "UNIQUE", "CHECK", "FOREIGN", "EXCLUDE", "LIKE":
				continue
			}
			t.columns = append(t.columns, pgIdent(f[0]))
		}
		p.setTable(db, name, t)
		return true, pgTag("CREATE TABLE")
	case "alter table":
		if name := tableName(rest[0]); !p.virtual(db, name) && p.table(db, name) == nil {
			if ifExists {
				return true, append(pgNotice(fmt.Sprintf("relation \"%s\" does not exist, skipping", name)), pgTag("ALTER TABLE")...)
			}
			return true, pgError("ERROR", "42P01", fmt.Sprintf("relation \"%s\" does not exist", name))
		}
		return true, pgTag("ALTER TABLE")
	default: // drop table
		name := tableName(rest[0])
		switch {
		case p.table(db, name) != nil && !p.virtual(db, name):
			p.setTable(db, name, nil)
		case p.virtual(db, name):
			return true, pgError("ERROR", "0A000", "the stand-in PostgreSQL keeps standin_files (it lists the data directory)")
		case ifExists:
			return true, append(pgNotice(fmt.Sprintf("table \"%s\" does not exist, skipping", name)), pgTag("DROP TABLE")...)
		default:
			return true, pgError("ERROR", "42P01", fmt.Sprintf("table \"%s\" does not exist", name))
		}
		return true, pgTag("DROP TABLE")
	}
}

// selectTable answers `SELECT ... FROM t` of a table CREATE TABLE made: every column, every row.
func (p *pgServer) selectTable(db, lower string) (bool, []byte) {
	if !strings.HasPrefix(lower, "select ") || strings.HasPrefix(lower, "select count(*) from ") {
		return false, nil
	}
	_, from, ok := strings.Cut(lower, " from ")
	if !ok {
		return false, nil
	}
	name := tableName(strings.Fields(from)[0])
	t := p.table(db, name)
	if t == nil || p.virtual(db, name) {
		return false, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return true, pgRows(t.columns, t.rows)
}

// splitTop splits a column list at its top-level commas.
func splitTop(s string) []string {
	var out []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '(':
			depth++
		case ')':
			depth--
		case ',':
			if depth == 0 {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}

// count answers `SELECT count(*) FROM rest` (rest in lower case).
func (p *pgServer) count(db, rest string) []byte {
	from, where, _ := strings.Cut(strings.TrimSuffix(rest, ";"), " where ")
	name := strings.TrimPrefix(tableName(strings.TrimSpace(from)), "pg_catalog.")
	n := 0
	switch {
	case name == "pg_database":
		for _, d := range p.databases() {
			if where == "" || (where == "datallowconn" && d != "template0") {
				n++
			}
		}
		if where != "" && where != "datallowconn" {
			return pgError("ERROR", "0A000", "the stand-in PostgreSQL does not run this query")
		}
	case where != "":
		return pgError("ERROR", "0A000", "the stand-in PostgreSQL does not run this query")
	case name == "pg_roles":
		n = len(p.roleNames())
	case p.virtual(db, name):
		rows, err := listDataFiles(p.dataDir)
		if err != nil {
			return pgError("ERROR", "58030", err.Error())
		}
		n = len(rows)
		if t := p.table(db, name); t != nil {
			n += len(t.rows)
		}
	default:
		t := p.table(db, name)
		if t == nil {
			return pgError("ERROR", "42P01", fmt.Sprintf("relation \"%s\" does not exist", name))
		}
		p.mu.Lock()
		n = len(t.rows)
		p.mu.Unlock()
	}
	return pgTypedRows([]string{"count"}, []int32{20}, [][]*string{{strp(strconv.Itoa(n))}})
}

// copyUnescaper reads COPY's text format.
var copyUnescaper = strings.NewReplacer(`\\`, `\`, `\t`, "\t", `\n`, "\n", `\r`, "\r")

// copyIn runs `COPY t FROM stdin`: CopyInResponse, CopyData until CopyDone, then COPY n.
func (p *pgServer) copyIn(conn net.Conn, r *bufio.Reader, db, stmt string) error {
	m := copyIn.FindStringSubmatch(stmt)
	name := tableName(m[1])
	t := p.table(db, name)
	virtual := p.virtual(db, name)
	fail := func(code, msg string) error {
		_, err := conn.Write(append(pgError("ERROR", code, msg), pgMsg('Z', []byte{'I'})...))
		return err
	}
	if t == nil && !virtual {
		return fail("42P01", fmt.Sprintf("relation \"%s\" does not exist", name))
	}
	columns := []string{"path", "size", "sha256", "content"}
	if t != nil {
		columns = t.columns
	}
	if m[2] != "" {
		columns = nil
		for _, c := range strings.Split(m[2], ",") {
			columns = append(columns, pgIdent(strings.TrimSpace(c)))
		}
	}
	resp := []byte{0, 0, 0}
	binary.BigEndian.PutUint16(resp[1:], uint16(len(columns)))
	resp = append(resp, make([]byte, 2*len(columns))...)
	if _, err := conn.Write(pgMsg('G', resp)); err != nil {
		return err
	}
	var data []byte
	for done := false; !done; {
		typ, payload, err := readPgMsg(r)
		if err != nil {
			return err
		}
		switch typ {
		case 'd':
			data = append(data, payload...)
		case 'c':
			done = true
		case 'f':
			return fail("57014", "COPY from stdin failed: "+strings.TrimRight(string(payload), "\x00"))
		case 'H', 'S':
		default:
			return fail("08P01", fmt.Sprintf("unexpected message type 0x%02X during COPY from stdin", typ))
		}
	}
	var rows [][]*string
	for i, line := range strings.Split(string(data), "\n") {
		if line == `\.` {
			break
		}
		if line == "" && i == strings.Count(string(data), "\n") {
			break
		}
		cells := strings.Split(line, "\t")
		if len(cells) < len(columns) {
			return fail("22P04", fmt.Sprintf("missing data for column \"%s\"", columns[len(cells)]))
		}
		if len(cells) > len(columns) {
			return fail("22P04", "extra data after last expected column")
		}
		row := make([]*string, len(cells))
		for j, c := range cells {
			if c != `\N` {
				row[j] = strp(copyUnescaper.Replace(c))
			}
		}
		rows = append(rows, row)
	}
	p.mu.Lock()
	if t == nil {
		t = &pgTable{columns: columns}
		if p.tables == nil {
			p.tables = map[string]map[string]*pgTable{}
		}
		if p.tables[db] == nil {
			p.tables[db] = map[string]*pgTable{}
		}
		p.tables[db][name] = t
	}
	t.rows = append(t.rows, rows...)
	p.mu.Unlock()
	_, err := conn.Write(append(pgTag(fmt.Sprintf("COPY %d", len(rows))), pgMsg('Z', []byte{'I'})...))
	return err
}
