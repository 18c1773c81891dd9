package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// traefikStatic is the part of traefik's static configuration the stand-in honours, read as
// traefik reads it from TRAEFIK_* environment variables and --flags (flags win).
type traefikStatic struct {
	values map[string]string // TRAEFIK_ENTRYPOINTS_WEB_ADDRESS -> ":80"
}

func loadTraefikStatic(args []string) traefikStatic {
	values := map[string]string{}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "TRAEFIK_") {
			values[k] = v
		}
	}
	for _, arg := range args {
		flag, ok := cutPrefix(arg, "--")
		if !ok {
			continue
		}
		k, v, hasValue := strings.Cut(flag, "=")
		if !hasValue {
			v = "true"
		}
		values["TRAEFIK_"+strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(k))] = v
	}
	return traefikStatic{values}
}

func (t traefikStatic) get(key, fallback string) string {
	if v, ok := t.values[key]; ok && v != "" {
		return v
	}
	return fallback
}

func (t traefikStatic) enabled(key string) bool {
	v, ok := t.values[key]
	if !ok {
		// A section is enabled by any of its options (TRAEFIK_PING_ENTRYPOINT enables ping).
		for k := range t.values {
			if strings.HasPrefix(k, key+"_") {
				return true
			}
		}
		return false
	}
	b, err := strconv.ParseBool(v)
	return err == nil && b
}

// entryPoints maps entry point names to ports; the `traefik` entry point (ping, api, metrics)
// exists when one of those is enabled, on :8080 unless configured.
func (t traefikStatic) entryPoints(fallbackPorts []int) map[string]int {
	eps := map[string]int{}
	for k, v := range t.values {
		rest, ok := cutPrefix(k, "TRAEFIK_ENTRYPOINTS_")
		if !ok || !strings.HasSuffix(rest, "_ADDRESS") {
			continue
		}
		name := strings.ToLower(strings.TrimSuffix(rest, "_ADDRESS"))
		addr, proto, _ := strings.Cut(v, "/")
		if proto == "udp" {
			continue
		}
		if _, port, err := net.SplitHostPort(addr); err == nil {
			if n, err := strconv.Atoi(port); err == nil {
				eps[name] = n
			}
		}
	}
	if len(eps) == 0 {
		for _, p := range fallbackPorts {
			switch p {
			case 80:
				eps["web"] = p
			case 443:
				eps["websecure"] = p
			case 8080:
				eps["traefik"] = p
			default:
				eps[fmt.Sprintf("port%d", p)] = p
			}
		}
		if len(eps) == 0 {
			eps["http"] = 80
		}
	}
	if _, ok := eps["traefik"]; !ok && (t.enabled("TRAEFIK_PING") || t.enabled("TRAEFIK_API") || t.enabled("TRAEFIK_METRICS_PROMETHEUS")) {
		eps["traefik"] = 8080
	}
	return eps
}

// pingURL is the URL `traefik healthcheck` calls, as traefik prints it.
func (t traefikStatic) pingURL() (string, error) {
	ep := t.get("TRAEFIK_PING_ENTRYPOINT", "traefik")
	addr := t.get("TRAEFIK_ENTRYPOINTS_"+strings.ToUpper(ep)+"_ADDRESS", "")
	if addr == "" {
		if ep != "traefik" {
			return "", fmt.Errorf("ping: missing %s entry point", ep)
		}
		addr = ":8080"
	}
	addr, _, _ = strings.Cut(addr, "/")
	return "http://" + addr + "/ping", nil
}

// ---------------------------------------------------------------- the traefik command

