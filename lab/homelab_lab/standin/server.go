package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// stand is one running stand-in: its configuration, start time and request counts.
type stand struct {
	cfg     config
	started time.Time
	log     *log.Logger

	mu       sync.Mutex
	requests map[string]int64 // path label -> count

	closers []func()
}

func runStandin(args []string) int {
	cfg, err := loadConfig(args)
	if err != nil {
		errorf("standin", "%v", err)
		return 2
	}
	return serve(cfg)
}

// serve runs the stand-in until SIGTERM or SIGINT (or a fatal error) and returns the exit code.
func serve(cfg config) int {
	s := &stand{
		cfg:      cfg,
		started:  time.Now(),
		log:      log.New(os.Stdout, fmt.Sprintf("standin %s: ", cfg.service), log.LstdFlags|log.LUTC),
		requests: map[string]int64{},
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if os.Getpid() == 1 {
		go reapChildren()
	}
	if err := s.keepVolumes(); err != nil {
		s.log.Printf("volumes: %v", err)
		return 1
	}
	var err error
	switch cfg.kind {
	case "postgres":
		err = s.startPostgres(ctx)
	case "redis":
		err = s.startRedis(ctx, stop)
	case "traefik":
		err = s.startTraefik(ctx)
	default:
		err = s.startHTTP(cfg.tcp)
	}
	if err == nil {
		err = s.startUDP(cfg.udp)
	}
	if err != nil {
		s.log.Printf("%v", err)
		s.shutdown()
		return 1
	}
	s.log.Printf("kind %s, version %s, tcp %v, udp %v, health %s, volumes %v",
		cfg.kind, cfg.version, cfg.tcp, cfg.udp, cfg.health, cfg.volumes)
	<-ctx.Done()
	s.log.Printf("stopping")
	s.shutdown()
	return 0
}

func (s *stand) onClose(f func()) { s.closers = append(s.closers, f) }

// shutdown runs the closers, last registered first.
func (s *stand) shutdown() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
}

// reapChildren waits for orphans re-parented to PID 1 (processes started by `docker exec` that outlive it).
func reapChildren() {
	sig := make(chan os.Signal, 8)
	signal.Notify(sig, syscall.SIGCHLD)
	for range sig {
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}

// keepVolumes makes the files a stand-in keeps in each volume: an id made on first boot and a
// line per boot in boots.log; the postgres kind also lays out a data directory.
func (s *stand) keepVolumes() error {
	now := time.Now().UTC().Format(time.RFC3339)
	for _, dir := range s.cfg.volumes {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		idfile := filepath.Join(dir, "standin-"+s.cfg.service+".id")
		id, err := os.ReadFile(idfile)
		if err != nil || len(strings.TrimSpace(string(id))) == 0 {
			raw := make([]byte, 16)
			if _, err := rand.Read(raw); err != nil {
				return err
			}
			id = []byte(hex.EncodeToString(raw))
			if err := os.WriteFile(idfile, id, 0o644); err != nil {
				return err
			}
		}
		line := fmt.Sprintf("%s boot of %s stand-in %s\n", now, s.cfg.service, strings.TrimSpace(string(id)))
		f, err := os.OpenFile(filepath.Join(dir, "boots.log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return err
		}
		_, err = f.WriteString(line)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	if s.cfg.kind == "postgres" {
		return initPgData(pgDataDir(s.cfg), s.cfg.version)
	}
	return nil
}

// listenTCP listens on a port, on the address the flags name or every address; the listener is
// closed at shutdown.
func (s *stand) listenTCP(port int) (net.Listener, error) {
	addr := net.JoinHostPort(s.cfg.listen[port], strconv.Itoa(port))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cannot listen on %s/tcp: %w", addr, err)
	}
	s.onClose(func() { ln.Close() })
	return ln, nil
}

// serveHTTP serves handler on a port until shutdown.
func (s *stand) serveHTTP(port int, handler http.Handler) error {
	ln, err := s.listenTCP(port)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, ErrorLog: s.log}
	s.onClose(func() { srv.Close() })
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Printf("%d/tcp: %v", port, err)
		}
	}()
	return nil
}

func (s *stand) startHTTP(ports []int) error {
	for _, port := range ports {
		if err := s.serveHTTP(port, http.HandlerFunc(s.handle)); err != nil {
			return err
		}
	}
	return nil
}

// startUDP binds the UDP ports and discards what arrives.
func (s *stand) startUDP(ports []int) error {
	for _, port := range ports {
		pc, err := net.ListenPacket("udp", fmt.Sprintf(":%d", port))
		if err != nil {
			return fmt.Errorf("cannot listen on %d/udp: %w", port, err)
		}
		s.onClose(func() { pc.Close() })
		go func() {
			buf := make([]byte, 65536)
			for {
				if _, _, err := pc.ReadFrom(buf); err != nil {
					return
				}
			}
		}()
	}
	return nil
}

func (s *stand) healthPath() string {
	if s.cfg.health == "tcp" {
		return ""
	}
	path, _, _ := strings.Cut(s.cfg.health, "?")
	return path
}

// count records a request under a bounded set of path labels.
func (s *stand) count(path string) {
	switch path {
	case "/", "/metrics", "/ping", s.healthPath():
	default:
		path = "other"
	}
	s.mu.Lock()
	s.requests[path]++
	s.mu.Unlock()
}

// handle is the HTTP service of the http, node-exporter and cadvisor kinds.
func (s *stand) handle(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	s.count(path)
	switch {
	case path == "/metrics":
		s.serveMetrics(w, r)
	case path == "/_standin/request":
		serveRequestEcho(w, r, s.cfg.service)
	case path == s.healthPath() && path == "/ping":
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		fmt.Fprintln(w, `{"status": "OK"}`)
	case path == s.healthPath():
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	case path == "/":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "stand-in for %s\n", s.cfg.service)
	default:
		http.NotFound(w, r)
	}
}

// serveRequestEcho answers with what the request looked like on arrival (for checking a proxy).
func serveRequestEcho(w http.ResponseWriter, r *http.Request, service string) {
	headers := map[string]string{}
	for name, values := range r.Header {
		headers[name] = strings.Join(values, ", ")
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"service": service, "method": r.Method, "host": r.Host, "path": r.URL.Path,
		"remote": r.RemoteAddr, "headers": headers,
	})
}
