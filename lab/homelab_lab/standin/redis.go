package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// The Redis stand-in: a RESP server with strings in memory, persisted as a real RDB file
// (dump.rdb in the data volume) by SAVE, BGSAVE and at shutdown, and loaded again at start.

type redisServer struct {
	stand   *stand
	dir     string
	port    int
	started time.Time
	stop    func()

	mu         sync.Mutex
	data       map[string][]byte
	expires    map[string]time.Time // key -> expiry
	dirty      int64
	lastSave   time.Time
	saving     bool
	lastStatus string
	clients    int
}

func (s *stand) startRedis(ctx context.Context, stop func()) error {
	ports := s.cfg.tcp
	if len(ports) == 0 {
		ports = []int{6379}
	}
	dir := "."
	if len(s.cfg.volumes) > 0 {
		dir = s.cfg.volumes[0]
	}
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	rs := &redisServer{
		stand: s, dir: dir, port: ports[0], started: time.Now(), stop: stop, lastSave: time.Now(),
		data: map[string][]byte{}, expires: map[string]time.Time{}, lastStatus: "ok",
	}
	if err := rs.load(); err != nil {
		return fmt.Errorf("loading %s: %v", filepath.Join(dir, "dump.rdb"), err)
	}
	ln, err := s.listenTCP(ports[0])
	if err != nil {
		return err
	}
	// Registered after the listener: runs first at shutdown, saving what changed.
	s.onClose(func() {
		rs.mu.Lock()
		dirty := rs.dirty
		rs.mu.Unlock()
		if dirty > 0 {
			if err := rs.save(); err != nil {
				s.log.Printf("saving on shutdown: %v", err)
			} else {
				s.log.Printf("DB saved on disk")
			}
		}
	})
	go rs.accept(ln)
	if len(ports) > 1 {
		return s.startHTTP(ports[1:])
	}
	return nil
}

func (rs *redisServer) accept(ln net.Listener) {
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		go rs.session(conn)
	}
}

// readCommand reads one RESP array of bulk strings, or an inline command line.
func readCommand(r *bufio.Reader) ([]string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	line = strings.TrimRight(line, "\r\n")
	if !strings.HasPrefix(line, "*") {
		return splitArgs(line), nil
	}
	n, err := strconv.Atoi(line[1:])
	if err != nil || n < 0 || n > 1<<20 {
		return nil, errors.New("Protocol error: invalid multibulk length")
	}
	args := make([]string, 0, n)
	for i := 0; i < n; i++ {
		head, err := r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		head = strings.TrimRight(head, "\r\n")
		if !strings.HasPrefix(head, "$") {
			return nil, fmt.Errorf("Protocol error: expected '$', got '%c'", head[0])
		}
		size, err := strconv.Atoi(head[1:])
		if err != nil || size < 0 || size > 512<<20 {
			return nil, errors.New("Protocol error: invalid bulk length")
		}
		buf := make([]byte, size+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, err
		}
		args = append(args, string(buf[:size]))
	}
	return args, nil
}

// splitArgs splits a line into words, honouring "double" and 'single' quotes (as redis-cli does).
func splitArgs(line string) []string {
	var out []string
	var cur strings.Builder
	inWord, quote := false, byte(0)
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quote != 0 && c == '\\' && quote == '"' && i+1 < len(line):
			i++
			switch line[i] {
			case 'n':
				cur.WriteByte('\n')
			case 't':
				cur.WriteByte('\t')
			case 'r':
				cur.WriteByte('\r')
			default:
				cur.WriteByte(line[i])
			}
		case quote != 0 && c == quote:
			quote = 0
		case quote != 0:
			cur.WriteByte(c)
		case c == '"' || c == '\'':
			quote, inWord = c, true
		case c == ' ' || c == '\t':
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out
}