func runTraefik(args []string) int {
	if len(args) > 0 {
		switch args[0] {
		case "healthcheck":
			return traefikHealthcheck(args[1:])
		case "version":
			fmt.Printf("Version:      %s\nCodename:     standin\nGo version:   %s\nBuilt:        standin\nOS/Arch:      %s/%s\n",
				versionOf("traefik"), runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return 0
		}
	}
	cfg, err := loadConfig(args)
	if err != nil {
		errorf("traefik", "%v", err)
		return 2
	}
	cfg.kind = "traefik"
	cfg.version = versionOf("traefik")
	return serve(cfg)
}

func traefikHealthcheck(args []string) int {
	static := loadTraefikStatic(args)
	if !static.enabled("TRAEFIK_PING") {
		fmt.Println("Please enable `ping` to use health check")
		return 1
	}
	pingURL, err := static.pingURL()
	if err != nil {
		fmt.Printf("Error calling healthcheck: %v\n", err)
		return 1
	}
	target := strings.Replace(pingURL, "http://:", "http://127.0.0.1:", 1)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
	resp, err := client.Get(target)
	if err != nil {
		fmt.Printf("Error calling healthcheck: %v\n", err)
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Printf("Bad healthcheck status: %d\n", resp.StatusCode)
		return 1
	}
	fmt.Printf("OK: %s\n", pingURL)
	return 0
}

// ---------------------------------------------------------------- the traefik kind

// route is one router of traefik's docker provider: its hosts, entry points and target.
type route struct {
	Name        string   `json:"name"`
	Rule        string   `json:"rule"`
	Hosts       []string `json:"-"`
	EntryPoints []string `json:"entryPoints,omitempty"`
	Service     string   `json:"service"`
	Target      string   `json:"target"`
	Priority    int      `json:"priority"`
}

type traefikRouter struct {
	stand            *stand
	docker           *dockerClient
	enabled          bool
	exposedByDefault bool
	network          string
	self             string

	mu      sync.RWMutex
	routes  []route
	updated time.Time
	lastErr string
	logged  map[string]bool
}

func (s *stand) startTraefik(ctx context.Context) error {
	static := loadTraefikStatic(s.cfg.args)
	hostname, _ := os.Hostname()
	r := &traefikRouter{
		stand:            s,
		docker:           newDockerClient(static.get("TRAEFIK_PROVIDERS_DOCKER_ENDPOINT", "unix:///var/run/docker.sock")),
		enabled:          static.enabled("TRAEFIK_PROVIDERS_DOCKER"),
		exposedByDefault: static.get("TRAEFIK_PROVIDERS_DOCKER_EXPOSEDBYDEFAULT", "true") != "false",
		network:          static.get("TRAEFIK_PROVIDERS_DOCKER_NETWORK", ""),
		self:             hostname,
		logged:           map[string]bool{},
	}
	eps := static.entryPoints(s.cfg.tcp)
	names := make([]string, 0, len(eps))
	for name := range eps {
		names = append(names, name)
	}
	sort.Strings(names)
	pingEP := static.get("TRAEFIK_PING_ENTRYPOINT", "traefik")
	metricsEP := static.get("TRAEFIK_METRICS_PROMETHEUS_ENTRYPOINT", "traefik")
	for _, name := range names {
		name := name
		mux := http.NewServeMux()
		if static.enabled("TRAEFIK_PING") && name == pingEP {
			mux.HandleFunc("/ping", func(w http.ResponseWriter, req *http.Request) {
				s.count("/ping")
				fmt.Fprint(w, "OK")
			})
		}
		if static.enabled("TRAEFIK_METRICS_PROMETHEUS") && name == metricsEP {
			mux.HandleFunc("/metrics", func(w http.ResponseWriter, req *http.Request) {
				s.count("/metrics")
				s.serveMetrics(w, req)
			})
		}
		if name == "traefik" && (static.enabled("TRAEFIK_API_INSECURE") || static.enabled("TRAEFIK_API")) {
			mux.HandleFunc("/api/http/routers", func(w http.ResponseWriter, req *http.Request) {
				s.count("other")
				w.Header().Set("Content-Type", "application/json")
				_ = json.NewEncoder(w).Encode(r.current())
			})
		}
		var fallback http.Handler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			s.count("other")
			http.NotFound(w, req)
		})
		if name != "traefik" {
			fallback = r.handler(name)
		}
		mux.Handle("/", fallback)
		if err := s.serveHTTP(eps[name], mux); err != nil {
			return err
		}
	}
	s.log.Printf("traefik entry points %v; docker provider enabled=%v exposedByDefault=%v", eps, r.enabled, r.exposedByDefault)
	if r.enabled {
		r.refresh()
		go func() {
			tick := time.NewTicker(2 * time.Second)
			defer tick.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
					r.refresh()
				}
			}
		}()
	}
	return nil
}

func (r *traefikRouter) current() []route {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.routes
}

var hostRule = regexp.MustCompile("^Host\\(\\s*`([^`]+)`\\s*\\)$")

