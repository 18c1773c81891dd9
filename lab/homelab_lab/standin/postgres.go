package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The PostgreSQL stand-in speaks enough of the frontend/backend protocol (version 3.0) for
// pg_isready, pg_dump and pg_dumpall: SSLRequest ('N'), StartupMessage, trust over the unix
// socket, a cleartext password over TCP when POSTGRES_PASSWORD(_FILE) is set, and a few simple
// queries. Its only table, standin_files, lists the data directory's files.

const (
	pgSSLRequest    = 80877103
	pgGSSENCRequest = 80877104
	pgCancelRequest = 80877102
	pgProtocol3     = 196608
	pgSocketDir     = "/var/run/postgresql"
	pgContentLimit  = 4096
)

// pgDataDir is PGDATA, else the first volume, else the image's default.
func pgDataDir(cfg config) string {
	if d := os.Getenv("PGDATA"); d != "" {
		return d
	}
	if len(cfg.volumes) > 0 {
		return cfg.volumes[0]
	}
	return "/var/lib/postgresql/data"
}

func pgMajor(version string) string {
	major, _, _ := strings.Cut(version, ".")
	return major
}

// initPgData lays out a data directory on first boot, as initdb would (in miniature).
func initPgData(dir, version string) error {
	if _, err := os.Stat(filepath.Join(dir, "PG_VERSION")); err == nil {
		return nil
	}
	major := pgMajor(version) + "\n"
	page := func(tag string) []byte {
		b := make([]byte, 8192)
		copy(b[24:], tag)
		return b
	}
	files := map[string][]byte{
		"PG_VERSION":            []byte(major),
		"postgresql.conf":       []byte("# stand-in PostgreSQL configuration\nlisten_addresses = '*'\n"),
		"pg_hba.conf":           []byte("local all all trust\nhost all all all scram-sha-256\n"),
		"pg_ident.conf":         []byte("# MAPNAME SYSTEM-USERNAME PG-USERNAME\n"),
		"global/pg_control":     page("pg_control"),
		"global/1262":           page("pg_database"),
		"pg_wal/.keep":          nil,
		"base/1/PG_VERSION":     []byte(major),
		"base/1/1259":           page("pg_class"),
		"base/4/PG_VERSION":     []byte(major),
		"base/4/1259":           page("pg_class"),
		"base/5/PG_VERSION":     []byte(major),
		"base/5/1259":           page("pg_class"),
		"base/16384/PG_VERSION": []byte(major),
		"base/16384/1259":       page("pg_class"),
	}
	for name, data := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// pgServer is the PostgreSQL stand-in.
type pgServer struct {
	stand    *stand
	dataDir  string
	user     string
	database string
	password string
	pidSeq   atomic.Int32

	// What psql (a restored dump) made, in memory only: databases, roles, tables by database.
	mu      sync.Mutex
	created []string
	roles   []string
	tables  map[string]map[string]*pgTable
}

// pgTable is a table made by CREATE TABLE and filled by COPY ... FROM stdin (text columns).
type pgTable struct {
	columns []string
	rows    [][]*string
}

func (s *stand) startPostgres(ctx context.Context) error {
	ports := s.cfg.tcp
	if len(ports) == 0 {
		ports = []int{5432}
	}
	user := envOr("POSTGRES_USER", "postgres")
	srv := &pgServer{stand: s, dataDir: pgDataDir(s.cfg), user: user, database: envOr("POSTGRES_DB", user)}
	srv.password = os.Getenv("POSTGRES_PASSWORD")
	if file := os.Getenv("POSTGRES_PASSWORD_FILE"); file != "" {
		if b, err := os.ReadFile(file); err == nil {
			srv.password = strings.TrimRight(string(b), "\r\n")
		} else {
			s.log.Printf("POSTGRES_PASSWORD_FILE: %v", err)
		}
	}
	ln, err := s.listenTCP(ports[0])
	if err != nil {
		return err
	}
	go srv.accept(ln, false)
	socket := filepath.Join(pgSocketDir, fmt.Sprintf(".s.PGSQL.%d", ports[0]))
	if err := os.MkdirAll(pgSocketDir, 0o775); err != nil {
		s.log.Printf("unix socket: %v", err)
	} else {
		os.Remove(socket)
		if uln, err := net.Listen("unix", socket); err != nil {
			s.log.Printf("unix socket: %v", err)
		} else {
			os.Chmod(socket, 0o777)
			s.onClose(func() { uln.Close() })
			go srv.accept(uln, true)
		}
	}
	pidfile := filepath.Join(srv.dataDir, "postmaster.pid")
	pid := fmt.Sprintf("%d\n%s\n%d\n%d\n%s\n*\n", os.Getpid(), srv.dataDir, time.Now().Unix(), ports[0], pgSocketDir)
	if err := os.WriteFile(pidfile, []byte(pid), 0o600); err != nil {
		return err
	}
	s.onClose(func() { os.Remove(pidfile) })
	if len(ports) > 1 {
		return s.startHTTP(ports[1:])
	}
	return nil
}

func (p *pgServer) accept(ln net.Listener, local bool) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer conn.Close()
			if err := p.session(conn, local); err != nil && !errors.Is(err, io.EOF) {
				p.stand.log.Printf("postgres session: %v", err)
			}
		}()
	}
}

