package main

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// metrics writes the Prometheus text exposition format (version 0.0.4).
type metrics struct {
	b    strings.Builder
	seen map[string]bool
}

// family writes a family's HELP and TYPE lines once.
func (m *metrics) family(name, typ, help string) {
	if m.seen == nil {
		m.seen = map[string]bool{}
	}
	if m.seen[name] {
		return
	}
	m.seen[name] = true
	fmt.Fprintf(&m.b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
}

// sample writes one sample; labels are name, value pairs.
func (m *metrics) sample(name string, value float64, labels ...string) {
	m.b.WriteString(name)
	if len(labels) > 0 {
		m.b.WriteByte('{')
		for i := 0; i+1 < len(labels); i += 2 {
			if i > 0 {
				m.b.WriteByte(',')
			}
			fmt.Fprintf(&m.b, "%s=\"%s\"", labels[i], escapeLabel(labels[i+1]))
		}
		m.b.WriteByte('}')
	}
	m.b.WriteByte(' ')
	m.b.WriteString(strconv.FormatFloat(value, 'g', -1, 64))
	m.b.WriteByte('\n')
}

// one writes a family with a single sample.
func (m *metrics) one(name, typ, help string, value float64, labels ...string) {
	m.family(name, typ, help)
	m.sample(name, value, labels...)
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

func escapeLabel(v string) string { return labelEscaper.Replace(v) }

func (s *stand) serveMetrics(w http.ResponseWriter, _ *http.Request) {
	var m metrics
	s.standinMetrics(&m)
	switch s.cfg.kind {
	case "node-exporter":
		nodeMetrics(&m, s.cfg.version, s.cfg.rootfs)
	case "cadvisor":
		cadvisorMetrics(&m, s.cfg.version)
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_, _ = w.Write([]byte(m.b.String()))
}

// standinMetrics are the series every stand-in exposes: its own and the process's.
func (s *stand) standinMetrics(m *metrics) {
	m.one("standin_up", "gauge", "1 while the stand-in serves.", 1)
	m.one("standin_info", "gauge", "The service this stand-in stands in for.", 1,
		"service", s.cfg.service, "kind", s.cfg.kind, "version", s.cfg.version)
	m.family("standin_http_requests_total", "counter", "HTTP requests served, by path.")
	s.mu.Lock()
	paths := make([]string, 0, len(s.requests))
	for p := range s.requests {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		m.sample("standin_http_requests_total", float64(s.requests[p]), "path", p)
	}
	s.mu.Unlock()
	processMetrics(m, s.started)
}

func processMetrics(m *metrics, started time.Time) {
	m.one("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.",
		float64(started.UnixNano())/1e9)
	if stat, err := os.ReadFile("/proc/self/stat"); err == nil {
		// Fields after the command (which may hold spaces) start after the last ')'.
		if i := strings.LastIndexByte(string(stat), ')'); i > 0 {
			f := strings.Fields(string(stat)[i+1:])
			if len(f) > 13 {
				utime, _ := strconv.ParseFloat(f[11], 64)
				stime, _ := strconv.ParseFloat(f[12], 64)
				m.one("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.",
					(utime+stime)/100)
			}
		}
	}
	if status, err := readKeyed("/proc/self/status"); err == nil {
		if rss, ok := status["VmRSS"]; ok {
			m.one("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", rss*1024)
		}
	}
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		m.one("process_open_fds", "gauge", "Number of open file descriptors.", float64(len(fds)))
	}
	m.one("go_goroutines", "gauge", "Number of goroutines that currently exist.", float64(runtime.NumGoroutine()))
}

// readKeyed reads "Key: value [kB]" lines (/proc/meminfo, /proc/self/status) into numbers.
func readKeyed(path string) (map[string]float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(fields[0], 64); err == nil {
			out[key] = v
		}
	}
	return out, sc.Err()
}

// mountOf finds the device and filesystem type mounted at path in /proc/self/mounts.
func mountOf(path string) (device, fstype string) {
	device, fstype = "none", "unknown"
	data, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[1] == path {
			device, fstype = f[0], f[2]
		}
	}
	return
}