// RESP replies.
func respSimple(s string) string { return "+" + s + "\r\n" }
func respError(s string) string  { return "-" + s + "\r\n" }
func respInt(n int64) string     { return ":" + strconv.FormatInt(n, 10) + "\r\n" }
func respBulk(b []byte) string {
	if b == nil {
		return "$-1\r\n"
	}
	return "$" + strconv.Itoa(len(b)) + "\r\n" + string(b) + "\r\n"
}
func respArray(items []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(items))
	for _, it := range items {
		b.WriteString(respBulk([]byte(it)))
	}
	return b.String()
}

func (rs *redisServer) session(conn net.Conn) {
	defer conn.Close()
	rs.mu.Lock()
	rs.clients++
	rs.mu.Unlock()
	defer func() {
		rs.mu.Lock()
		rs.clients--
		rs.mu.Unlock()
	}()
	r := bufio.NewReader(conn)
	for {
		args, err := readCommand(r)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				_, _ = io.WriteString(conn, respError("ERR "+err.Error()))
			}
			return
		}
		if len(args) == 0 {
			continue
		}
		reply, quit := rs.exec(args)
		if _, err := io.WriteString(conn, reply); err != nil || quit {
			return
		}
	}
}

func wrongArgs(cmd string) string {
	return respError(fmt.Sprintf("ERR wrong number of arguments for '%s' command", strings.ToLower(cmd)))
}

// live says whether a key exists and has not expired (dropping it if it has); call with mu held.
func (rs *redisServer) live(key string) bool {
	if at, ok := rs.expires[key]; ok && !time.Now().Before(at) {
		delete(rs.data, key)
		delete(rs.expires, key)
	}
	_, ok := rs.data[key]
	return ok
}