// pgMsg builds a backend message: type byte, int32 length, payload.
func pgMsg(typ byte, payload []byte) []byte {
	out := make([]byte, 5, 5+len(payload))
	out[0] = typ
	binary.BigEndian.PutUint32(out[1:], uint32(4+len(payload)))
	return append(out, payload...)
}

func cstr(s string) []byte { return append([]byte(s), 0) }

func int32b(v int32) []byte {
	b := make([]byte, 4)
	binary.BigEndian.PutUint32(b, uint32(v))
	return b
}

// pgError is an ErrorResponse with severity, SQLSTATE and message.
func pgError(severity, code, msg string) []byte {
	var p []byte
	p = append(p, 'S')
	p = append(p, cstr(severity)...)
	p = append(p, 'V')
	p = append(p, cstr(severity)...)
	p = append(p, 'C')
	p = append(p, cstr(code)...)
	p = append(p, 'M')
	p = append(p, cstr(msg)...)
	p = append(p, 0)
	return pgMsg('E', p)
}

func readStartup(r io.Reader) (code int32, payload []byte, err error) {
	var head [8]byte
	if _, err = io.ReadFull(r, head[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(head[:4])
	if n < 8 || n > 10000 {
		return 0, nil, fmt.Errorf("invalid startup packet length %d", n)
	}
	payload = make([]byte, n-8)
	_, err = io.ReadFull(r, payload)
	return int32(binary.BigEndian.Uint32(head[4:])), payload, err
}

func readPgMsg(r io.Reader) (byte, []byte, error) {
	var head [5]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(head[1:])
	if n < 4 || n > 1<<24 {
		return 0, nil, fmt.Errorf("invalid message length %d", n)
	}
	payload := make([]byte, n-4)
	_, err := io.ReadFull(r, payload)
	return head[0], payload, err
}

func (p *pgServer) session(conn net.Conn, local bool) error {
	r := bufio.NewReader(conn)
	var params map[string]string
	for params == nil {
		code, payload, err := readStartup(r)
		if err != nil {
			return err
		}
		switch code {
		case pgSSLRequest, pgGSSENCRequest:
			if _, err := conn.Write([]byte{'N'}); err != nil {
				return err
			}
		case pgCancelRequest:
			return nil
		case pgProtocol3:
			params = map[string]string{}
			parts := strings.Split(string(payload), "\x00")
			for i := 0; i+1 < len(parts); i += 2 {
				if parts[i] != "" {
					params[parts[i]] = parts[i+1]
				}
			}
		default:
			_, err := conn.Write(pgError("FATAL", "0A000", fmt.Sprintf("unsupported frontend protocol %d.%d", code>>16, code&0xffff)))
			return err
		}
	}
	user := params["user"]
	db := params["database"]
	if db == "" {
		db = user
	}
	if user != p.user && !contains(p.roleNames(), user) {
		_, err := conn.Write(pgError("FATAL", "28000", fmt.Sprintf("role \"%s\" does not exist", user)))
		return err
	}
	if !local && p.password != "" {
		if _, err := conn.Write(pgMsg('R', int32b(3))); err != nil {
			return err
		}
		typ, payload, err := readPgMsg(r)
		if err != nil {
			return err
		}
		if typ != 'p' || strings.TrimRight(string(payload), "\x00") != p.password {
			_, err := conn.Write(pgError("FATAL", "28P01", fmt.Sprintf("password authentication failed for user \"%s\"", user)))
			return err
		}
	}
	if !contains(p.databases(), db) {
		_, err := conn.Write(pgError("FATAL", "3D000", fmt.Sprintf("database \"%s\" does not exist", db)))
		return err
	}
	var out []byte
	out = append(out, pgMsg('R', int32b(0))...)
	for _, kv := range [][2]string{
		{"server_version", p.stand.cfg.version}, {"server_encoding", "UTF8"}, {"client_encoding", "UTF8"},
		{"DateStyle", "ISO, MDY"}, {"integer_datetimes", "on"}, {"standard_conforming_strings", "on"},
		{"TimeZone", envOr("TZ", "Etc/UTC")}, {"application_name", params["application_name"]},
		{"is_superuser", "on"}, {"session_authorization", user},
	} {
		out = append(out, pgMsg('S', append(cstr(kv[0]), cstr(kv[1])...))...)
	}
	key := make([]byte, 8)
	binary.BigEndian.PutUint32(key, uint32(1000+p.pidSeq.Add(1)))
	_, _ = rand.Read(key[4:])
	out = append(out, pgMsg('K', key)...)
	out = append(out, pgMsg('Z', []byte{'I'})...)
	if _, err := conn.Write(out); err != nil {
		return err
	}
	failed := false // in an extended-protocol exchange we do not support, until Sync
	for {
		typ, payload, err := readPgMsg(r)
		if err != nil {
			return err
		}
		switch typ {
		case 'X':
			return nil
		case 'Q':
			sql := strings.TrimRight(string(payload), "\x00")
			if copyIn.MatchString(sqlWords(sql)) {
				if err := p.copyIn(conn, r, db, sqlWords(sql)); err != nil {
					return err
				}
				continue
			}
			resp := p.query(db, user, sql)
			resp = append(resp, pgMsg('Z', []byte{'I'})...)
			if _, err := conn.Write(resp); err != nil {
				return err
			}
		case 'S':
			failed = false
			if _, err := conn.Write(pgMsg('Z', []byte{'I'})); err != nil {
				return err
			}
		case 'H':
		default:
			if !failed {
				failed = true
				if _, err := conn.Write(pgError("ERROR", "0A000", "the stand-in PostgreSQL speaks the simple query protocol only")); err != nil {
					return err
				}
			}
		}
	}
}

func (p *pgServer) databases() []string {
	dbs := []string{"postgres", "template0", "template1"}
	if !contains(dbs, p.database) {
		dbs = append(dbs, p.database)
	}
	p.mu.Lock()
	dbs = append(dbs, p.created...)
	p.mu.Unlock()
	sort.Strings(dbs)
	return dbs
}

// roleNames is POSTGRES_USER and the roles CREATE ROLE made.
func (p *pgServer) roleNames() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string{p.user}, p.roles...)
}

