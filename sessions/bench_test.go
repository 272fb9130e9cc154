package sessions

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dsgate/dsgate/sessions/redistest"
)

// benchTurn is a typical chat turn: ~1 KB of text each way, 300 prompt ids, 250 output ids.
func benchTurn(i int) Turn {
	p := make([]int32, 300)
	o := make([]int32, 250)
	for j := range p {
		p[j] = int32(100000 + i + j)
	}
	for j := range o {
		o[j] = int32(120000 + i + j)
	}
	return Turn{
		Messages: []Message{
			{Role: "user", Content: strings.Repeat("question ", 120), Tokens: 300},
			{Role: "assistant", Content: strings.Repeat("answer ", 150), Tokens: 250},
		},
		PromptIDs: p, OutputIDs: o,
	}
}

// BenchmarkTurn measures what the session store adds to each chat turn. "load+append": Get
// (load the history) then AppendTurn; "gateway": Acquire, Get, AppendTurn, release, as the
// gateway runs a turn. Sessions grow to 16 turns of benchTurn size, then a new one starts
// (creation not timed). Reports per-turn latency percentiles in microseconds.
func BenchmarkTurn(b *testing.B) {
	stores := map[string]func(b *testing.B) Store{
		"memory": func(*testing.B) Store { return NewMemory(Options{}) },
		"redis": func(b *testing.B) Store {
			srv := redistest.Start(b)
			s, err := NewRedis(b.Context(), srv.URL, Options{})
			if err != nil {
				b.Fatal(err)
			}
			return s
		},
	}
	for _, bc := range []struct {
		name, store string
		busy        bool
	}{
		{"memory/load+append", "memory", false}, {"memory/gateway", "memory", true},
		{"redis/load+append", "redis", false}, {"redis/gateway", "redis", true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			st := stores[bc.store](b)
			defer st.Close()
			ctx := b.Context()
			turn := benchTurn(0)
			var lat []time.Duration
			var id string
			n := 0
			b.ResetTimer()
			for b.Loop() {
				if n%16 == 0 {
					b.StopTimer()
					s, err := st.Create(ctx, "bench", "system", nil)
					if err != nil {
						b.Fatal(err)
					}
					id = s.ID
					b.StartTimer()
				}
				start := time.Now()
				release := func() {}
				if bc.busy {
					var err error
					if release, err = st.Acquire(ctx, "bench", id); err != nil {
						b.Fatal(err)
					}
				}
				s, err := st.Get(ctx, "bench", id)
				if err != nil {
					b.Fatal(err)
				}
				if err := st.AppendTurn(ctx, "bench", id, len(s.Turns), turn); err != nil {
					b.Fatal(err)
				}
				release()
				lat = append(lat, time.Since(start))
				n++
			}
			slices.Sort(lat)
			pct := func(p float64) float64 {
				return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Nanoseconds()) / 1e3
			}
			b.ReportMetric(pct(0.50), "p50-µs/turn")
			b.ReportMetric(pct(0.99), "p99-µs/turn")
			b.ReportMetric(0, "ns/op") // the percentiles are the figures; ns/op includes setup
		})
	}
}