// utsString reads a NUL-terminated uname field (int8 on amd64, uint8 on arm64).
func utsString[T int8 | uint8](chars [65]T) string {
	var b strings.Builder
	for _, c := range chars {
		if c == 0 {
			break
		}
		b.WriteByte(byte(c))
	}
	return b.String()
}

// nodeMetrics is a small, real subset of node-exporter's series.
// The root filesystem is read at root (--path.rootfs, as node-exporter does with the host's / bound there).
func nodeMetrics(m *metrics, version, root string) {
	m.one("node_exporter_build_info", "gauge", "A metric with a constant '1' value labeled by version, revision, branch, goversion from which node_exporter was built, and the goos and goarch for the build.", 1,
		"branch", "HEAD", "goarch", runtime.GOARCH, "goos", runtime.GOOS, "goversion", runtime.Version(),
		"revision", "standin", "tags", "standin", "version", version)
	if mem, err := readKeyed("/proc/meminfo"); err == nil {
		for _, key := range []string{"MemTotal", "MemFree", "MemAvailable", "Buffers", "Cached", "SwapTotal", "SwapFree"} {
			if v, ok := mem[key]; ok {
				name := "node_memory_" + key + "_bytes"
				m.one(name, "gauge", "Memory information field "+key+"_bytes.", v*1024)
			}
		}
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(root, &st); err == nil {
		device, fstype := mountOf(root)
		labels := []string{"device", device, "fstype", fstype, "mountpoint", "/"}
		bs := float64(st.Bsize)
		m.one("node_filesystem_size_bytes", "gauge", "Filesystem size in bytes.", float64(st.Blocks)*bs, labels...)
		m.one("node_filesystem_free_bytes", "gauge", "Filesystem free space in bytes.", float64(st.Bfree)*bs, labels...)
		m.one("node_filesystem_avail_bytes", "gauge", "Filesystem space available to non-root users in bytes.", float64(st.Bavail)*bs, labels...)
		m.one("node_filesystem_files", "gauge", "Filesystem total file nodes.", float64(st.Files), labels...)
		m.one("node_filesystem_files_free", "gauge", "Filesystem total free file nodes.", float64(st.Ffree), labels...)
	}
	if load, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(load))
		for i, name := range []string{"node_load1", "node_load5", "node_load15"} {
			if i < len(f) {
				v, _ := strconv.ParseFloat(f[i], 64)
				m.one(name, "gauge", fmt.Sprintf("%s load average.", strings.TrimPrefix(name, "node_load")+"m"), v)
			}
		}
	}
	if stat, err := os.ReadFile("/proc/stat"); err == nil {
		modes := []string{"user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"}
		btime := -1.0
		m.family("node_cpu_seconds_total", "counter", "Seconds the CPUs spent in each mode.")
		for _, line := range strings.Split(string(stat), "\n") {
			f := strings.Fields(line)
			switch {
			case len(f) > 8 && strings.HasPrefix(f[0], "cpu") && f[0] != "cpu":
				for i, mode := range modes {
					v, _ := strconv.ParseFloat(f[i+1], 64)
					m.sample("node_cpu_seconds_total", v/100, "cpu", strings.TrimPrefix(f[0], "cpu"), "mode", mode)
				}
			case len(f) == 2 && f[0] == "btime":
				btime, _ = strconv.ParseFloat(f[1], 64)
			}
		}
		if btime >= 0 {
			m.one("node_boot_time_seconds", "gauge", "Node boot time, in unixtime.", btime)
		}
	}
	m.one("node_time_seconds", "gauge", "System time in seconds since epoch (1970).", float64(time.Now().UnixNano())/1e9)
	var uts syscall.Utsname
	if err := syscall.Uname(&uts); err == nil {
		m.one("node_uname_info", "gauge", "Labeled system information as provided by the uname system call.", 1,
			"domainname", utsString(uts.Domainname), "machine", utsString(uts.Machine),
			"nodename", utsString(uts.Nodename), "release", utsString(uts.Release),
			"sysname", utsString(uts.Sysname), "version", utsString(uts.Version))
	}
	if dev, err := os.ReadFile("/proc/net/dev"); err == nil {
		m.family("node_network_receive_bytes_total", "counter", "Network device statistic receive_bytes.")
		var tx [][2]string
		for _, line := range strings.Split(string(dev), "\n")[2:] {
			name, rest, ok := strings.Cut(line, ":")
			f := strings.Fields(rest)
			if !ok || len(f) < 9 {
				continue
			}
			name = strings.TrimSpace(name)
			rx, _ := strconv.ParseFloat(f[0], 64)
			m.sample("node_network_receive_bytes_total", rx, "device", name)
			tx = append(tx, [2]string{name, f[8]})
		}
		m.family("node_network_transmit_bytes_total", "counter", "Network device statistic transmit_bytes.")
		for _, t := range tx {
			v, _ := strconv.ParseFloat(t[1], 64)
			m.sample("node_network_transmit_bytes_total", v, "device", t[0])
		}
	}
}