// pgRows answers a query with text columns and rows (nil cells are NULL).
func pgRows(columns []string, rows [][]*string) []byte {
	return pgTypedRows(columns, nil, rows)
}

// pgTypedRows is pgRows with each column's type oid (text, 25, where types is short).
func pgTypedRows(columns []string, types []int32, rows [][]*string) []byte {
	desc := make([]byte, 2)
	binary.BigEndian.PutUint16(desc, uint16(len(columns)))
	for i, c := range columns {
		oid := int32(25)
		if i < len(types) {
			oid = types[i]
		}
		desc = append(desc, cstr(c)...)
		desc = append(desc, 0, 0, 0, 0, 0, 0) // table oid, column number
		desc = append(desc, int32b(oid)...)
		desc = append(desc, 0xff, 0xff)    // typlen -1
		desc = append(desc, int32b(-1)...) // typmod
		desc = append(desc, 0, 0)          // text format
	}
	out := pgMsg('T', desc)
	for _, row := range rows {
		data := make([]byte, 2)
		binary.BigEndian.PutUint16(data, uint16(len(row)))
		for _, cell := range row {
			if cell == nil {
				data = append(data, int32b(-1)...)
				continue
			}
			data = append(data, int32b(int32(len(*cell)))...)
			data = append(data, *cell...)
		}
		out = append(out, pgMsg('D', data)...)
	}
	return append(out, pgMsg('C', cstr(fmt.Sprintf("SELECT %d", len(rows))))...)
}

func strp(s string) *string { return &s }