// parseRule reads `Host(`a`)` and `Host(`a`) || Host(`b`)`.
func parseRule(rule string) ([]string, error) {
	var hosts []string
	for _, part := range strings.Split(rule, "||") {
		m := hostRule.FindStringSubmatch(strings.TrimSpace(part))
		if m == nil {
			return nil, fmt.Errorf("unsupported rule %q (the stand-in knows Host(`x`) joined by ||)", rule)
		}
		hosts = append(hosts, strings.ToLower(m[1]))
	}
	return hosts, nil
}

var nonAlnum = regexp.MustCompile(`[^a-zA-Z0-9]+`)

// refresh reads the containers from the Docker Engine and rebuilds the routes.
func (r *traefikRouter) refresh() {
	containers, err := r.docker.containers()
	if err != nil {
		r.mu.Lock()
		if r.lastErr != err.Error() {
			r.stand.log.Printf("docker provider: %v", err)
		}
		r.lastErr = err.Error()
		r.updated = time.Now()
		r.mu.Unlock()
		return
	}
	var own *dockerContainer
	for i := range containers {
		if r.self != "" && strings.HasPrefix(containers[i].ID, r.self) {
			own = &containers[i]
		}
	}
	var routes []route
	for _, c := range containers {
		routes = append(routes, r.containerRoutes(c, own)...)
	}
	sort.SliceStable(routes, func(i, j int) bool {
		if routes[i].Priority != routes[j].Priority {
			return routes[i].Priority > routes[j].Priority
		}
		return routes[i].Name < routes[j].Name
	})
	r.mu.Lock()
	changed := fmt.Sprint(routes) != fmt.Sprint(r.routes)
	r.routes, r.updated, r.lastErr = routes, time.Now(), ""
	r.mu.Unlock()
	if changed {
		desc := make([]string, 0, len(routes))
		for _, rt := range routes {
			desc = append(desc, fmt.Sprintf("%s %v -> %s", rt.Name, rt.Hosts, rt.Target))
		}
		r.stand.log.Printf("docker provider: %d route(s): %s", len(routes), strings.Join(desc, "; "))
	}
}

func (r *traefikRouter) warnOnce(key, format string, a ...any) {
	r.mu.Lock()
	seen := r.logged[key]
	r.logged[key] = true
	r.mu.Unlock()
	if !seen {
		r.stand.log.Printf(format, a...)
	}
}

// containerRoutes are the routers one container's labels define, as traefik's docker provider reads them.
func (r *traefikRouter) containerRoutes(c dockerContainer, own *dockerContainer) []route {
	labels := c.Labels
	enable, set := labels["traefik.enable"]
	if set && enable != "true" || !set && !r.exposedByDefault {
		return nil
	}
	// Traefik leaves out containers whose healthcheck is not (yet) healthy.
	if strings.Contains(c.Status, "(health: starting)") || strings.Contains(c.Status, "(unhealthy)") {
		return nil
	}
	name := ""
	if len(c.Names) > 0 {
		name = strings.TrimPrefix(c.Names[0], "/")
	}
	defaultService := name
	if svc, project := labels["com.docker.compose.service"], labels["com.docker.compose.project"]; svc != "" {
		defaultService = svc + "-" + project
	}
	defaultService = strings.Trim(nonAlnum.ReplaceAllString(defaultService, "-"), "-")

	routers := map[string]map[string]string{}
	services := map[string]map[string]string{}
	for k, v := range labels {
		if rest, ok := cutPrefix(k, "traefik.http.routers."); ok {
			if rname, key, ok := strings.Cut(rest, "."); ok {
				if routers[rname] == nil {
					routers[rname] = map[string]string{}
				}
				routers[rname][strings.ToLower(key)] = v
			}
		}
		if rest, ok := cutPrefix(k, "traefik.http.services."); ok {
			if sname, key, ok := strings.Cut(rest, "."); ok {
				if services[sname] == nil {
					services[sname] = map[string]string{}
				}
				services[sname][strings.ToLower(key)] = v
			}
		}
	}
	if len(routers) == 0 {
		routers[defaultService] = map[string]string{"rule": "Host(`" + defaultService + "`)"}
	}
	ip := r.containerIP(c, own)
	if ip == "" {
		r.warnOnce("ip/"+c.ID, "docker provider: %s: no IP address on a network traefik can reach", name)
		return nil
	}
	var out []route
	for rname, opts := range routers {
		rule := opts["rule"]
		if rule == "" {
			rule = "Host(`" + defaultService + "`)"
		}
		hosts, err := parseRule(rule)
		if err != nil {
			r.warnOnce("rule/"+c.ID+"/"+rname, "docker provider: %s: router %s: %v", name, rname, err)
			continue
		}
		service := opts["service"]
		if service == "" {
			if len(services) == 1 {
				for sname := range services {
					service = sname
				}
			} else {
				service = defaultService
			}
		}
		port := services[service]["loadbalancer.server.port"]
		if port == "" {
			lowest := 0
			for _, p := range c.Ports {
				if p.Type == "tcp" && (lowest == 0 || p.PrivatePort < lowest) {
					lowest = p.PrivatePort
				}
			}
			if lowest == 0 {
				r.warnOnce("port/"+c.ID+"/"+rname, "docker provider: %s: service %s: port is missing", name, service)
				continue
			}
			port = strconv.Itoa(lowest)
		}
		var eps []string
		if v := opts["entrypoints"]; v != "" {
			for _, ep := range strings.Split(v, ",") {
				eps = append(eps, strings.TrimSpace(ep))
			}
		}
		out = append(out, route{
			Name: rname + "@docker", Rule: rule, Hosts: hosts, EntryPoints: eps, Service: service + "@docker",
			Target: "http://" + net.JoinHostPort(ip, port), Priority: len(rule),
		})
	}
	return out
}