// cadvisorMetrics is a minimal cAdvisor: the machine, the root cgroup and, when the Docker
// Engine's socket is reachable, one series per running container.
func cadvisorMetrics(m *metrics, version string) {
	m.one("cadvisor_version_info", "gauge", "A metric with a constant '1' value labeled by kernel version, OS version, docker version, cadvisor version & cadvisor revision.", 1,
		"cadvisorRevision", "standin", "cadvisorVersion", "v"+version, "dockerVersion", "", "kernelVersion", kernelRelease(), "osVersion", "standin")
	m.one("machine_cpu_cores", "gauge", "Number of logical CPU cores.", float64(runtime.NumCPU()))
	if mem, err := readKeyed("/proc/meminfo"); err == nil {
		m.one("machine_memory_bytes", "gauge", "Amount of memory installed on the machine.", mem["MemTotal"]*1024)
	}
	now := float64(time.Now().Unix())
	type row struct {
		labels  []string
		started float64
	}
	rows := []row{{[]string{"id", "/", "image", "", "name", ""}, 0}}
	if containers, err := newDockerClient(envOr("DOCKER_HOST", "unix:///var/run/docker.sock")).containers(); err == nil {
		sort.Slice(containers, func(i, j int) bool { return containers[i].ID < containers[j].ID })
		for _, c := range containers {
			name := ""
			if len(c.Names) > 0 {
				name = strings.TrimPrefix(c.Names[0], "/")
			}
			rows = append(rows, row{[]string{"id", "/docker/" + c.ID, "image", c.Image, "name", name}, float64(c.Created)})
		}
	}
	m.family("container_last_seen", "gauge", "Last time a container was seen by the exporter")
	for _, r := range rows {
		m.sample("container_last_seen", now, r.labels...)
	}
	m.family("container_start_time_seconds", "gauge", "Start time of the container since unix epoch in seconds.")
	for _, r := range rows[1:] {
		m.sample("container_start_time_seconds", r.started, r.labels...)
	}
	if stat, err := os.ReadFile("/proc/stat"); err == nil {
		f := strings.Fields(strings.SplitN(string(stat), "\n", 2)[0])
		var total float64
		for _, v := range f[1:] {
			x, _ := strconv.ParseFloat(v, 64)
			total += x
		}
		m.one("container_cpu_usage_seconds_total", "counter", "Cumulative cpu time consumed in seconds.", total/100, "cpu", "total", "id", "/", "image", "", "name", "")
	}
	if cur, err := os.ReadFile("/sys/fs/cgroup/memory.current"); err == nil {
		v, _ := strconv.ParseFloat(strings.TrimSpace(string(cur)), 64)
		m.one("container_memory_usage_bytes", "gauge", "Current memory usage in bytes, including all memory regardless of when it was accessed", v, "id", "/", "image", "", "name", "")
	}
}

func kernelRelease() string {
	var uts syscall.Utsname
	if syscall.Uname(&uts) != nil {
		return ""
	}
	return utsString(uts.Release)
}