// query runs the statements of a simple query the stand-in knows.
func (p *pgServer) query(db, user, sql string) []byte {
	var out []byte
	ran := false
	for _, stmt := range strings.Split(sql, ";") {
		stmt = strings.TrimSpace(stmt)
		if stmt == "" {
			continue
		}
		plain := sqlPlain(stmt)
		lower := strings.ToLower(plain)
		if lower == "" {
			continue
		}
		ran = true
		first := strings.ToUpper(strings.Fields(lower)[0])
		if done, reply := p.ddl(db, lower); done {
			out = append(out, reply...)
			if reply[0] == 'E' {
				return out
			}
			continue
		}
		switch {
		case lower == "select version()":
			out = append(out, pgRows([]string{"version"}, [][]*string{{strp(fmt.Sprintf("PostgreSQL %s (stand-in) on x86_64-pc-linux-gnu", p.stand.cfg.version))}})...)
		case lower == "select current_database()":
			out = append(out, pgRows([]string{"current_database"}, [][]*string{{strp(db)}})...)
		case lower == "select current_user":
			out = append(out, pgRows([]string{"current_user"}, [][]*string{{strp(user)}})...)
		case strings.HasPrefix(lower, "show "):
			name := strings.TrimPrefix(lower, "show ")
			values := map[string]string{"server_version": p.stand.cfg.version, "data_directory": p.dataDir, "server_encoding": "UTF8"}
			if v, ok := values[name]; ok {
				out = append(out, pgRows([]string{name}, [][]*string{{strp(v)}})...)
			} else {
				out = append(out, pgError("ERROR", "42704", fmt.Sprintf("unrecognized configuration parameter \"%s\"", name))...)
				return out
			}
		case strings.HasPrefix(lower, "select pg_catalog.set_config("):
			args := strings.Split(strings.TrimSuffix(strings.TrimPrefix(lower, "select pg_catalog.set_config("), ")"), ",")
			value := ""
			if len(args) == 3 {
				value = strings.Trim(strings.TrimSpace(args[1]), "'")
			}
			out = append(out, pgRows([]string{"set_config"}, [][]*string{{strp(value)}})...)
		case strings.HasPrefix(lower, "select count(*) from "):
			reply := p.count(db, strings.TrimPrefix(lower, "select count(*) from "))
			out = append(out, reply...)
			if reply[0] == 'E' {
				return out
			}
		case strings.Contains(lower, "from pg_database"):
			var rows [][]*string
			for _, d := range p.databases() {
				if d != "template0" {
					rows = append(rows, []*string{strp(d)})
				}
			}
			out = append(out, pgRows([]string{"datname"}, rows)...)
		case strings.Contains(lower, "from pg_roles"):
			var rows [][]*string
			for _, r := range p.roleNames() {
				rows = append(rows, []*string{strp(r)})
			}
			out = append(out, pgRows([]string{"rolname"}, rows)...)
		case strings.Contains(lower, "from standin_files"):
			if db != p.database {
				out = append(out, pgError("ERROR", "42P01", "relation \"standin_files\" does not exist")...)
				return out
			}
			rows, err := listDataFiles(p.dataDir)
			if err != nil {
				out = append(out, pgError("ERROR", "58030", err.Error())...)
				return out
			}
			if t := p.table(db, "standin_files"); t != nil {
				rows = append(rows, t.rows...) // what COPY added
			}
			out = append(out, pgRows([]string{"path", "size", "sha256", "content"}, rows)...)
		case strings.HasPrefix(lower, "select "):
			value := strings.TrimSpace(stmt[len("select "):])
			if _, err := strconv.ParseInt(value, 10, 64); err == nil {
				out = append(out, pgRows([]string{"?column?"}, [][]*string{{strp(value)}})...)
			} else if len(value) >= 2 && value[0] == '\'' && value[len(value)-1] == '\'' {
				out = append(out, pgRows([]string{"?column?"}, [][]*string{{strp(strings.ReplaceAll(value[1:len(value)-1], "''", "'"))}})...)
			} else {
				out = append(out, pgError("ERROR", "0A000", "the stand-in PostgreSQL does not run this query")...)
				return out
			}
		case first == "SET" || first == "BEGIN" || first == "COMMIT" || first == "ROLLBACK":
			out = append(out, pgMsg('C', cstr(first))...)
		case !sqlCommands[first]:
			out = append(out, pgError("ERROR", "42601", fmt.Sprintf("syntax error at or near \"%s\"", strings.Fields(plain)[0]))...)
			return out
		default:
			out = append(out, pgError("ERROR", "0A000", fmt.Sprintf("the stand-in PostgreSQL does not run %s statements", first))...)
			return out
		}
	}
	if !ran {
		out = append(out, pgMsg('I', nil)...)
	}
	return out
}

// listDataFiles is standin_files: every file of the data directory with its size, sha256
// and, for small files, its content as bytea text (\x...).
func listDataFiles(dir string) ([][]*string, error) {
	var rows [][]*string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		sum := sha256.Sum256(data)
		var content *string
		if len(data) <= pgContentLimit {
			content = strp(`\x` + hex.EncodeToString(data))
		}
		rows = append(rows, []*string{strp(rel), strp(strconv.Itoa(len(data))), strp(hex.EncodeToString(sum[:])), content})
		return nil
	})
	return rows, err
}

// ---------------------------------------------------------------- the client side

// pgConn holds the connection options of libpq: -h/-p/-U/-d, else PGHOST/PGPORT/PGUSER/PGDATABASE.
type pgConn struct {
	host, port, user, database, password string
	timeout                              time.Duration
}

func defaultPgConn() pgConn {
	name := "root"
	if u, err := user.Current(); err == nil && u.Username != "" {
		name = u.Username
	}
	c := pgConn{
		host: envOr("PGHOST", pgSocketDir), port: envOr("PGPORT", "5432"), user: envOr("PGUSER", name),
		database: os.Getenv("PGDATABASE"), password: os.Getenv("PGPASSWORD"), timeout: 0,
	}
	return c
}

func (c pgConn) unix() bool { return strings.HasPrefix(c.host, "/") }

