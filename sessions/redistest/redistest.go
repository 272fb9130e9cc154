// Package redistest starts throwaway redis-server processes for tests: each on a free
// loopback port (never a fixed one), persistence off unless asked, killed when the test ends.
// A missing redis-server binary fails the test: `make test` installs it (scripts/test-deps.sh).
//
// It lives outside sessions/internal so that other rooms' tests (the gateway's) can import it;
// it is test support, not part of the gateway.
//
//	srv := redistest.Start(t)            // srv.URL = "redis://127.0.0.1:PORT/0"
//	store, err := sessions.NewRedis(ctx, srv.URL, sessions.Options{})
//	srv.Kill()                           // SIGKILL, as a crash
//	srv.Restart()                        // same port (and, with AppendOnly, same data)
package redistest

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Options choose how the server runs. The zero value is a plain server with persistence off.
type Options struct {
	// AppendOnly turns the append-only file on with appendfsync always, so that every
	// acknowledged write survives Kill and Restart. Off: --save "" --appendonly no.
	AppendOnly bool
	// Password sets requirepass; URL then carries it.
	Password string
	// TLS serves TLS only (plain port 0) with a fresh self-signed certificate for 127.0.0.1;
	// URL is rediss://... and CAFile holds the certificate clients must trust.
	TLS bool
	// Args are extra redis-server arguments, e.g. "--maxmemory", "10mb".
	Args []string
}

// Server is one running (or killed) redis-server. Its methods may be called from any
// goroutine of the test, but not concurrently with each other.
type Server struct {
	// Port is the loopback port, kept across Restart.
	Port int
	// Addr is "127.0.0.1:Port".
	Addr string
	// URL is the go-redis URL: redis://[:password@]127.0.0.1:Port/0 (rediss:// with TLS).
	URL string
	// Dir is the server's working directory (AOF files, log, TLS files).
	Dir string
	// CAFile is the PEM certificate to trust with Options.TLS ("" otherwise).
	CAFile string

	t   testing.TB
	opt Options

	// mu guards cmd and done.
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// Start runs a plain redis-server with persistence off, killed at the end of the test.
func Start(t testing.TB) *Server { return StartWith(t, Options{}) }

// StartWith runs a redis-server configured by opt, killed at the end of the test.
func StartWith(t testing.TB, opt Options) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redistest: redis-server not found (make test installs it; or apt-get install -y redis-server): %v", err)
	}
	s := &Server{t: t, opt: opt, Dir: t.TempDir()}
	if opt.TLS {
		if s.CAFile, err = writeCert(s.Dir); err != nil {
			t.Fatalf("redistest: tls certificate: %v", err)
		}
	}
	t.Cleanup(s.Kill)
	var lastErr error
	for range 5 { // a free port can be taken between probing it and redis binding it
		port, err := freePort()
		if err != nil {
			t.Fatalf("redistest: free port: %v", err)
		}
		s.setPort(port)
		if lastErr = s.start(bin); lastErr == nil {
			return s
		}
	}
	t.Fatalf("redistest: start redis-server: %v", lastErr)
	return nil
}

func (s *Server) setPort(port int) {
	s.Port = port
	s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	scheme, auth := "redis", ""
	if s.opt.TLS {
		scheme = "rediss"
	}
	if s.opt.Password != "" {
		auth = ":" + s.opt.Password + "@"
	}
	s.URL = fmt.Sprintf("%s://%s%s/0", scheme, auth, s.Addr)
}

func (s *Server) args() []string {
	a := []string{"--bind", "127.0.0.1", "--dir", s.Dir, "--save", "", "--daemonize", "no",
		"--logfile", filepath.Join(s.Dir, "redis.log")}
	if s.opt.TLS {
		a = append(a, "--port", "0", "--tls-port", strconv.Itoa(s.Port),
			"--tls-cert-file", filepath.Join(s.Dir, "cert.pem"),
			"--tls-key-file", filepath.Join(s.Dir, "key.pem"),
			"--tls-ca-cert-file", s.CAFile, "--tls-auth-clients", "no")
	} else {
		a = append(a, "--port", strconv.Itoa(s.Port))
	}
	if s.opt.AppendOnly {
		a = append(a, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		a = append(a, "--appendonly", "no")
	}
	if s.opt.Password != "" {
		a = append(a, "--requirepass", s.opt.Password)
	}
	return append(a, s.opt.Args...)
}

// start launches the process and waits until it answers PING.
func (s *Server) start(bin string) error {
	cmd := exec.Command(bin, s.args()...)
	setDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("exec %s: %w", bin, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-done:
			return fmt.Errorf("redis-server on port %d exited at start; log:\n%s", s.Port, s.logTail())
		default:
		}
		if err := s.ping(); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			s.Kill()
			return fmt.Errorf("redis-server on port %d not ready after 15s: %w; log:\n%s", s.Port, err, s.logTail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ping sends one PING. A server that demands AUTH is up; one still LOADING its AOF is not.
func (s *Server) ping() error {
	d := net.Dialer{Timeout: time.Second}
	var conn net.Conn
	var err error
	if s.opt.TLS {
		conn, err = tls.DialWithDialer(&d, "tcp", s.Addr, &tls.Config{InsecureSkipVerify: true}) // probe only
	} else {
		conn, err = d.Dial("tcp", s.Addr)
	}
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	switch {
	case strings.HasPrefix(line, "+PONG"), strings.HasPrefix(line, "-NOAUTH"):
		return nil
	default:
		return errors.New(strings.TrimSpace(line))
	}
}

func (s *Server) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "redis.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// Kill sends SIGKILL (a crash: nothing is flushed beyond what appendfsync already wrote) and
// waits for the process to exit. Killing a dead server does nothing.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// Restart kills the server if it runs, then starts it again on the same port and directory
// (with AppendOnly the data comes back from the AOF), waiting until it answers.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		s.t.Fatalf("redistest: redis-server: %v", err)
	}
	var lastErr error
	for range 50 { // the port may linger briefly
		if lastErr = s.start(bin); lastErr == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("redistest: restart redis-server on port %d: %v", s.Port, lastErr)
}

// freePort asks the kernel for a free loopback port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
