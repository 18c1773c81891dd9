package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// curl exit codes (curl's own numbers).
const (
	curlOK             = 0
	curlFailedInit     = 2
	curlURLMalformat   = 3
	curlCantResolve    = 6
	curlCantConnect    = 7
	curlHTTPError      = 22
	curlWriteError     = 23
	curlTimeout        = 28
	curlTooManyRedirs  = 47
	curlGotNothing     = 52
	curlRecvError      = 56
	curlSSLCertProblem = 60
)

type curlOptions struct {
	fail, failWithBody, silent, showError, location, head, include, insecure bool
	output, method, data, user, agent, writeOut, unixSocket                  string
	maxTime, connectTimeout                                                  time.Duration
	maxRedirs                                                                int
	headers, urls                                                            []string
}

type curlError struct {
	code int
	msg  string
}

func (e *curlError) Error() string { return e.msg }

func curlUsage(msg string) int {
	fmt.Fprintf(os.Stderr, "curl: %s\ncurl: try 'curl --help' or 'curl --manual' for more information\n", msg)
	return curlFailedInit
}

func parseSeconds(v string) (time.Duration, error) {
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 {
		return 0, fmt.Errorf("expected a proper numerical parameter")
	}
	return time.Duration(f * float64(time.Second)), nil
}

// parseCurlArgs reads the options healthchecks use; short flags may be bundled (-fsS).
func parseCurlArgs(args []string) (*curlOptions, error) {
	o := &curlOptions{maxRedirs: 50, agent: "curl/7.88.1"}
	takesValue := map[string]bool{
		"o": true, "H": true, "m": true, "X": true, "d": true, "u": true, "A": true, "w": true,
		"output": true, "header": true, "max-time": true, "request": true, "data": true, "data-raw": true,
		"user": true, "user-agent": true, "write-out": true, "connect-timeout": true, "max-redirs": true,
		"unix-socket": true, "retry": true, "retry-delay": true, "retry-max-time": true, "url": true,
	}
	set := func(name, value string) error {
		var err error
		switch name {
		case "f", "fail":
			o.fail = true
		case "fail-with-body":
			o.fail, o.failWithBody = true, true
		case "s", "silent":
			o.silent = true
		case "S", "show-error":
			o.showError = true
		case "L", "location":
			o.location = true
		case "I", "head":
			o.head = true
		case "i", "include":
			o.include = true
		case "k", "insecure":
			o.insecure = true
		case "4", "6", "v", "verbose", "q", "disable", "compressed", "no-progress-meter", "http1.1", "no-keepalive":
		case "o", "output":
			o.output = value
		case "H", "header":
			o.headers = append(o.headers, value)
		case "m", "max-time":
			o.maxTime, err = parseSeconds(value)
		case "connect-timeout":
			o.connectTimeout, err = parseSeconds(value)
		case "X", "request":
			o.method = value
		case "d", "data", "data-raw":
			if strings.HasPrefix(value, "@") && name != "data-raw" {
				b, rerr := os.ReadFile(value[1:])
				if rerr != nil {
					return fmt.Errorf("Failed to open %s", value[1:])
				}
				value = strings.NewReplacer("\r", "", "\n", "").Replace(string(b))
			}
			if o.data != "" {
				o.data += "&"
			}
			o.data += value
		case "u", "user":
			o.user = value
		case "A", "user-agent":
			o.agent = value
		case "w", "write-out":
			o.writeOut = value
		case "max-redirs":
			o.maxRedirs, err = strconv.Atoi(value)
		case "unix-socket":
			o.unixSocket = value
		case "url":
			o.urls = append(o.urls, value)
		case "retry", "retry-delay", "retry-max-time":
			_, err = strconv.Atoi(value)
		default:
			return fmt.Errorf("option %s: is unknown", map[bool]string{true: "-", false: "--"}[len(name) == 1]+name)
		}
		return err
	}
	for i := 0; i < len(args); i++ {
		arg := args[i]
		switch {
		case arg == "--":
			o.urls = append(o.urls, args[i+1:]...)
			i = len(args)
		case strings.HasPrefix(arg, "--"):
			name, value, hasValue := strings.Cut(arg[2:], "=")
			if takesValue[name] && !hasValue {
				if i+1 >= len(args) {
					return nil, fmt.Errorf("option --%s: requires parameter", name)
				}
				i++
				value = args[i]
			}
			if err := set(name, value); err != nil {
				return nil, err
			}
		case strings.HasPrefix(arg, "-") && len(arg) > 1:
			flags := arg[1:]
			for j := 0; j < len(flags); j++ {
				name := flags[j : j+1]
				if takesValue[name] {
					value := flags[j+1:]
					if value == "" {
						if i+1 >= len(args) {
							return nil, fmt.Errorf("option -%s: requires parameter", name)
						}
						i++
						value = args[i]
					}
					if err := set(name, value); err != nil {
						return nil, err
					}
					break
				}
				if err := set(name, ""); err != nil {
					return nil, err
				}
			}
		default:
			o.urls = append(o.urls, arg)
		}
	}
	return o, nil
}