// exec runs one command and returns its reply, and whether to close the connection.
func (rs *redisServer) exec(args []string) (string, bool) {
	cmd := strings.ToUpper(args[0])
	argc := len(args)
	rs.mu.Lock()
	defer rs.mu.Unlock()
	switch cmd {
	case "PING":
		if argc > 2 {
			return wrongArgs(cmd), false
		}
		if argc == 2 {
			return respBulk([]byte(args[1])), false
		}
		return respSimple("PONG"), false
	case "ECHO":
		if argc != 2 {
			return wrongArgs(cmd), false
		}
		return respBulk([]byte(args[1])), false
	case "QUIT":
		return respSimple("OK"), true
	case "SELECT":
		if argc != 2 {
			return wrongArgs(cmd), false
		}
		if args[1] != "0" {
			return respError("ERR the stand-in Redis has database 0 only"), false
		}
		return respSimple("OK"), false
	case "AUTH":
		return respError("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"), false
	case "SET":
		if argc < 3 {
			return wrongArgs(cmd), false
		}
		var expiry time.Time
		for i := 3; i < argc; i++ {
			opt := strings.ToUpper(args[i])
			if (opt == "EX" || opt == "PX") && i+1 < argc {
				n, err := strconv.ParseInt(args[i+1], 10, 64)
				if err != nil || n <= 0 {
					return respError("ERR invalid expire time in 'set' command"), false
				}
				unit := time.Second
				if opt == "PX" {
					unit = time.Millisecond
				}
				expiry = time.Now().Add(time.Duration(n) * unit)
				i++
			} else {
				return respError("ERR syntax error"), false
			}
		}
		rs.data[args[1]] = []byte(args[2])
		delete(rs.expires, args[1])
		if !expiry.IsZero() {
			rs.expires[args[1]] = expiry
		}
		rs.dirty++
		return respSimple("OK"), false
	case "GET":
		if argc != 2 {
			return wrongArgs(cmd), false
		}
		if !rs.live(args[1]) {
			return respBulk(nil), false
		}
		return respBulk(rs.data[args[1]]), false
	case "INCR", "DECR", "INCRBY", "DECRBY":
		if (cmd == "INCR" || cmd == "DECR") && argc != 2 || (cmd == "INCRBY" || cmd == "DECRBY") && argc != 3 {
			return wrongArgs(cmd), false
		}
		by := int64(1)
		if argc == 3 {
			n, err := strconv.ParseInt(args[2], 10, 64)
			if err != nil {
				return respError("ERR value is not an integer or out of range"), false
			}
			by = n
		}
		if strings.HasPrefix(cmd, "DECR") {
			by = -by
		}
		var cur int64
		if rs.live(args[1]) {
			n, err := strconv.ParseInt(string(rs.data[args[1]]), 10, 64)
			if err != nil {
				return respError("ERR value is not an integer or out of range"), false
			}
			cur = n
		}
		cur += by
		rs.data[args[1]] = []byte(strconv.FormatInt(cur, 10))
		rs.dirty++
		return respInt(cur), false
	case "DEL", "EXISTS":
		if argc < 2 {
			return wrongArgs(cmd), false
		}
		var n int64
		for _, k := range args[1:] {
			if rs.live(k) {
				n++
				if cmd == "DEL" {
					delete(rs.data, k)
					delete(rs.expires, k)
					rs.dirty++
				}
			}
		}
		return respInt(n), false
	case "EXPIRE", "TTL":
		if cmd == "EXPIRE" && argc != 3 || cmd == "TTL" && argc != 2 {
			return wrongArgs(cmd), false
		}
		if !rs.live(args[1]) {
			if cmd == "TTL" {
				return respInt(-2), false
			}
			return respInt(0), false
		}
		if cmd == "TTL" {
			at, ok := rs.expires[args[1]]
			if !ok {
				return respInt(-1), false
			}
			return respInt(int64(time.Until(at).Round(time.Second) / time.Second)), false
		}
		n, err := strconv.ParseInt(args[2], 10, 64)
		if err != nil {
			return respError("ERR value is not an integer or out of range"), false
		}
		rs.expires[args[1]] = time.Now().Add(time.Duration(n) * time.Second)
		rs.dirty++
		return respInt(1), false
	case "KEYS":
		if argc != 2 {
			return wrongArgs(cmd), false
		}
		var keys []string
		for k := range rs.data {
			if ok, _ := path.Match(args[1], k); ok && rs.live(k) {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		return respArray(keys), false
	case "DBSIZE":
		return respInt(int64(len(rs.data))), false
	case "FLUSHALL", "FLUSHDB":
		if len(rs.data) > 0 {
			rs.dirty += int64(len(rs.data))
		}
		rs.data, rs.expires = map[string][]byte{}, map[string]time.Time{}
		return respSimple("OK"), false
	case "SAVE":
		if rs.saving {
			return respError("ERR Background save already in progress"), false
		}
		rs.mu.Unlock()
		err := rs.save()
		rs.mu.Lock()
		if err != nil {
			return respError("ERR " + err.Error()), false
		}
		return respSimple("OK"), false
	case "BGSAVE":
		if rs.saving {
			return respError("ERR Background save already in progress"), false
		}
		rs.saving = true
		go func() {
			if err := rs.save(); err != nil {
				rs.stand.log.Printf("background save: %v", err)
			} else {
				rs.stand.log.Printf("Background saving terminated with success")
			}
		}()
		return respSimple("Background saving started"), false
	case "LASTSAVE":
		return respInt(rs.lastSave.Unix()), false
	case "INFO":
		section := ""
		if argc > 1 {
			section = strings.ToLower(args[1])
		}
		return respBulk([]byte(rs.info(section))), false
	case "CONFIG":
		if argc == 3 && strings.ToUpper(args[1]) == "GET" {
			values := map[string]string{"dir": rs.dir, "dbfilename": "dump.rdb", "port": strconv.Itoa(rs.port), "save": "3600 1 300 100 60 10000", "appendonly": "no"}
			var out []string
			for k, v := range values {
				if ok, _ := path.Match(args[2], k); ok {
					out = append(out, k, v)
				}
			}
			return respArray(out), false
		}
		return respError("ERR the stand-in Redis knows CONFIG GET only"), false
	case "COMMAND":
		return "*0\r\n", false
	case "CLIENT":
		return respSimple("OK"), false
	case "SHUTDOWN":
		nosave := argc > 1 && strings.ToUpper(args[1]) == "NOSAVE"
		if nosave {
			rs.dirty = 0
		}
		go rs.stop()
		return "", true
	}
	var b strings.Builder
	for _, a := range args[1:] {
		fmt.Fprintf(&b, "'%s' ", a)
	}
	return respError(fmt.Sprintf("ERR unknown command '%s', with args beginning with: %s", args[0], b.String())), false
}

func (rs *redisServer) info(section string) string {
	var sections []string
	want := func(name string) bool {
		return section == "" || section == "all" || section == "default" || section == "everything" || section == name
	}
	if want("server") {
		var uts syscall.Utsname
		_ = syscall.Uname(&uts)
		sections = append(sections, fmt.Sprintf("# Server\r\nredis_version:%s\r\nredis_mode:standalone\r\nos:%s %s %s\r\narch_bits:%d\r\nprocess_id:%d\r\ntcp_port:%d\r\nuptime_in_seconds:%d\r\nexecutable:/usr/local/bin/redis-server\r\n",
			rs.stand.cfg.version, utsString(uts.Sysname), utsString(uts.Release), utsString(uts.Machine),
			int(unsafe.Sizeof(uintptr(0)))*8, os.Getpid(), rs.port, int64(time.Since(rs.started).Seconds())))
	}
	if want("clients") {
		sections = append(sections, fmt.Sprintf("# Clients\r\nconnected_clients:%d\r\n", rs.clients))
	}
	if want("memory") {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		sections = append(sections, fmt.Sprintf("# Memory\r\nused_memory:%d\r\n", m.HeapAlloc))
	}
	if want("persistence") {
		bg := 0
		if rs.saving {
			bg = 1
		}
		sections = append(sections, fmt.Sprintf("# Persistence\r\nloading:0\r\nrdb_changes_since_last_save:%d\r\nrdb_bgsave_in_progress:%d\r\nrdb_last_save_time:%d\r\nrdb_last_bgsave_status:%s\r\naof_enabled:0\r\n",
			rs.dirty, bg, rs.lastSave.Unix(), rs.lastStatus))
	}
	if want("keyspace") {
		ks := "# Keyspace\r\n"
		if len(rs.data) > 0 {
			ks += fmt.Sprintf("db0:keys=%d,expires=%d,avg_ttl=0\r\n", len(rs.data), len(rs.expires))
		}
		sections = append(sections, ks)
	}
	return strings.Join(sections, "\r\n")
}

// ---------------------------------------------------------------- RDB files

// crc64Jones is Redis's checksum (CRC-64/Jones, reflected, no inversion).
var crc64Table = func() [256]uint64 {
	var t [256]uint64
	const poly = 0x95AC9329AC4BC9B5
	for i := range t {
		crc := uint64(i)
		for j := 0; j < 8; j++ {
			if crc&1 == 1 {
				crc = crc>>1 ^ poly
			} else {
				crc >>= 1
			}
		}
		t[i] = crc
	}
	return t
}()

func crc64Jones(data []byte) uint64 {
	var crc uint64
	for _, b := range data {
		crc = crc64Table[byte(crc)^b] ^ crc>>8
	}
	return crc
}

func rdbLength(b *bytes.Buffer, n uint64) {
	switch {
	case n < 1<<6:
		b.WriteByte(byte(n))
	case n < 1<<14:
		b.WriteByte(byte(n>>8) | 0x40)
		b.WriteByte(byte(n))
	case n <= 0xffffffff:
		b.WriteByte(0x80)
		_ = binary.Write(b, binary.BigEndian, uint32(n))
	default:
		b.WriteByte(0x81)
		_ = binary.Write(b, binary.BigEndian, n)
	}
}

func rdbString(b *bytes.Buffer, s []byte) {
	rdbLength(b, uint64(len(s)))
	b.Write(s)
}

// encodeRDB writes an RDB version 10 file (what Redis 7.0 writes; 7.0 and later load it) with string keys.
func encodeRDB(version string, data map[string][]byte, expires map[string]time.Time) []byte {
	var b bytes.Buffer
	b.WriteString("REDIS0010")
	for _, kv := range [][2]string{{"redis-ver", version}, {"redis-bits", "64"}, {"ctime", strconv.FormatInt(time.Now().Unix(), 10)}, {"aof-base", "0"}} {
		b.WriteByte(0xFA)
		rdbString(&b, []byte(kv[0]))
		rdbString(&b, []byte(kv[1]))
	}
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if len(keys) > 0 {
		b.Write([]byte{0xFE, 0x00, 0xFB})
		rdbLength(&b, uint64(len(keys)))
		rdbLength(&b, uint64(len(expires)))
		for _, k := range keys {
			if at, ok := expires[k]; ok {
				b.WriteByte(0xFC)
				_ = binary.Write(&b, binary.LittleEndian, uint64(at.UnixMilli()))
			}
			b.WriteByte(0x00)
			rdbString(&b, []byte(k))
			rdbString(&b, data[k])
		}
	}
	b.WriteByte(0xFF)
	_ = binary.Write(&b, binary.LittleEndian, crc64Jones(b.Bytes()))
	return b.Bytes()
}

type rdbReader struct {
	data []byte
	pos  int
}

var errRDBShort = errors.New("unexpected end of file")

func (r *rdbReader) byte() (byte, error) {
	if r.pos >= len(r.data) {
		return 0, errRDBShort
	}
	r.pos++
	return r.data[r.pos-1], nil
}

func (r *rdbReader) take(n int) ([]byte, error) {
	if n < 0 || r.pos+n > len(r.data) {
		return nil, errRDBShort
	}
	r.pos += n
	return r.data[r.pos-n : r.pos], nil
}

// length reads a length; special is true for the integer string encodings (0xC0..).
func (r *rdbReader) length() (n uint64, special bool, err error) {
	first, err := r.byte()
	if err != nil {
		return 0, false, err
	}
	switch first >> 6 {
	case 0:
		return uint64(first & 0x3f), false, nil
	case 1:
		second, err := r.byte()
		return uint64(first&0x3f)<<8 | uint64(second), false, err
	case 2:
		if first == 0x80 {
			b, err := r.take(4)
			if err != nil {
				return 0, false, err
			}
			return uint64(binary.BigEndian.Uint32(b)), false, nil
		}
		b, err := r.take(8)
		if err != nil {
			return 0, false, err
		}
		return binary.BigEndian.Uint64(b), false, nil
	}
	return uint64(first & 0x3f), true, nil
}

func (r *rdbReader) str() ([]byte, error) {
	n, special, err := r.length()
	if err != nil {
		return nil, err
	}
	if !special {
		return r.take(int(n))
	}
	var v int64
	switch n {
	case 0:
		b, err := r.take(1)
		if err != nil {
			return nil, err
		}
		v = int64(int8(b[0]))
	case 1:
		b, err := r.take(2)
		if err != nil {
			return nil, err
		}
		v = int64(int16(binary.LittleEndian.Uint16(b)))
	case 2:
		b, err := r.take(4)
		if err != nil {
			return nil, err
		}
		v = int64(int32(binary.LittleEndian.Uint32(b)))
	default:
		return nil, errors.New("compressed (LZF) strings are not supported by the stand-in")
	}
	return []byte(strconv.FormatInt(v, 10)), nil
}

// decodeRDB reads the string keys of an RDB file.
func decodeRDB(file []byte) (map[string][]byte, map[string]time.Time, error) {
	if len(file) < 9+1 || string(file[:5]) != "REDIS" {
		return nil, nil, errors.New("not an RDB file")
	}
	r := &rdbReader{data: file, pos: 9}
	data, expires := map[string][]byte{}, map[string]time.Time{}
	var expiry time.Time
	for {
		op, err := r.byte()
		if err != nil {
			return nil, nil, err
		}
		switch op {
		case 0xFF:
			if len(file) >= r.pos+8 {
				want := binary.LittleEndian.Uint64(file[r.pos : r.pos+8])
				if want != 0 && want != crc64Jones(file[:r.pos]) {
					return nil, nil, errors.New("wrong RDB checksum")
				}
			}
			return data, expires, nil
		case 0xFA:
			if _, err := r.str(); err != nil {
				return nil, nil, err
			}
			if _, err := r.str(); err != nil {
				return nil, nil, err
			}
		case 0xFE:
			if _, _, err := r.length(); err != nil {
				return nil, nil, err
			}
		case 0xFB:
			if _, _, err := r.length(); err != nil {
				return nil, nil, err
			}
			if _, _, err := r.length(); err != nil {
				return nil, nil, err
			}
		case 0xFC:
			b, err := r.take(8)
			if err != nil {
				return nil, nil, err
			}
			expiry = time.UnixMilli(int64(binary.LittleEndian.Uint64(b)))
		case 0xFD:
			b, err := r.take(4)
			if err != nil {
				return nil, nil, err
			}
			expiry = time.Unix(int64(binary.LittleEndian.Uint32(b)), 0)
		case 0x00:
			key, err := r.str()
			if err != nil {
				return nil, nil, err
			}
			value, err := r.str()
			if err != nil {
				return nil, nil, err
			}
			if expiry.IsZero() || expiry.After(time.Now()) {
				data[string(key)] = value
				if !expiry.IsZero() {
					expires[string(key)] = expiry
				}
			}
			expiry = time.Time{}
		default:
			return nil, nil, fmt.Errorf("value type %d is not supported by the stand-in (strings only)", op)
		}
	}
}

// save writes dump.rdb atomically (temp-PID.rdb, then rename), as Redis does.
func (rs *redisServer) save() error {
	rs.mu.Lock()
	rs.saving = true
	data := make(map[string][]byte, len(rs.data))
	expires := make(map[string]time.Time, len(rs.expires))
	for k, v := range rs.data {
		if rs.live(k) {
			data[k] = v
		}
	}
	for k, v := range rs.expires {
		if _, ok := data[k]; ok {
			expires[k] = v
		}
	}
	dirtyAtStart := rs.dirty
	rs.mu.Unlock()

	err := writeAtomic(filepath.Join(rs.dir, "dump.rdb"), encodeRDB(rs.stand.cfg.version, data, expires),
		filepath.Join(rs.dir, fmt.Sprintf("temp-%d.rdb", os.Getpid())))

	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.saving = false
	if err != nil {
		rs.lastStatus = "err"
		return err
	}
	rs.lastStatus = "ok"
	rs.dirty -= dirtyAtStart
	rs.lastSave = time.Now()
	return nil
}

func writeAtomic(dest string, data []byte, tmp string) error {
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, dest)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

func (rs *redisServer) load() error {
	file, err := os.ReadFile(filepath.Join(rs.dir, "dump.rdb"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	data, expires, err := decodeRDB(file)
	if err != nil {
		return err
	}
	rs.data, rs.expires = data, expires
	rs.stand.log.Printf("DB loaded from disk: %d keys", len(data))
	return nil
}

// ---------------------------------------------------------------- redis-cli

// respValue is a parsed reply.
type respValue struct {
	kind  byte // '+', '-', ':', '$', '*'
	str   string
	num   int64
	null  bool
	items []respValue
}

func readReply(r *bufio.Reader) (respValue, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return respValue{}, err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return respValue{}, errors.New("empty reply line")
	}
	v := respValue{kind: line[0]}
	body := line[1:]
	switch v.kind {
	case '+', '-':
		v.str = body
	case ':':
		v.num, err = strconv.ParseInt(body, 10, 64)
	case '$':
		n, perr := strconv.Atoi(body)
		if perr != nil {
			return v, perr
		}
		if n < 0 {
			v.null = true
			return v, nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return v, err
		}
		v.str = string(buf[:n])
	case '*':
		n, perr := strconv.Atoi(body)
		if perr != nil {
			return v, perr
		}
		if n < 0 {
			v.null = true
			return v, nil
		}
		for i := 0; i < n; i++ {
			item, err := readReply(r)
			if err != nil {
				return v, err
			}
			v.items = append(v.items, item)
		}
	default:
		return v, fmt.Errorf("unknown reply type %q", v.kind)
	}
	return v, err
}

// quoteRepr is redis-cli's sdscatrepr: a double-quoted string with escapes.
func quoteRepr(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '\\', '"':
			b.WriteByte('\\')
			b.WriteByte(c)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '\a':
			b.WriteString(`\a`)
		case '\b':
			b.WriteString(`\b`)
		default:
			if c < 0x20 || c >= 0x7f {
				fmt.Fprintf(&b, `\x%02x`, c)
			} else {
				b.WriteByte(c)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}

// formatTTY formats a reply as redis-cli does on a terminal.
func formatTTY(v respValue, prefix string) string {
	switch v.kind {
	case '+':
		return v.str + "\n"
	case '-':
		return "(error) " + v.str + "\n"
	case ':':
		return fmt.Sprintf("(integer) %d\n", v.num)
	case '$':
		if v.null {
			return "(nil)\n"
		}
		return quoteRepr(v.str) + "\n"
	case '*':
		if v.null {
			return "(nil)\n"
		}
		if len(v.items) == 0 {
			return "(empty array)\n"
		}
		var b strings.Builder
		width := len(strconv.Itoa(len(v.items)))
		for i, item := range v.items {
			label := fmt.Sprintf("%*d) ", width, i+1)
			if i > 0 {
				b.WriteString(prefix)
			}
			b.WriteString(label)
			b.WriteString(formatTTY(item, prefix+strings.Repeat(" ", len(label))))
		}
		return b.String()
	}
	return ""
}

// formatRaw formats a reply as redis-cli does when stdout is not a terminal.
func formatRaw(v respValue) string {
	switch v.kind {
	case '+':
		return v.str
	case '-':
		return v.str + "\n"
	case ':':
		return strconv.FormatInt(v.num, 10)
	case '$':
		if v.null {
			return ""
		}
		return v.str
	case '*':
		parts := make([]string, len(v.items))
		for i, item := range v.items {
			parts[i] = formatRaw(item)
		}
		return strings.Join(parts, "\n")
	}
	return ""
}

// isTerminal is isatty(): TCGETS succeeds on a terminal only.
func isTerminal(f *os.File) bool {
	var t syscall.Termios
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), syscall.TCGETS, uintptr(unsafe.Pointer(&t)))
	return errno == 0
}

func encodeCommand(args []string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	return b.Bytes()
}

func runRedisCli(args []string) int {
	host, port, socket, auth, db := "127.0.0.1", "6379", "", os.Getenv("REDISCLI_AUTH"), ""
	raw := !isTerminal(os.Stdout) && os.Getenv("FAKETTY") == ""
	noAuthWarning := false
	authFromArgs := false
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		value := func() (string, bool) {
			if i+1 >= len(args) {
				return "", false
			}
			i++
			return args[i], true
		}
		ok := true
		switch a {
		case "-h":
			host, ok = value()
		case "-p":
			port, ok = value()
		case "-s":
			socket, ok = value()
		case "-a", "--pass":
			auth, ok = value()
			authFromArgs = true
		case "-n":
			db, ok = value()
		case "-u":
			var uri string
			uri, ok = value()
			if ok {
				h, p, pw, d, err := parseRedisURI(uri)
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					return 1
				}
				host, port, db = h, p, d
				if pw != "" {
					auth, authFromArgs = pw, true
				}
			}
		case "--raw":
			raw = true
		case "--no-raw":
			raw = false
		case "--no-auth-warning":
			noAuthWarning = true
		case "-v", "--version":
			fmt.Printf("redis-cli %s\n", versionOf("redis"))
			return 0
		default:
			if strings.HasPrefix(a, "-") && len(rest) == 0 {
				fmt.Fprintf(os.Stderr, "Unrecognized option or bad number of args for: '%s'\n", a)
				return 1
			}
			rest = append(rest, a)
		}
		if !ok {
			fmt.Fprintf(os.Stderr, "Unrecognized option or bad number of args for: '%s'\n", a)
			return 1
		}
		if len(rest) > 0 {
			rest = append(rest, args[i+1:]...)
			break
		}
	}
	if authFromArgs && !noAuthWarning {
		fmt.Fprintln(os.Stderr, "Warning: Using a password with '-a' or '-u' option on the command line interface may not be safe.")
	}
	var conn net.Conn
	var err error
	if socket != "" {
		conn, err = net.DialTimeout("unix", socket, 10*time.Second)
	} else {
		conn, err = net.DialTimeout("tcp", net.JoinHostPort(host, port), 10*time.Second)
	}
	if err != nil {
		reason := err.Error()
		var se *os.SyscallError
		if errors.As(err, &se) {
			reason = se.Err.Error()
			reason = strings.ToUpper(reason[:1]) + reason[1:]
		}
		if socket != "" {
			fmt.Fprintf(os.Stderr, "Could not connect to Redis at %s: %s\n", socket, reason)
		} else {
			fmt.Fprintf(os.Stderr, "Could not connect to Redis at %s:%s: %s\n", host, port, reason)
		}
		return 1
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	call := func(cmd []string) (respValue, error) {
		if _, err := conn.Write(encodeCommand(cmd)); err != nil {
			return respValue{}, err
		}
		return readReply(r)
	}
	if auth != "" {
		if v, err := call([]string{"AUTH", auth}); err == nil && v.kind == '-' {
			fmt.Fprintf(os.Stderr, "AUTH failed: %s\n", v.str)
		}
	}
	if db != "" && db != "0" {
		if v, err := call([]string{"SELECT", db}); err == nil && v.kind == '-' {
			fmt.Fprintf(os.Stderr, "Selecting db %s failed: %s\n", db, v.str)
		}
	}
	var commands [][]string
	if len(rest) > 0 {
		commands = [][]string{rest}
	} else {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			if words := splitArgs(sc.Text()); len(words) > 0 {
				commands = append(commands, words)
			}
		}
	}
	for _, cmd := range commands {
		v, err := call(cmd)
		if err != nil {
			fmt.Fprintln(os.Stderr, "Error: Server closed the connection")
			return 1
		}
		switch {
		case strings.EqualFold(cmd[0], "info") && v.kind == '$':
			fmt.Print(v.str) // redis-cli prints INFO as it comes, in either mode
		case raw:
			fmt.Println(formatRaw(v))
		default:
			fmt.Print(formatTTY(v, ""))
		}
	}
	// redis-cli exits 0 after an error reply too (its exit code says whether it could talk to the server).
	return 0
}

func parseRedisURI(uri string) (host, port, password, db string, err error) {
	rest, ok := cutPrefix(uri, "redis://")
	if !ok {
		return "", "", "", "", errors.New("Invalid URI scheme")
	}
	host, port = "127.0.0.1", "6379"
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		userinfo := rest[:at]
		if _, pw, ok := strings.Cut(userinfo, ":"); ok {
			password = pw
		} else {
			password = userinfo
		}
		rest = rest[at+1:]
	}
	hostport, path, _ := strings.Cut(rest, "/")
	if hostport != "" {
		if h, p, err := net.SplitHostPort(hostport); err == nil {
			host, port = h, p
		} else {
			host = hostport
		}
	}
	return host, port, password, path, nil
}
