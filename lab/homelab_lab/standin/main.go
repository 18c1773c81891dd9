// Command standin is the rehearsal lab's stand-in for a homelab service.
//
// It is one static program with several names, selected by the base name of
// argv[0] as busybox does (or by the first argument when called as standin):
//
//	standin     the container's entrypoint: serves the service (STANDIN_* environment)
//	curl        the subset of curl that healthchecks use
//	pg_isready  PostgreSQL's connection check
//	pg_dump     a plain-text SQL dump of the stand-in's database
//	pg_dumpall  the same for the whole cluster
//	psql        runs SQL (-c) and scripts (-f), such as a pg_dumpall file, on the server
//	redis-cli   a RESP client
//	traefik     `traefik healthcheck --ping`, `traefik version`; plain `traefik` serves
//
// The entrypoint reads:
//
//	STANDIN_SERVICE  the service's name (default "standin")
//	STANDIN_KIND     http | postgres | redis | traefik | node-exporter | cadvisor (default http)
//	STANDIN_PORTS    ports to serve, space-separated: "8989 9000/udp"
//	STANDIN_HEALTH   the HTTP path that answers 200, or "tcp"
//	STANDIN_VOLUMES  the service's volume paths, space-separated
//	STANDIN_VERSION  the version it reports (default per kind)
//
// Only the Go standard library is used.
package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

type applet func(args []string) int

var applets map[string]applet

func init() {
	applets = map[string]applet{
		"standin":    runStandin,
		"curl":       runCurl,
		"pg_isready": runPgIsready,
		"pg_dump":    runPgDump,
		"pg_dumpall": runPgDumpall,
		"psql":       runPsql,
		"redis-cli":  runRedisCli,
		"traefik":    runTraefik,
	}
}

func main() {
	name := filepath.Base(os.Args[0])
	args := os.Args[1:]
	if run, ok := applets[name]; ok && name != "standin" {
		os.Exit(run(args))
	}
	// Called as standin (or under any other name): `standin APPLET ARGS...` runs an applet,
	// `standin --list` lists them, anything else is the entrypoint with its arguments.
	if len(args) > 0 {
		if args[0] == "--list" {
			names := make([]string, 0, len(applets))
			for n := range applets {
				names = append(names, n)
			}
			sort.Strings(names)
			fmt.Println(strings.Join(names, "\n"))
			return
		}
		if run, ok := applets[args[0]]; ok && args[0] != "standin" {
			os.Exit(run(args[1:]))
		}
	}
	os.Exit(runStandin(args))
}

// config is the entrypoint's configuration, from its environment.
type config struct {
	service string
	kind    string
	tcp     []int
	udp     []int
	health  string
	volumes []string
	version string
	args    []string
	listen  map[int]string // port -> the address to bind it on (default: every address)
	rootfs  string         // node-exporter's --path.rootfs
}

var defaultVersions = map[string]string{
	"http":          "1.0",
	"postgres":      "16.6",
	"redis":         "7.4.1",
	"traefik":       "3.2.3",
	"node-exporter": "1.8.2",
	"cadvisor":      "0.49.1",
}

func loadConfig(args []string) (config, error) {
	c := config{
		service: envOr("STANDIN_SERVICE", "standin"),
		kind:    envOr("STANDIN_KIND", "http"),
		health:  envOr("STANDIN_HEALTH", "tcp"),
		volumes: strings.Fields(os.Getenv("STANDIN_VOLUMES")),
		args:    args,
	}
	if _, ok := defaultVersions[c.kind]; !ok {
		return c, fmt.Errorf("STANDIN_KIND=%q is not one of http, postgres, redis, traefik, node-exporter, cadvisor", c.kind)
	}
	c.version = versionOf(c.kind)
	c.listen, c.rootfs = map[int]string{}, "/"
	for _, spec := range strings.Fields(os.Getenv("STANDIN_PORTS")) {
		port, proto, _ := strings.Cut(spec, "/")
		var n int
		if _, err := fmt.Sscanf(port, "%d", &n); err != nil || n <= 0 || n > 65535 {
			return c, fmt.Errorf("STANDIN_PORTS: %q is not a port", spec)
		}
		switch proto {
		case "", "tcp":
			c.tcp = append(c.tcp, n)
		case "udp":
			c.udp = append(c.udp, n)
		default:
			return c, fmt.Errorf("STANDIN_PORTS: %q: protocol must be tcp or udp", spec)
		}
	}
	if c.kind != "traefik" {
		if err := c.readFlags(args); err != nil {
			return c, err
		}
	}
	return c, nil
}

// readFlags honours the real programs' flags that change where they listen or what they read
// (a Compose `command:` is the entrypoint's arguments): --web.listen-address=[HOST]:PORT
// (node-exporter, Prometheus) and --path.rootfs=DIR (node-exporter). Other arguments are ignored.
func (c *config) readFlags(args []string) error {
	for i := 0; i < len(args); i++ {
		name, value, hasValue := strings.Cut(strings.TrimLeft(args[i], "-"), "=")
		if !strings.HasPrefix(args[i], "--") {
			continue
		}
		if !hasValue && (name == "web.listen-address" || name == "path.rootfs") && i+1 < len(args) {
			i++
			value = args[i]
		}
		switch name {
		case "web.listen-address":
			host, port, err := net.SplitHostPort(value)
			n, perr := strconv.Atoi(port)
			if err != nil || perr != nil || n <= 0 || n > 65535 {
				return fmt.Errorf("--web.listen-address=%s: want [HOST]:PORT", value)
			}
			c.listen[n] = host
			if !containsInt(c.tcp, n) {
				c.tcp = append(c.tcp, n)
			}
		case "path.rootfs":
			c.rootfs = value
		}
	}
	return nil
}

func containsInt(list []int, n int) bool {
	for _, x := range list {
		if x == n {
			return true
		}
	}
	return false
}

// versionOf is the version a stand-in reports: STANDIN_VERSION (an image tag such as "v3.2.3"
// reads as "3.2.3"), else the kind's default.
func versionOf(kind string) string {
	return strings.TrimPrefix(envOr("STANDIN_VERSION", defaultVersions[kind]), "v")
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

func errorf(prog, format string, a ...any) {
	fmt.Fprintf(os.Stderr, prog+": "+format+"\n", a...)
}