// where names the server as libpq's messages do.
func (c pgConn) where() string {
	if c.unix() {
		return fmt.Sprintf("connection to server on socket \"%s/.s.PGSQL.%s\" failed", c.host, c.port)
	}
	return fmt.Sprintf("connection to server at \"%s\", port %s failed", c.host, c.port)
}

func (c pgConn) dial() (net.Conn, error) {
	d := net.Dialer{Timeout: c.timeout}
	if c.unix() {
		return d.Dial("unix", filepath.Join(c.host, ".s.PGSQL."+c.port))
	}
	return d.Dial("tcp", net.JoinHostPort(c.host, c.port))
}

func dialHint(c pgConn, err error) string {
	reason := err.Error()
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		reason = op.Err.Error()
		var se *os.SyscallError
		if errors.As(op.Err, &se) {
			reason = se.Err.Error()
		}
	}
	if reason != "" {
		reason = strings.ToUpper(reason[:1]) + reason[1:]
	}
	if c.unix() {
		return fmt.Sprintf("%s: %s\n\tIs the server running locally and accepting connections on that socket?", c.where(), reason)
	}
	return fmt.Sprintf("%s: %s\n\tIs the server running on that host and accepting TCP/IP connections?", c.where(), reason)
}

func startupPacket(user, database string) []byte {
	var p []byte
	p = append(p, int32b(pgProtocol3)...)
	for _, kv := range [][2]string{{"user", user}, {"database", database}, {"application_name", "standin"}} {
		p = append(p, cstr(kv[0])...)
		p = append(p, cstr(kv[1])...)
	}
	p = append(p, 0)
	return append(int32b(int32(4+len(p))), p...)
}

// errorFields reads an ErrorResponse's fields by their code letter.
func errorFields(payload []byte) map[byte]string {
	out := map[byte]string{}
	for len(payload) > 1 {
		code := payload[0]
		end := 1
		for end < len(payload) && payload[end] != 0 {
			end++
		}
		out[code] = string(payload[1:end])
		if end >= len(payload) {
			break
		}
		payload = payload[end+1:]
	}
	return out
}

// pgSession is an authenticated connection ready for simple queries.
type pgSession struct {
	conn          net.Conn
	r             *bufio.Reader
	serverVersion string
}

// connect opens a session; its error message reads like libpq's.
func (c pgConn) connect() (*pgSession, error) {
	db := c.database
	if db == "" {
		db = c.user
	}
	conn, err := c.dial()
	if err != nil {
		return nil, errors.New(dialHint(c, err))
	}
	if c.timeout > 0 {
		conn.SetDeadline(time.Now().Add(c.timeout))
	}
	s := &pgSession{conn: conn, r: bufio.NewReader(conn)}
	if _, err := conn.Write(startupPacket(c.user, db)); err != nil {
		conn.Close()
		return nil, fmt.Errorf("%s: %v", c.where(), err)
	}
	for {
		typ, payload, err := readPgMsg(s.r)
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("%s: server closed the connection unexpectedly", c.where())
		}
		switch typ {
		case 'R':
			switch binary.BigEndian.Uint32(payload) {
			case 0:
			case 3:
				if c.password == "" {
					conn.Close()
					return nil, fmt.Errorf("%s: fe_sendauth: no password supplied", c.where())
				}
				if _, err := conn.Write(pgMsg('p', cstr(c.password))); err != nil {
					conn.Close()
					return nil, err
				}
			default:
				conn.Close()
				return nil, fmt.Errorf("%s: authentication method %d not supported", c.where(), binary.BigEndian.Uint32(payload))
			}
		case 'S':
			kv := strings.Split(string(payload), "\x00")
			if len(kv) >= 2 && kv[0] == "server_version" {
				s.serverVersion = kv[1]
			}
		case 'E':
			conn.Close()
			f := errorFields(payload)
			return nil, fmt.Errorf("%s: %s:  %s", c.where(), f['S'], f['M'])
		case 'Z':
			conn.SetDeadline(time.Time{})
			return s, nil
		}
	}
}

// query runs one simple query and returns its rows.
func (s *pgSession) query(sql string) ([][]*string, error) {
	if _, err := s.conn.Write(pgMsg('Q', cstr(sql))); err != nil {
		return nil, err
	}
	var rows [][]*string
	var failure error
	for {
		typ, payload, err := readPgMsg(s.r)
		if err != nil {
			return nil, err
		}
		switch typ {
		case 'D':
			rows = append(rows, dataRow(payload))
		case 'E':
			f := errorFields(payload)
			failure = fmt.Errorf("%s:  %s", f['S'], f['M'])
		case 'Z':
			return rows, failure
		}
	}
}

func (s *pgSession) close() {
	_, _ = s.conn.Write(pgMsg('X', nil))
	s.conn.Close()
}

