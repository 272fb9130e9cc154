package sessions

import (
	"testing"

	"github.com/dsgate/dsgate/sessions/redistest"
	"go.uber.org/goleak"
)

// TestRedisCloseLeaksNothing: a Redis store that went through an outage and reconnected
// leaves no goroutine behind after Close.
func TestRedisCloseLeaksNothing(t *testing.T) {
	srv := redistest.Start(t)
	ignore := goleak.IgnoreCurrent()
	st, err := NewRedis(t.Context(), srv.URL, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := st.Create(t.Context(), "alice", "", nil)
	rel, _ := st.Acquire(t.Context(), "alice", s.ID)
	rel()
	srv.Kill()
	_ = st.Ping(t.Context())
	srv.Restart()
	waitUp(t, st)
	wantErr(t, "close", st.Close(), nil)
	goleak.VerifyNone(t, ignore, goleak.IgnoreAnyFunction("github.com/dsgate/dsgate/sessions/redistest.(*Server).start.func1"))
}
