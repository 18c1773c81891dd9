package main

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestCRC64JonesCheckValue(t *testing.T) {
	if got := crc64Jones([]byte("123456789")); got != 0xe9c6d914c4b8d9ca {
		t.Fatalf("crc64Jones = %x", got)
	}
}

func TestRDBRoundTrip(t *testing.T) {
	expiry := time.Now().Add(time.Hour).Truncate(time.Millisecond)
	data := map[string][]byte{"foo": []byte("bar"), "long": bytes.Repeat([]byte("x"), 20000), "ttl": []byte("1")}
	file := encodeRDB("7.4.1", data, map[string]time.Time{"ttl": expiry})
	if !bytes.HasPrefix(file, []byte("REDIS0010")) {
		t.Fatalf("header %q", file[:9])
	}
	got, expires, err := decodeRDB(file)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, data) {
		t.Fatalf("keys differ: %v", got)
	}
	if !expires["ttl"].Equal(expiry) {
		t.Fatalf("expiry %v, want %v", expires["ttl"], expiry)
	}
	file[12] ^= 0xff
	if _, _, err := decodeRDB(file); err == nil {
		t.Fatal("a corrupted file decoded")
	}
}

func TestParseRule(t *testing.T) {
	hosts, err := parseRule("Host(`App.test`) || Host(`b.test`)")
	if err != nil || !reflect.DeepEqual(hosts, []string{"app.test", "b.test"}) {
		t.Fatalf("%v %v", hosts, err)
	}
	if _, err := parseRule("PathPrefix(`/x`)"); err == nil {
		t.Fatal("PathPrefix accepted")
	}
}

func TestCurlArgs(t *testing.T) {
	o, err := parseCurlArgs([]string{"-fsS", "-o", "/dev/null", "--max-time", "2.5", "-H", "Host: a", "-w%{http_code}", "http://x/"})
	if err != nil {
		t.Fatal(err)
	}
	if !o.fail || !o.silent || !o.showError || o.output != "/dev/null" || o.maxTime != 2500*time.Millisecond ||
		o.writeOut != "%{http_code}" || !reflect.DeepEqual(o.headers, []string{"Host: a"}) || !reflect.DeepEqual(o.urls, []string{"http://x/"}) {
		t.Fatalf("%+v", o)
	}
	if _, err := parseCurlArgs([]string{"--bogus", "http://x/"}); err == nil || !strings.Contains(err.Error(), "is unknown") {
		t.Fatalf("%v", err)
	}
}

func TestRedisCliFormats(t *testing.T) {
	arr := respValue{kind: '*', items: []respValue{{kind: '$', str: "a\"b"}, {kind: ':', num: 3}}}
	if got := formatTTY(arr, ""); got != "1) \"a\\\"b\"\n2) (integer) 3\n" {
		t.Fatalf("tty %q", got)
	}
	if got := formatRaw(arr); got != "a\"b\n3" {
		t.Fatalf("raw %q", got)
	}
	if got := formatTTY(respValue{kind: '$', null: true}, ""); got != "(nil)\n" {
		t.Fatalf("nil %q", got)
	}
}

func TestSplitArgs(t *testing.T) {
	got := splitArgs(`set "a b" 'c d' e\n`)
	if !reflect.DeepEqual(got, []string{"set", "a b", "c d", `e\n`}) {
		t.Fatalf("%q", got)
	}
}

func TestPgArgs(t *testing.T) {
	opts, rest, err := pgArgs("pg_dump", []string{"-U", "homelab", "-hdb", "--port=5433", "-f", "x.sql", "homelab"}, pgDumpSpec)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"username": "homelab", "host": "db", "port": "5433", "file": "x.sql"}
	if !reflect.DeepEqual(opts, want) || !reflect.DeepEqual(rest, []string{"homelab"}) {
		t.Fatalf("%v %v", opts, rest)
	}
}

func TestTraefikStatic(t *testing.T) {
	s := loadTraefikStatic([]string{"--ping", "--entrypoints.web.address=:8000", "--providers.docker=true"})
	if !s.enabled("TRAEFIK_PING") || !s.enabled("TRAEFIK_PROVIDERS_DOCKER") {
		t.Fatalf("%v", s.values)
	}
	eps := s.entryPoints(nil)
	if eps["web"] != 8000 || eps["traefik"] != 8080 {
		t.Fatalf("%v", eps)
	}
	if u, _ := s.pingURL(); u != "http://:8080/ping" {
		t.Fatal(u)
	}
}

func TestMetricsEscaping(t *testing.T) {
	var m metrics
	m.one("x_total", "counter", "help", 2, "path", "a\"b\\c\nd")
	want := "# HELP x_total help\n# TYPE x_total counter\nx_total{path=\"a\\\"b\\\\c\\nd\"} 2\n"
	if m.b.String() != want {
		t.Fatalf("%q", m.b.String())
	}
}

func TestRealFlagsSetListenAddressAndRootfs(t *testing.T) {
	c := config{kind: "node-exporter", tcp: []int{9100}, listen: map[int]string{}, rootfs: "/"}
	if err := c.readFlags([]string{"--path.rootfs=/host", "--web.listen-address", "127.0.0.12:9100", "--ignored"}); err != nil {
		t.Fatal(err)
	}
	if c.rootfs != "/host" || c.listen[9100] != "127.0.0.12" || !reflect.DeepEqual(c.tcp, []int{9100}) {
		t.Fatalf("%+v", c)
	}
	if err := c.readFlags([]string{"--web.listen-address=nonsense"}); err == nil {
		t.Fatal("a bad address was accepted")
	}
}