// pgArgs parses libpq-style options: short (-h HOST, -hHOST) and long (--host=HOST, --host HOST).
// spec maps each option (short letter or long name) to its canonical name; a trailing ":" in the
// canonical name means it takes a value.
func pgArgs(prog string, args []string, spec map[string]string) (map[string]string, []string, error) {
	opts := map[string]string{}
	var rest []string
	for i := 0; i < len(args); i++ {
		arg := args[i]
		var name, value string
		hasValue := false
		switch {
		case strings.HasPrefix(arg, "--") && len(arg) > 2:
			name, value, hasValue = strings.Cut(arg[2:], "=")
		case strings.HasPrefix(arg, "-") && len(arg) > 1:
			name = arg[1:2]
			if len(arg) > 2 {
				value, hasValue = arg[2:], true
			}
		default:
			rest = append(rest, arg)
			continue
		}
		canon, ok := spec[name]
		if !ok {
			if len(name) == 1 {
				return nil, nil, fmt.Errorf("invalid option -- '%s'", name)
			}
			return nil, nil, fmt.Errorf("unrecognized option '--%s'", name)
		}
		if strings.HasSuffix(canon, ":") {
			if !hasValue {
				if i+1 >= len(args) {
					return nil, nil, fmt.Errorf("option requires an argument -- '%s'", name)
				}
				i++
				value = args[i]
			}
			opts[strings.TrimSuffix(canon, ":")] = value
		} else {
			if hasValue && len(name) == 1 {
				// Bundled short flags: -qw.
				more, r, err := pgArgs(prog, []string{"-" + value}, spec)
				if err != nil {
					return nil, nil, err
				}
				for k, v := range more {
					opts[k] = v
				}
				rest = append(rest, r...)
			}
			opts[canon] = "true"
		}
	}
	return opts, rest, nil
}

func (c *pgConn) apply(opts map[string]string) {
	if v, ok := opts["host"]; ok {
		c.host = v
	}
	if v, ok := opts["port"]; ok {
		c.port = v
	}
	if v, ok := opts["username"]; ok {
		c.user = v
	}
	if v, ok := opts["dbname"]; ok {
		c.database = v
	}
}

// dataRow is a DataRow message's values (nil for NULL).
func dataRow(payload []byte) []*string {
	n := int(binary.BigEndian.Uint16(payload))
	payload = payload[2:]
	row := make([]*string, n)
	for i := 0; i < n; i++ {
		l := int32(binary.BigEndian.Uint32(payload))
		payload = payload[4:]
		if l >= 0 {
			row[i] = strp(string(payload[:l]))
			payload = payload[l:]
		}
	}
	return row
}

// pgVersionOrHelp prints what -V ("prog (PostgreSQL) version") or --help (help; "" when prog has none) asks
// for and reports whether it did (the program then exits 0).
func pgVersionOrHelp(prog string, opts map[string]string, help string) bool {
	if opts["version"] != "" {
		fmt.Printf("%s (PostgreSQL) %s\n", prog, versionOf("postgres"))
		return true
	}
	if help != "" && opts["help"] != "" {
		fmt.Println(help)
		return true
	}
	return false
}

// ---------------------------------------------------------------- pg_isready

func runPgIsready(args []string) int {
	opts, _, err := pgArgs("pg_isready", args, map[string]string{
		"h": "host:", "host": "host:", "p": "port:", "port": "port:", "U": "username:", "username": "username:",
		"d": "dbname:", "dbname": "dbname:", "t": "timeout:", "timeout": "timeout:", "q": "quiet", "quiet": "quiet",
		"V": "version", "version": "version", "?": "help", "help": "help",
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "pg_isready: %v\nTry \"pg_isready --help\" for more information.\n", err)
		return 3
	}
	if pgVersionOrHelp("pg_isready", opts, "pg_isready issues a connection check to a PostgreSQL database.\n\nUsage:\n  pg_isready [OPTION]...") {
		return 0
	}
	c := defaultPgConn()
	c.apply(opts)
	c.timeout = 3 * time.Second
	if v, ok := opts["timeout"]; ok {
		secs, err := strconv.Atoi(v)
		if err != nil {
			fmt.Fprintf(os.Stderr, "pg_isready: invalid timeout \"%s\"\n", v)
			return 3
		}
		c.timeout = time.Duration(secs) * time.Second
	}
	code, state := pgPing(c)
	if opts["quiet"] == "" {
		fmt.Printf("%s:%s - %s\n", c.host, c.port, state)
	}
	return code
}

// pgPing is PQping: 0 accepting, 1 rejecting (starting up), 2 no response.
func pgPing(c pgConn) (int, string) {
	db := c.database
	if db == "" {
		db = c.user
	}
	conn, err := c.dial()
	if err != nil {
		return 2, "no response"
	}
	defer conn.Close()
	if c.timeout > 0 {
		conn.SetDeadline(time.Now().Add(c.timeout))
	}
	if _, err := conn.Write(startupPacket(c.user, db)); err != nil {
		return 2, "no response"
	}
	typ, payload, err := readPgMsg(bufio.NewReader(conn))
	if err != nil {
		return 2, "no response"
	}
	if typ == 'E' && errorFields(payload)['C'] == "57P03" {
		return 1, "rejecting connections"
	}
	return 0, "accepting connections"
}

