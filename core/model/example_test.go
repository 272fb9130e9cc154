package model_test

import (
	"context"
	"fmt"
	"slices"

	"github.com/dsgate/dsgate/configs"
	"github.com/dsgate/dsgate/core/model"
	"github.com/dsgate/dsgate/core/safetensors"
)

// Greedy decoding over the paged latent cache: prefill a prompt, then feed back the
// argmax one token at a time; the block table maps positions to cache blocks. The
// tokens are compared with the ones transformers generated (testdata/gen_goldens.py).
func ExampleModel_Forward() {
	dir := "testdata/v3" // tiny DeepSeek-V3-like checkpoint (HF names, float32)
	cfg, err := configs.FromCheckpoint(dir)
	if err != nil {
		panic(err)
	}
	m, err := model.Load(context.Background(), dir, cfg, model.Options{BlockSize: 16, NumBlocks: 4})
	if err != nil {
		panic(err)
	}
	defer m.Close()
	golden, err := safetensors.OpenFile("testdata/v3.golden.safetensors")
	if err != nil {
		panic(err)
	}
	defer golden.Close()
	idsT, _ := golden.Tensor("ids")
	prompt, _ := idsT.Int32s()
	wantT, _ := golden.Tensor("greedy")
	want, _ := wantT.Int32s()

	blocks := []int32{2, 0, 3} // positions 0-15 in block 2, 16-31 in block 0, 32-47 in block 3
	seq := model.Seq{Tokens: prompt, Blocks: blocks}
	var out []int32
	for len(out) < len(want) {
		logits, err := m.Forward(context.Background(), []model.Seq{seq})
		if err != nil {
			panic(err)
		}
		next := int32(0)
		for i, v := range logits[0] {
			if v > logits[0][next] {
				next = int32(i)
			}
		}
		out = append(out, next)
		seq = model.Seq{Tokens: []int32{next}, Pos: seq.Pos + len(seq.Tokens), Blocks: blocks}
	}
	fmt.Println(len(out), "tokens, same as transformers:", slices.Equal(out, want))
	// Output: 16 tokens, same as transformers: true
}
