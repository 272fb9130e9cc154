package model

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/dsgate/dsgate/configs"
	"github.com/dsgate/dsgate/convert"
	"github.com/dsgate/dsgate/core/backend"
)

// Two Models, each holding one of the two ranks of one reference group (as two nodes
// would), run the same steps in lockstep: the one with rank 0 returns the logits of a
// single-process world-size-2 model; the other returns nil per sequence. Both for a
// Hugging Face checkpoint (full tensors, sharded at load) and a converted mp2 one (one
// file per rank, of which each process reads only its own).
func TestLocalRanksSplitTheWorld(t *testing.T) {
	for _, dir := range []string{ckptDir("v3"), convertTo(t, writeBF16Copy(t, ckptDir("v3")), convert.ModeBF16Int8, 2, 0)} {
		t.Run(filepath.Base(dir), func(t *testing.T) { splitTheWorld(t, dir) })
	}
}

func splitTheWorld(t *testing.T, dir string) {
	cfg, err := configs.FromCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	load := func(opt Options) *Model {
		opt.NumBlocks, opt.BlockSize = 32, 4
		m, err := Load(context.Background(), dir, cfg, opt)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		return m
	}
	bs, err := backend.NewReferenceGroup(2)
	if err != nil {
		t.Fatal(err)
	}
	half := func(r int) *Model {
		return load(Options{Backend: "reference", WorldSize: 2, RankBase: r, LocalRanks: 1,
			Factory: func(w int) ([]backend.Backend, error) {
				if w != 2 {
					t.Errorf("factory asked for world %d", w)
				}
				return bs[r : r+1], nil
			}})
	}
	nodes := []*Model{half(0), half(1)}
	whole := load(Options{Backend: "reference", WorldSize: 2})
	if base, n := nodes[1].LocalRanks(); base != 1 || n != 1 || nodes[1].WorldSize() != 2 {
		t.Fatalf("node 1 runs [%d,+%d) of %d", base, n, nodes[1].WorldSize())
	}
	g := loadGolden(t, "v3")
	steps := [][]Seq{
		{{Tokens: g.ids, Blocks: blocksFor(len(g.ids)+1, 4, 0), AllLogits: true}},
		{{Tokens: g.greedy[:1], Pos: len(g.ids), Blocks: blocksFor(len(g.ids)+1, 4, 0)}},
	}
	for i, seqs := range steps {
		want, err := whole.Forward(context.Background(), seqs)
		if err != nil {
			t.Fatal(err)
		}
		got := make([][][]float32, 2)
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for n, m := range nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				got[n], errs[n] = m.Forward(context.Background(), seqs)
			}()
		}
		wg.Wait()
		if errs[0] != nil || errs[1] != nil {
			t.Fatalf("step %d: %v, %v", i, errs[0], errs[1])
		}
		if e := relErr(got[0][0], want[0]); e != 0 {
			t.Fatalf("step %d: node 0's logits differ from the single-process model by %.3g", i, e)
		}
		if got[1][0] != nil {
			t.Fatalf("step %d: node 1 (no rank 0) returned logits", i)
		}
	}
}

func TestLocalRanksValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		opt  Options
		want string
	}{
		{"outside the world", Options{WorldSize: 2, RankBase: 1, LocalRanks: 2}, "not inside the world"},
		{"negative base", Options{WorldSize: 2, RankBase: -1, LocalRanks: 1}, "not inside the world"},
		{"base without count", Options{WorldSize: 2, RankBase: 1}, "not inside the world"},
		{"cpu cannot span processes", Options{WorldSize: 2, RankBase: 1, LocalRanks: 1}, "needs a backend factory"},
		{"factory makes the wrong count", Options{WorldSize: 2, RankBase: 0, LocalRanks: 1, Factory: backend.NewReferenceGroup}, "made 2 ranks, want 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := configs.FromCheckpoint(ckptDir("v3"))
			if err != nil {
				t.Fatal(err)
			}
			_, err = Load(context.Background(), ckptDir("v3"), cfg, tc.opt)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
