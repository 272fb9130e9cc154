package engine

import (
	"strings"
	"testing"
)

// FuzzStopStrings checks the hold-back of stop strings against the definition (as in
// the OpenAI API, generation stops as soon as the text contains a stop string; the
// answer is the text before it), and that no text emitted along the way goes past
// that cut, however the text is split into token deltas.
func FuzzStopStrings(f *testing.F) {
	f.Add("hello world, stop here", "stop", "xyz", []byte{1, 2, 3})
	f.Add("aaaaab", "aab", "b", []byte{1})
	f.Add("abcabcabd", "abd", "cab", []byte{2, 1})
	f.Add("no match at all", "zz", "", []byte{5})
	f.Add("héllo wörld", "ö", "llo w", []byte{1, 3})
	f.Fuzz(func(t *testing.T, text, stop1, stop2 string, cuts []byte) {
		var stops []string
		for _, s := range []string{stop1, stop2} {
			if s != "" {
				stops = append(stops, s)
			}
		}
		// Generation stops at the first token delta after which the text contains a
		// stop string; the answer is that text cut before its earliest stop string.
		var deltas []string
		for i, rest := 0, text; len(rest) > 0; i++ {
			n := 1
			if len(cuts) > 0 {
				n = 1 + int(cuts[i%len(cuts)])%4
			}
			n = min(n, len(rest))
			deltas = append(deltas, rest[:n])
			rest = rest[n:]
		}
		want, seen, stopWant := text, "", false
		for _, d := range deltas {
			seen += d
			for _, st := range stops {
				if i := strings.Index(seen, st); i >= 0 && (!stopWant || i < len(want)) {
					want, stopWant = seen[:i], true
				}
			}
			if stopWant {
				break
			}
		}
		s := &seq{req: Request{StopStrings: stops}}
		var emitted string
		stopped := false
		for _, d := range deltas {
			stopped = s.addText(d)
			emitted += s.pending.Text
			s.pending.Text = ""
			if !strings.HasPrefix(want, emitted) {
				t.Fatalf("emitted %q, not a prefix of %q", emitted, want)
			}
			if stopped {
				break
			}
		}
		if !stopped {
			stopped = s.endText()
			emitted += s.pending.Text
		}
		if emitted != want || stopped != stopWant {
			t.Fatalf("text %q stops %q: emitted %q (stopped %v), want %q", text, stops, emitted, stopped, want)
		}
	})
}