// ---------------------------------------------------------------- pg_dump, pg_dumpall

var pgDumpSpec = map[string]string{
	"h": "host:", "host": "host:", "p": "port:", "port": "port:", "U": "username:", "username": "username:",
	"d": "dbname:", "dbname": "dbname:", "f": "file:", "file": "file:", "F": "format:", "format": "format:",
	"c": "clean", "clean": "clean", "C": "create", "create": "create", "if-exists": "if-exists",
	"w": "no-password", "no-password": "no-password", "W": "password", "password": "password",
	"O": "no-owner", "no-owner": "no-owner", "x": "no-privileges", "no-privileges": "no-privileges",
	"v": "verbose", "verbose": "verbose", "V": "version", "version": "version",
	"l": "database:", "database": "database:", "g": "globals-only", "globals-only": "globals-only",
	"r": "roles-only", "roles-only": "roles-only", "s": "schema-only", "schema-only": "schema-only",
	"a": "data-only", "data-only": "data-only",
}

func runPgDump(args []string) int {
	opts, rest, err := pgArgs("pg_dump", args, pgDumpSpec)
	if err != nil {
		fmt.Fprintf(os.Stderr, "pg_dump: error: %v\npg_dump: hint: Try \"pg_dump --help\" for more information.\n", err)
		return 1
	}
	if pgVersionOrHelp("pg_dump", opts, "") {
		return 0
	}
	if f := opts["format"]; f != "" && f != "p" && f != "plain" {
		fmt.Fprintf(os.Stderr, "pg_dump: error: the stand-in writes the plain format only (-F p), not \"%s\"\n", f)
		return 1
	}
	c := defaultPgConn()
	if len(rest) > 0 {
		c.database = rest[0]
	}
	c.apply(opts)
	if c.database == "" {
		c.database = c.user
	}
	var b strings.Builder
	if err := pgDumpDatabase(&b, c, opts, false); err != nil {
		fmt.Fprintf(os.Stderr, "pg_dump: error: %v\n", err)
		return 1
	}
	return writeDump("pg_dump", opts["file"], b.String())
}

func writeDump(prog, file, text string) int {
	if file == "" || file == "-" {
		if _, err := io.WriteString(os.Stdout, text); err != nil {
			fmt.Fprintf(os.Stderr, "%s: error: could not write to output file: %v\n", prog, err)
			return 1
		}
		return 0
	}
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "%s: error: could not open output file \"%s\": %v\n", prog, file, err)
		return 1
	}
	return 0
}