func runCurl(args []string) int {
	o, err := parseCurlArgs(args)
	if err != nil {
		return curlUsage(err.Error())
	}
	if len(o.urls) == 0 {
		return curlUsage("no URL specified!")
	}
	code := curlOK
	for _, u := range o.urls {
		if err := curlOne(o, u); err != nil {
			var ce *curlError
			if !errors.As(err, &ce) {
				ce = &curlError{curlRecvError, err.Error()}
			}
			if !o.silent || o.showError {
				fmt.Fprintf(os.Stderr, "curl: (%d) %s\n", ce.code, ce.msg)
			}
			code = ce.code
		}
	}
	return code
}

// dialer resolves localhost itself (as curl does) and connects within the connect timeout.
func curlDialer(o *curlOptions) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: o.connectTimeout}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if o.unixSocket != "" {
			return d.DialContext(ctx, "unix", o.unixSocket)
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if h := strings.ToLower(host); h == "localhost" || strings.HasSuffix(h, ".localhost") {
			var last error
			for _, ip := range []string{"127.0.0.1", "::1"} {
				conn, err := d.DialContext(ctx, network, net.JoinHostPort(ip, port))
				if err == nil {
					return conn, nil
				}
				last = err
			}
			return nil, last
		}
		return d.DialContext(ctx, network, addr)
	}
}

