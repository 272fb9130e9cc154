package sessions

import (
	"context"
	"fmt"
	"reflect"
	"testing"
)

func contextForExample() context.Context { return context.Background() }

func turnOf(n int) Turn { return Turn{PromptIDs: make([]int32, n)} }

func TestTrimTurns(t *testing.T) {
	turns := []Turn{turnOf(5), turnOf(3), turnOf(4), turnOf(2)} // oldest first
	for _, tc := range []struct {
		budget, dropped int
	}{
		{14, 0}, {100, 0}, {13, 1}, {9, 1}, {8, 2}, {6, 2}, {5, 3}, {2, 3}, {1, 4}, {0, 4}, {-1, 4},
	} {
		kept, dropped := TrimTurns(turns, tc.budget, nil)
		if dropped != tc.dropped || len(kept) != len(turns)-dropped || (len(kept) > 0 && &kept[0] != &turns[dropped]) {
			t.Errorf("budget %d: dropped %d (kept %d), want %d", tc.budget, dropped, len(kept), tc.dropped)
		}
	}
	// A custom cost, and turns stored without ids counted by their messages.
	msgs := []Turn{{Messages: []Message{{Tokens: 4}, {Tokens: 6}}}, {Messages: []Message{{Tokens: 1}, {Tokens: -3}}}}
	if _, d := TrimTurns(msgs, 5, nil); d != 1 {
		t.Errorf("message-counted trim dropped %d, want 1", d)
	}
	if _, d := TrimTurns(msgs, 5, func(Turn) int { return 1 }); d != 0 {
		t.Errorf("custom-cost trim dropped %d, want 0", d)
	}
	if kept, d := TrimTurns(nil, 10, nil); len(kept) != 0 || d != 0 {
		t.Errorf("nil turns: %v %d", kept, d)
	}
}

// FuzzTrimTurns checks TrimTurns's contract on arbitrary turn sizes and budgets: the kept
// turns are a suffix that fits, and one more turn would not have fit.
func FuzzTrimTurns(f *testing.F) {
	f.Add([]byte{5, 3, 4, 2}, 9)
	f.Add([]byte{}, 0)
	f.Add([]byte{0, 0, 255}, -3)
	f.Fuzz(func(t *testing.T, sizes []byte, budget int) {
		turns := make([]Turn, len(sizes))
		for i, s := range sizes {
			turns[i] = turnOf(int(s))
		}
		kept, dropped := TrimTurns(turns, budget, nil)
		if dropped < 0 || dropped > len(turns) || len(kept) != len(turns)-dropped {
			t.Fatalf("dropped %d kept %d of %d", dropped, len(kept), len(turns))
		}
		used := 0
		for _, k := range kept {
			used += k.TokenCount()
		}
		if len(kept) > 0 && used > budget {
			t.Fatalf("kept %d tokens over budget %d", used, budget)
		}
		if budget >= 0 && dropped > 0 && used+turns[dropped-1].TokenCount() <= budget {
			t.Fatalf("dropped turn %d (%d tokens) fits: used %d budget %d", dropped-1, turns[dropped-1].TokenCount(), used, budget)
		}
	})
}

// FuzzValidID: validID accepts exactly the ids newID makes.
func FuzzValidID(f *testing.F) {
	id, _ := newID()
	f.Add(id)
	f.Add("s_0123456789abcdef0123456789ABCDEF")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		want := len(s) == 34 && s[:2] == "s_"
		for _, c := range s[min(2, len(s)):] {
			want = want && (c >= '0' && c <= '9' || c >= 'a' && c <= 'f')
		}
		if got := validID(s); got != want {
			t.Fatalf("validID(%q) = %v", s, got)
		}
	})
}

func ExampleTrimTurns() {
	turns := []Turn{turnOf(500), turnOf(300), turnOf(200)}
	kept, dropped := TrimTurns(turns, 600, nil)
	fmt.Println(len(kept), "kept,", dropped, "dropped")
	// Output: 2 kept, 1 dropped
}

// FuzzDecodeTurn: the stored-turn decoder never panics, and whatever it accepts re-encodes to
// a turn that decodes the same.
func FuzzDecodeTurn(f *testing.F) {
	good, _ := encodeTurn(mkTurn("x", 7))
	f.Add(good)
	f.Add([]byte(`{"messages":null,"prompt_ids_le32":"AQID"}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, data []byte) {
		tr, err := decodeTurn(data)
		if err != nil {
			return
		}
		again, err := encodeTurn(tr)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		tr2, err := decodeTurn(again)
		if err != nil || !reflect.DeepEqual(tr.PromptIDs, tr2.PromptIDs) || !reflect.DeepEqual(tr.OutputIDs, tr2.OutputIDs) || len(tr.Messages) != len(tr2.Messages) {
			t.Fatalf("round trip changed the turn: %v", err)
		}
	})
}
