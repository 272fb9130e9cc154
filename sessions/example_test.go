package sessions

import (
	"fmt"
	"strings"
)

// Example keeps a two-turn conversation the way the gateway does: mark the session busy,
// load its history, append the completed turn with the expected count, release.
func Example() {
	ctx := contextForExample()
	store := NewMemory(Options{})
	defer store.Close()
	s, _ := store.Create(ctx, "tenant-a", "You are terse.", nil)
	for i, q := range []string{"hi", "bye"} {
		release, err := store.Acquire(ctx, "tenant-a", s.ID)
		if err != nil {
			fmt.Println(err)
			return
		}
		cur, _ := store.Get(ctx, "tenant-a", s.ID)
		turn := Turn{
			Messages:  []Message{{Role: "user", Content: q}, {Role: "assistant", Content: strings.ToUpper(q)}},
			PromptIDs: []int32{int32(i), 1, 2}, OutputIDs: []int32{3},
		}
		_ = store.AppendTurn(ctx, "tenant-a", s.ID, len(cur.Turns), turn)
		release()
	}
	got, _ := store.Get(ctx, "tenant-a", s.ID)
	for _, t := range got.Turns {
		fmt.Println(t.Messages[0].Content, "->", t.Messages[1].Content, t.TokenCount(), "tokens")
	}
	_, err := store.Get(ctx, "tenant-b", s.ID)
	fmt.Println(err != nil)
	// Output:
	// hi -> HI 4 tokens
	// bye -> BYE 4 tokens
	// true
}