// classify turns a transfer error into curl's exit code and message.
func classify(err error, u *url.URL, elapsed time.Duration, received int64) *curlError {
	port := u.Port()
	if port == "" {
		port = map[string]string{"https": "443"}[u.Scheme]
		if port == "" {
			port = "80"
		}
	}
	ms := elapsed.Milliseconds()
	var dnsErr *net.DNSError
	var opErr *net.OpError
	var unknownCA x509.UnknownAuthorityError
	var badHost x509.HostnameError
	var badCert x509.CertificateInvalidError
	switch {
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) || isTimeout(err):
		if errors.As(err, &opErr) && opErr.Op == "dial" {
			return &curlError{curlTimeout, fmt.Sprintf("Connection timed out after %d milliseconds", ms)}
		}
		return &curlError{curlTimeout, fmt.Sprintf("Operation timed out after %d milliseconds with %d bytes received", ms, received)}
	case errors.As(err, &dnsErr):
		return &curlError{curlCantResolve, "Could not resolve host: " + u.Hostname()}
	case errors.As(err, &opErr) && opErr.Op == "dial":
		reason := "Couldn't connect to server"
		if errors.Is(err, syscall.ECONNREFUSED) {
			reason = "Connection refused"
		}
		return &curlError{curlCantConnect, fmt.Sprintf("Failed to connect to %s port %s after %d ms: %s", u.Hostname(), port, ms, reason)}
	case errors.As(err, &unknownCA) || errors.As(err, &badHost) || errors.As(err, &badCert):
		return &curlError{curlSSLCertProblem, "SSL certificate problem: " + err.Error()}
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		if received == 0 {
			return &curlError{curlGotNothing, "Empty reply from server"}
		}
		return &curlError{curlRecvError, "Failure when receiving data from the peer"}
	}
	return &curlError{curlRecvError, "Failure when receiving data from the peer: " + err.Error()}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func curlOne(o *curlOptions, raw string) (result error) {
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return &curlError{curlURLMalformat, "URL using bad/illegal format or missing URL"}
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return &curlError{1, fmt.Sprintf("Protocol \"%s\" not supported or disabled in libcurl", u.Scheme)}
	}
	ctx := context.Background()
	if o.maxTime > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.maxTime)
		defer cancel()
	}
	method := o.method
	if method == "" {
		switch {
		case o.head:
			method = http.MethodHead
		case o.data != "":
			method = http.MethodPost
		default:
			method = http.MethodGet
		}
	}
	var body io.Reader
	if o.data != "" {
		body = strings.NewReader(o.data)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return &curlError{curlURLMalformat, "URL using bad/illegal format or missing URL"}
	}
	req.Header.Set("User-Agent", o.agent)
	req.Header.Set("Accept", "*/*")
	if o.data != "" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if o.user != "" {
		user, pass, _ := strings.Cut(o.user, ":")
		req.SetBasicAuth(user, pass)
	}
	for _, h := range o.headers {
		name, value, ok := strings.Cut(h, ":")
		if !ok {
			continue
		}
		value = strings.TrimSpace(value)
		if strings.EqualFold(name, "Host") {
			req.Host = value
		} else {
			req.Header.Set(name, value)
		}
	}
	transport := &http.Transport{
		Proxy:              nil,
		DialContext:        curlDialer(o),
		TLSClientConfig:    &tls.Config{InsecureSkipVerify: o.insecure}, //nolint:gosec // curl -k
		DisableCompression: true,
	}
	redirects := 0
	client := &http.Client{Transport: transport, CheckRedirect: func(*http.Request, []*http.Request) error {
		if !o.location {
			return http.ErrUseLastResponse
		}
		redirects++
		if redirects > o.maxRedirs {
			return &curlError{curlTooManyRedirs, fmt.Sprintf("Maximum (%d) redirects followed", o.maxRedirs)}
		}
		return nil
	}}
	start := time.Now()
	var received int64
	status := 0
	defer func() {
		if o.writeOut != "" {
			code := curlOK
			var ce *curlError
			if errors.As(result, &ce) {
				code = ce.code
			}
			fmt.Print(expandWriteOut(o.writeOut, status, u.String(), received, time.Since(start), code))
		}
	}()
	resp, err := client.Do(req)
	if err != nil {
		var ce *curlError
		if errors.As(err, &ce) {
			return ce
		}
		return classify(err, u, time.Since(start), 0)
	}
	defer resp.Body.Close()
	status = resp.StatusCode
	if o.fail && resp.StatusCode >= 400 && !o.failWithBody {
		return &curlError{curlHTTPError, fmt.Sprintf("The requested URL returned error: %d", resp.StatusCode)}
	}
	var out io.Writer = os.Stdout
	if o.output != "" && o.output != "-" {
		f, err := os.Create(o.output)
		if err != nil {
			return &curlError{curlWriteError, fmt.Sprintf("Failed to open the file %s: %v", o.output, err)}
		}
		defer f.Close()
		out = f
	}
	if o.head || o.include {
		var b strings.Builder
		fmt.Fprintf(&b, "%s %s\r\n", resp.Proto, resp.Status)
		_ = resp.Header.Write(&b)
		b.WriteString("\r\n")
		if _, err := io.WriteString(out, b.String()); err != nil {
			return &curlError{curlWriteError, "Failure writing output to destination"}
		}
	}
	if !o.head {
		n, err := io.Copy(out, resp.Body)
		received = n
		if err != nil {
			var pe *os.PathError
			if errors.As(err, &pe) {
				return &curlError{curlWriteError, "Failure writing output to destination"}
			}
			return classify(err, u, time.Since(start), received)
		}
	}
	if o.failWithBody && resp.StatusCode >= 400 {
		return &curlError{curlHTTPError, fmt.Sprintf("The requested URL returned error: %d", resp.StatusCode)}
	}
	return nil
}

// expandWriteOut fills in the -w variables healthchecks use.
func expandWriteOut(format string, status int, effective string, size int64, elapsed time.Duration, exit int) string {
	r := strings.NewReplacer(
		"%{http_code}", fmt.Sprintf("%03d", status), "%{response_code}", fmt.Sprintf("%03d", status),
		"%{url_effective}", effective, "%{size_download}", strconv.FormatInt(size, 10),
		"%{time_total}", fmt.Sprintf("%.6f", elapsed.Seconds()), "%{exitcode}", strconv.Itoa(exit),
		`\n`, "\n", `\t`, "\t", `\r`, "\r",
	)
	return r.Replace(format)
}
