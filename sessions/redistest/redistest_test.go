package redistest

import (
	"net"
	"testing"
)

func TestStartKillRestart(t *testing.T) {
	s := Start(t)
	if err := s.ping(); err != nil {
		t.Fatalf("ping after start: %v", err)
	}
	s.Kill()
	if c, err := net.Dial("tcp", s.Addr); err == nil {
		c.Close()
		t.Fatalf("port %d still answers after Kill", s.Port)
	}
	port := s.Port
	s.Restart()
	if s.Port != port {
		t.Fatalf("restart moved port %d -> %d", port, s.Port)
	}
	if err := s.ping(); err != nil {
		t.Fatalf("ping after restart: %v", err)
	}
}

func TestPasswordAndTLS(t *testing.T) {
	for _, opt := range []Options{{Password: "s3cret"}, {TLS: true}, {AppendOnly: true}} {
		s := StartWith(t, opt)
		if err := s.ping(); err != nil {
			t.Fatalf("%+v: ping: %v", opt, err)
		}
	}
}