// copyText escapes a value for COPY's text format.
var copyEscaper = strings.NewReplacer(`\`, `\\`, "\t", `\t`, "\n", `\n`, "\r", `\r`)

func pgDumpDatabase(b *strings.Builder, c pgConn, opts map[string]string, inCluster bool) error {
	s, err := c.connect()
	if err != nil {
		return err
	}
	defer s.close()
	rows, qerr := s.query("SELECT path, size, sha256, content FROM standin_files ORDER BY path")
	hasTable := qerr == nil
	if qerr != nil && !strings.Contains(qerr.Error(), "does not exist") {
		return fmt.Errorf("query failed: %v", qerr)
	}
	owner := c.user
	version := versionOf("postgres")
	b.WriteString("--\n-- PostgreSQL database dump\n--\n\n")
	fmt.Fprintf(b, "-- Dumped from database version %s\n-- Dumped by pg_dump version %s\n\n", s.serverVersion, version)
	for _, line := range []string{
		"SET statement_timeout = 0;", "SET lock_timeout = 0;", "SET idle_in_transaction_session_timeout = 0;",
		"SET client_encoding = 'UTF8';", "SET standard_conforming_strings = on;",
		"SELECT pg_catalog.set_config('search_path', '', false);", "SET check_function_bodies = false;",
		"SET xmloption = content;", "SET client_min_messages = warning;", "SET row_security = off;",
	} {
		b.WriteString(line + "\n")
	}
	b.WriteString("\n")
	if opts["create"] != "" && !inCluster {
		fmt.Fprintf(b, "--\n-- Name: %s; Type: DATABASE; Schema: -; Owner: %s\n--\n\n", c.database, owner)
		fmt.Fprintf(b, "CREATE DATABASE %s WITH TEMPLATE = template0 ENCODING = 'UTF8' LOCALE_PROVIDER = libc LOCALE = 'en_US.utf8';\n\n\n", c.database)
		fmt.Fprintf(b, "ALTER DATABASE %s OWNER TO %s;\n\n\\connect %s\n\n", c.database, owner, c.database)
	}
	if hasTable {
		if opts["clean"] != "" {
			b.WriteString("DROP TABLE IF EXISTS public.standin_files;\n")
		}
		b.WriteString("SET default_tablespace = '';\n\nSET default_table_access_method = heap;\n\n")
		if opts["data-only"] == "" {
			fmt.Fprintf(b, "--\n-- Name: standin_files; Type: TABLE; Schema: public; Owner: %s\n--\n\n", owner)
			b.WriteString("CREATE TABLE public.standin_files (\n    path text NOT NULL,\n    size bigint NOT NULL,\n    sha256 text NOT NULL,\n    content bytea\n);\n\n\n")
			if opts["no-owner"] == "" {
				fmt.Fprintf(b, "ALTER TABLE public.standin_files OWNER TO %s;\n\n", owner)
			}
		}
		if opts["schema-only"] == "" {
			fmt.Fprintf(b, "--\n-- Data for Name: standin_files; Type: TABLE DATA; Schema: public; Owner: %s\n--\n\n", owner)
			b.WriteString("COPY public.standin_files (path, size, sha256, content) FROM stdin;\n")
			for _, row := range rows {
				cells := make([]string, len(row))
				for i, cell := range row {
					if cell == nil {
						cells[i] = `\N`
					} else {
						cells[i] = copyEscaper.Replace(*cell)
					}
				}
				b.WriteString(strings.Join(cells, "\t") + "\n")
			}
			b.WriteString("\\.\n\n\n")
		}
	}
	b.WriteString("--\n-- PostgreSQL database dump complete\n--\n\n")
	return nil
}

func runPgDumpall(args []string) int {
	opts, rest, err := pgArgs("pg_dumpall", args, pgDumpSpec)
	if err != nil || len(rest) > 0 {
		if err == nil {
			err = fmt.Errorf("too many command-line arguments (first is \"%s\")", rest[0])
		}
		fmt.Fprintf(os.Stderr, "pg_dumpall: error: %v\npg_dumpall: hint: Try \"pg_dumpall --help\" for more information.\n", err)
		return 1
	}
	if pgVersionOrHelp("pg_dumpall", opts, "") {
		return 0
	}
	c := defaultPgConn()
	c.apply(opts)
	c.database = envOr("PGDATABASE", "postgres")
	if v := opts["database"]; v != "" {
		c.database = v
	}
	s, err := c.connect()
	if err != nil {
		fmt.Fprintf(os.Stderr, "pg_dumpall: error: %v\n", err)
		return 1
	}
	roles, err1 := s.query("SELECT rolname FROM pg_roles ORDER BY 1")
	dbs, err2 := s.query("SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1")
	s.close()
	if err1 != nil || err2 != nil {
		if err1 == nil {
			err1 = err2
		}
		fmt.Fprintf(os.Stderr, "pg_dumpall: error: query failed: %v\n", err1)
		return 1
	}
	var b strings.Builder
	b.WriteString("--\n-- PostgreSQL database cluster dump\n--\n\n")
	b.WriteString("SET default_transaction_read_only = off;\n\nSET client_encoding = 'UTF8';\nSET standard_conforming_strings = on;\n\n")
	b.WriteString("--\n-- Roles\n--\n\n")
	for _, r := range roles {
		fmt.Fprintf(&b, "CREATE ROLE %s;\nALTER ROLE %s WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;\n", *r[0], *r[0])
	}
	b.WriteString("\n")
	if opts["globals-only"] == "" && opts["roles-only"] == "" {
		b.WriteString("--\n-- Databases\n--\n\n")
		for _, r := range dbs {
			name := *r[0]
			fmt.Fprintf(&b, "--\n-- Database \"%s\" dump\n--\n\n", name)
			if name != "postgres" && name != "template1" {
				fmt.Fprintf(&b, "--\n-- Name: %s; Type: DATABASE; Schema: -; Owner: %s\n--\n\n", name, c.user)
				fmt.Fprintf(&b, "CREATE DATABASE %s WITH TEMPLATE = template0 ENCODING = 'UTF8' LOCALE_PROVIDER = libc LOCALE = 'en_US.utf8';\n\n\n", name)
				fmt.Fprintf(&b, "ALTER DATABASE %s OWNER TO %s;\n\n", name, c.user)
			}
			fmt.Fprintf(&b, "\\connect %s\n\n", name)
			one := c
			one.database = name
			if err := pgDumpDatabase(&b, one, map[string]string{}, true); err != nil {
				fmt.Fprintf(os.Stderr, "pg_dumpall: error: %v\n", err)
				return 1
			}
		}
	}
	b.WriteString("--\n-- PostgreSQL database cluster dump complete\n--\n\n")
	return writeDump("pg_dumpall", opts["file"], b.String())
}