// containerIP picks the container's address: on traefik.docker.network, else the provider's
// network, else a network traefik's own container shares, else its first network.
func (r *traefikRouter) containerIP(c dockerContainer, own *dockerContainer) string {
	if c.HostConfig.NetworkMode == "host" {
		return "127.0.0.1"
	}
	nets := c.NetworkSettings.Networks
	for _, want := range []string{c.Labels["traefik.docker.network"], r.network} {
		if want == "" {
			continue
		}
		if n, ok := nets[want]; ok && n.IPAddress != "" {
			return n.IPAddress
		}
	}
	names := make([]string, 0, len(nets))
	for name := range nets {
		names = append(names, name)
	}
	sort.Strings(names)
	if own != nil {
		for _, name := range names {
			if mine, ok := own.NetworkSettings.Networks[name]; ok && mine.IPAddress != "" && nets[name].IPAddress != "" {
				return nets[name].IPAddress
			}
		}
	}
	for _, name := range names {
		if nets[name].IPAddress != "" {
			return nets[name].IPAddress
		}
	}
	return ""
}

// match finds the route for a host on an entry point.
func (r *traefikRouter) match(host, entryPoint string) (route, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, rt := range r.routes {
		if len(rt.EntryPoints) > 0 && !contains(rt.EntryPoints, entryPoint) {
			continue
		}
		if contains(rt.Hosts, host) {
			return rt, true
		}
	}
	return route{}, false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// handler routes an entry point's requests by Host; unknown hosts get traefik's 404.
func (r *traefikRouter) handler(entryPoint string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.stand.count("other")
		host := strings.ToLower(req.Host)
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		rt, ok := r.match(host, entryPoint)
		if !ok && r.enabled {
			// A container may have started since the last poll: look again, at most every 250 ms.
			r.mu.RLock()
			stale := time.Since(r.updated) > 250*time.Millisecond
			r.mu.RUnlock()
			if stale {
				r.refresh()
				rt, ok = r.match(host, entryPoint)
			}
		}
		if !ok {
			http.NotFound(w, req)
			return
		}
		target, err := url.Parse(rt.Target)
		if err != nil {
			http.Error(w, "Internal Server Error", http.StatusInternalServerError)
			return
		}
		proxy := &httputil.ReverseProxy{
			Director: func(out *http.Request) {
				out.URL.Scheme, out.URL.Host = target.Scheme, target.Host
				out.Header.Set("X-Forwarded-Host", req.Host)
				out.Header.Set("X-Forwarded-Proto", "http")
				if _, port, err := net.SplitHostPort(req.Context().Value(http.LocalAddrContextKey).(net.Addr).String()); err == nil {
					out.Header.Set("X-Forwarded-Port", port)
				}
				out.Header.Set("X-Forwarded-Server", r.self)
				if ip, _, err := net.SplitHostPort(req.RemoteAddr); err == nil {
					out.Header.Set("X-Real-Ip", ip)
				}
			},
			ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
				r.stand.log.Printf("%s: %s: %v", rt.Name, rt.Target, err)
				status := http.StatusBadGateway
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					status = http.StatusGatewayTimeout
				}
				http.Error(w, http.StatusText(status), status)
			},
		}
		proxy.ServeHTTP(w, req)
	})
}
