package engine_test

import (
	"context"
	"fmt"

	"github.com/dsgate/dsgate/core/engine"
)

// countModel predicts "previous token + 1" (mod 10): a stand-in for core/model.
type countModel struct{}

func (countModel) Forward(_ context.Context, seqs []engine.Seq) ([][]float32, error) {
	out := make([][]float32, len(seqs))
	for i, s := range seqs {
		out[i] = make([]float32, 10)
		out[i][(s.Tokens[len(s.Tokens)-1]+1)%10] = 1
	}
	return out, nil
}
func (countModel) BlockSize() int { return 4 }
func (countModel) NumBlocks() int { return 16 }
func (countModel) VocabSize() int { return 10 }
func (countModel) MaxSeqLen() int { return 64 }

type digits struct{}

func (digits) Push(id int32) string { return fmt.Sprint(id) }
func (digits) Flush() string        { return "" }

func Example() {
	e, err := engine.New(countModel{}, engine.Options{
		EOS:           []int32{0},
		NewTextStream: func() engine.TextStream { return digits{} },
	})
	if err != nil {
		panic(err)
	}
	defer e.Close()
	events, err := e.Submit(context.Background(), engine.Request{
		Prompt:      []int32{3, 4},
		MaxTokens:   10,
		StopStrings: []string{"89"},
	})
	if err != nil {
		panic(err)
	}
	text := ""
	for ev := range events {
		text += ev.Text
		if ev.Finish != "" {
			fmt.Println(text, ev.Finish, ev.Usage.CompletionTokens)
		}
	}
	// Output: 567 stop 5
}
