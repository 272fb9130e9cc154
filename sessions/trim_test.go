package sessions

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"
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

// FuzzDecodeTurn: the stored-turn decoder never panics on arbitrary bytes, and whatever it
// accepts survives an encode/decode round trip unchanged.
func FuzzDecodeTurn(f *testing.F) {
	tr := mkTurn("x", 7)
	tr.Messages[0].Time = time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	f.Add(encodeTurn(tr))
	f.Add(encodeTurn(Turn{}))
	f.Add([]byte("T\x01\x01\x00"))
	f.Add([]byte("T\x01\xff\xff\xff\xff\x0f"))
	f.Fuzz(func(t *testing.T, data []byte) {
		tr, err := decodeTurn(data)
		if err != nil {
			return
		}
		again, err := decodeTurn(encodeTurn(tr))
		if err != nil || !reflect.DeepEqual(again, tr) {
			t.Fatalf("round trip of %x: %+v -> %+v, %v", data, tr, again, err)
		}
	})
}

func TestTurnEncoding(t *testing.T) {
	for _, tr := range []Turn{
		{},
		mkTurn("x", 7),
		{Messages: []Message{{Role: "tool", Content: "ünï\x00code", Time: time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), Tokens: -1}},
			PromptIDs: []int32{-1, 0, 1 << 30}, OutputIDs: []int32{129279}},
		{Messages: []Message{{Role: "user", Time: time.Date(3000, 1, 1, 0, 0, 0, 999999999, time.UTC)}}},
	} {
		got, err := decodeTurn(encodeTurn(tr))
		if err != nil || !reflect.DeepEqual(got, tr) {
			t.Errorf("round trip of %+v = %+v, %v", tr, got, err)
		}
	}
	good := encodeTurn(mkTurn("x", 7))
	for i := range good { // every truncation is an error, never a panic
		if _, err := decodeTurn(good[:i]); err == nil {
			t.Errorf("truncated to %d bytes: no error", i)
		}
	}
	if _, err := decodeTurn(append(good, 0)); err == nil {
		t.Error("trailing byte: no error")
	}
}
