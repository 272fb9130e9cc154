package api

import "testing"

// Exported for the external tests (stores_test.go) that run the suites against the real
// stores through package adapt (which imports api, so they cannot live in package api).

// Harness is the test server with fake engine and tokenizer.
type Harness = harness

// Resp is one HTTP response.
type Resp = resp

// NewHarness starts a test server; mod adjusts its Config.
func NewHarness(t *testing.T, mod func(*Config)) *Harness { return newHarness(t, mod) }

// Do sends one request.
func (h *harness) Do(method, path, key string, body any, hdr ...string) Resp {
	return h.do(method, path, key, body, hdr...)
}

// Status, JSON and ErrCode read a response.
func (r resp) Status() int                      { return r.status }
func (r resp) JSON(t *testing.T) map[string]any { return r.json(t) }
func (r resp) ErrCode(t *testing.T) string      { return r.errCode(t) }

// RunSessionSuite runs the session behaviour tests against stores made by f.
func RunSessionSuite(t *testing.T, f func(t *testing.T) SessionStore) { runSessionSuite(t, f) }

// ChatBody is a small chat request; extra overrides fields (nil deletes).
func ChatBody(extra map[string]any) map[string]any { return chatBody(extra) }

// Test keys.
const (
	KeyA = keyA
	KeyB = keyB
)

// BlockEngine makes the next generations wait until the returned func is called; started
// receives once per generation that began waiting.
func (h *harness) BlockEngine() (started <-chan struct{}, release func()) {
	blk, st := make(chan struct{}), make(chan struct{}, 4)
	h.eng.set(func(f *fakeEngine) { f.block, f.started = blk, st })
	return st, func() {
		h.eng.set(func(f *fakeEngine) { f.block, f.started = nil, nil })
		close(blk)
	}
}
