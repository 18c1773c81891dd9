package main

import (
	"bytes"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// pgTestServer serves a stand-in PostgreSQL (POSTGRES_USER=homelab) on a unix socket in a
// temporary folder; the psql it returns connects there.
func pgTestServer(t *testing.T) (*pgServer, func() *psql) {
	t.Helper()
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := initPgData(data, "16.6"); err != nil {
		t.Fatal(err)
	}
	srv := &pgServer{stand: &stand{cfg: config{version: "16.6"}, log: log.New(io.Discard, "", 0)},
		dataDir: data, user: "homelab", database: "homelab"}
	ln, err := net.Listen("unix", filepath.Join(dir, ".s.PGSQL.5432"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go srv.accept(ln, true)
	return srv, func() *psql {
		c := pgConn{host: dir, port: "5432", user: "homelab", database: "postgres"}
		s, err := c.connect()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.close)
		return &psql{conn: c, s: s, vars: map[string]string{}, out: &bytes.Buffer{}, errw: &bytes.Buffer{}}
	}
}

func outputs(ps *psql) (string, string) {
	return ps.out.(*bytes.Buffer).String(), ps.errw.(*bytes.Buffer).String()
}

func TestPsqlPrintsAsPsqlDoes(t *testing.T) {
	_, client := pgTestServer(t)
	ps := client()
	if ok, _ := ps.send("SELECT count(*) FROM pg_database", nil, 0); !ok {
		t.Fatal(outputs(ps))
	}
	ps.tuplesOnly, ps.unaligned = true, true
	ps.send("SELECT count(*) FROM pg_database;", nil, 0)
	ps.tuplesOnly, ps.unaligned = false, true
	ps.send("SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1", nil, 0)
	out, _ := outputs(ps)
	want := " count \n-------\n     4\n(1 row)\n\n" + "4\n" + "datname\nhomelab\npostgres\ntemplate1\n(3 rows)\n"
	if out != want {
		t.Fatalf("got %q\nwant %q", out, want)
	}
}

func TestPsqlAlignsTextLeftAndCentresHeaders(t *testing.T) {
	ps := &psql{}
	var b bytes.Buffer
	ps.table(&b, pgResult{hasRows: true, columns: []string{"datname", "n"}, types: []int32{25, 20},
		rows: [][]*string{{strp("template1"), strp("12")}, {strp("x"), nil}}})
	want := "  datname  | n  \n-----------+----\n template1 | 12\n x         |   \n(2 rows)\n\n"
	if b.String() != want {
		t.Fatalf("got %q\nwant %q", b.String(), want)
	}
}

const testDump = `--
-- PostgreSQL database cluster dump
--

SET default_transaction_read_only = off;

CREATE ROLE homelab;
ALTER ROLE homelab WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;
CREATE ROLE reader;

CREATE DATABASE "media" WITH TEMPLATE = template0 ENCODING = 'UTF8' LOCALE_PROVIDER = libc LOCALE = 'en_US.utf8';
ALTER DATABASE media OWNER TO homelab;

\connect media

SELECT pg_catalog.set_config('search_path', '', false);
CREATE TABLE public.standin_files (
    path text NOT NULL, -- a comment; with a semicolon
    size bigint NOT NULL,
    sha256 text NOT NULL,
    content bytea
);
COPY public.standin_files (path, size, sha256, content) FROM stdin;
PG_VERSION	3	abc	\\x31360a
a\tb	0	e3b0	\N
\.

\connect postgres
`

func TestPsqlLoadsADumpAndStopsOnErrorWhenAsked(t *testing.T) {
	srv, client := pgTestServer(t)
	ps := client()
	ps.quiet, ps.source = true, "dump.sql"
	ok, _ := ps.runScript(testDump)
	out, errs := outputs(ps)
	// The dump's CREATE ROLE of the server's own user fails, as with the real server; the rest loads.
	if ok || errs != "psql:dump.sql:7: ERROR:  role \"homelab\" already exists\n" {
		t.Fatalf("ok=%v stderr %q", ok, errs)
	}
	if out != " set_config \n------------\n \n(1 row)\n\n" {
		t.Fatalf("stdout %q", out)
	}
	if !contains(srv.databases(), "media") || !contains(srv.roleNames(), "reader") {
		t.Fatalf("databases %v roles %v", srv.databases(), srv.roleNames())
	}
	table := srv.table("media", "standin_files")
	if table == nil || len(table.rows) != 2 || *table.rows[1][0] != "a\tb" || table.rows[1][3] != nil || *table.rows[0][3] != `\x31360a` {
		t.Fatalf("table %+v", table)
	}
	if ps.conn.database != "postgres" {
		t.Fatalf("connected to %q", ps.conn.database)
	}

	stop := client()
	stop.quiet, stop.source = true, "bad.sql"
	stop.set("ON_ERROR_STOP", "1")
	ok, stopped := stop.runScript("CREATE DATABASE music;\nCREAT DATABASE x;\nCREATE DATABASE films;\n")
	_, errs = outputs(stop)
	if ok || !stopped || errs != "psql:bad.sql:2: ERROR:  syntax error at or near \"CREAT\"\n" {
		t.Fatalf("ok=%v stopped=%v stderr %q", ok, stopped, errs)
	}
	if !contains(srv.databases(), "music") || contains(srv.databases(), "films") {
		t.Fatalf("databases %v", srv.databases())
	}
}

func TestPsqlFileExitCodes(t *testing.T) {
	_, client := pgTestServer(t)
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.sql")
	os.WriteFile(bad, []byte("SELECT 1;\nbogus;\nSELECT 2;\n"), 0o600)
	ps := client()
	if code := ps.runFile(bad); code != 0 {
		t.Fatalf("without ON_ERROR_STOP: %d", code)
	}
	out, _ := outputs(ps)
	if strings.Count(out, "(1 row)") != 2 {
		t.Fatalf("the statement after the error did not run: %q", out)
	}
	ps = client()
	ps.set("ON_ERROR_STOP", "on")
	if code := ps.runFile(bad); code != 3 {
		t.Fatalf("with ON_ERROR_STOP: %d", code)
	}
	if code := ps.runFile(filepath.Join(dir, "missing.sql")); code != 1 {
		t.Fatalf("a missing file: %d", code)
	}
	if _, errs := outputs(ps); !strings.HasSuffix(errs, "missing.sql: No such file or directory\n") {
		t.Fatalf("%q", errs)
	}
	ps = client()
	ps.quiet, ps.source = true, "c.sql"
	ok, _ := ps.runScript("\\connect nosuchdb\nSELECT 1;\n\\bogus\n")
	_, errs := outputs(ps)
	if ok || !strings.Contains(errs, "psql:c.sql:1: \\connect: connection to server on socket") ||
		!strings.Contains(errs, `FATAL:  database "nosuchdb" does not exist`) ||
		!strings.Contains(errs, "psql:c.sql:2: You are currently not connected to a database.\n") ||
		!strings.Contains(errs, "psql:c.sql:3: invalid command \\bogus\n") {
		t.Fatalf("%q", errs)
	}
}

func TestPsqlArgs(t *testing.T) {
	got := psqlActions([]string{"-U", "u", "-c", "SELECT 1", "-f/x.sql", "--command=SELECT 2", "--file", "y"})
	want := []psqlAction{{command: "SELECT 1"}, {file: "/x.sql"}, {command: "SELECT 2"}, {file: "y"}}
	if len(got) != len(want) {
		t.Fatalf("%v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%v", got)
		}
	}
	if _, _, err := pgArgs("psql", []string{"-Z"}, psqlSpec); err == nil {
		t.Fatal("-Z accepted")
	}
	if sqlPlain("SELECT 1 -- one\n /* two */ FROM  x") != "SELECT 1 FROM x" {
		t.Fatalf("%q", sqlPlain("SELECT 1 -- one\n /* two */ FROM  x"))
	}
	if got := metaArgs(`-reuse-previous=on "dbname='a b'" 'c''d'`); len(got) != 3 || got[1] != "dbname='a b'" || got[2] != "c'd" {
		t.Fatalf("%q", got)
	}
}

func TestDataRowReadsValuesAndNulls(t *testing.T) {
	// two values and a NULL: count 3, then "ab" (len 2), NULL (len -1), "" (len 0)
	payload := []byte{0, 3, 0, 0, 0, 2, 'a', 'b', 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}
	row := dataRow(payload)
	if len(row) != 3 || row[0] == nil || *row[0] != "ab" || row[1] != nil || row[2] == nil || *row[2] != "" {
		t.Fatalf("got %v", row)
	}
}
