package model

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/dsgate/dsgate/core/backend"
)

// stackedRef is a reference rank that also implements backend.RoutedExperts, the way a
// device backend would: LoadExperts keeps the rank's experts in its own structure and
// RoutedMoE computes the documented sum slot by slot (token-major, in top-k order: not
// the per-expert path's expert-major order), so only the model's wiring is shared with
// the per-expert path.
type stackedRef struct {
	backend.Backend
	decline       bool         // LoadExperts returns (nil, nil)
	expertUploads atomic.Int64 // LoadWeight calls for routed experts
	calls         atomic.Int64 // RoutedMoE calls
}

type refExperts struct {
	first   int
	w13, w2 []backend.Weight
}

func (e *refExperts) First() int { return e.first }
func (e *refExperts) Count() int { return len(e.w13) }

func (s *stackedRef) AbortCollectives(cause error) {
	if a, ok := s.Backend.(backend.Aborter); ok {
		a.AbortCollectives(cause)
	}
}

func (s *stackedRef) ResetCollectives() {
	if a, ok := s.Backend.(backend.Aborter); ok {
		a.ResetCollectives()
	}
}

func (s *stackedRef) LoadWeight(hw *backend.HostWeight) (backend.Weight, error) {
	if n := strings.ToLower(hw.Name); strings.Contains(n, "experts.") && !strings.Contains(n, "shared") {
		s.expertUploads.Add(1)
	}
	return s.Backend.LoadWeight(hw)
}

func (s *stackedRef) LoadExperts(first int, w13, w2 []*backend.HostWeight) (backend.Experts, error) {
	if s.decline {
		return nil, nil
	}
	ex := &refExperts{first: first}
	for i := range w13 {
		a, err := s.Backend.LoadWeight(w13[i])
		if err != nil {
			return nil, err
		}
		b, err := s.Backend.LoadWeight(w2[i])
		if err != nil {
			return nil, err
		}
		ex.w13, ex.w2 = append(ex.w13, a), append(ex.w2, b)
	}
	return ex, nil
}

func (s *stackedRef) RoutedMoE(out, x backend.Tensor, idx []int32, w []float32, topK, numExperts int, e backend.Experts) error {
	ex := e.(*refExperts)
	s.calls.Add(1)
	m, d := x.Rows(), x.Cols()
	acc := make([]float32, m*d)
	y := make([]float32, d)
	for i := 0; i < m; i++ {
		xi, err := s.Slice(x, i, 1, 0, d)
		if err != nil {
			return err
		}
		for q := 0; q < topK; q++ {
			id := int(idx[i*topK+q])
			if id < 0 || id >= numExperts {
				return fmt.Errorf("expert id %d outside [0,%d)", id, numExperts)
			}
			z := id - ex.first
			if z < 0 || z >= len(ex.w13) {
				continue
			}
			g, _ := s.NewTensor(1, ex.w13[z].N())
			a, _ := s.NewTensor(1, ex.w13[z].N()/2)
			o, _ := s.NewTensor(1, d)
			for _, err := range []error{s.Linear(g, xi, ex.w13[z]), s.SwiGLU(a, g), s.Linear(o, a, ex.w2[z]), s.Read(o, y)} {
				if err != nil {
					return err
				}
			}
			for j, v := range y {
				acc[i*d+j] += w[i*topK+q] * v
			}
		}
	}
	return s.Write(out, acc)
}

func stackedFactory(decline bool, ranks *[]*stackedRef) backend.Factory {
	return func(w int) ([]backend.Backend, error) {
		bs, err := backend.NewReferenceGroup(w)
		if err != nil {
			return nil, err
		}
		for i, b := range bs {
			s := &stackedRef{Backend: b, decline: decline}
			*ranks = append(*ranks, s)
			bs[i] = s
		}
		return bs, nil
	}
}

// TestRoutedExpertsPath loads the golden checkpoints on a backend with
// backend.RoutedExperts: the model stacks each rank's experts once (no per-expert
// upload), calls RoutedMoE in every MoE layer of every step, and the logits still match
// transformers (1e-4) and the per-expert path (1e-5). A backend that declines the
// experts gets the per-expert path, bit for bit.
func TestRoutedExpertsPath(t *testing.T) {
	for _, tc := range []struct {
		ckpt  string
		world int
	}{{"v3", 1}, {"v3", 2}, {"v2", 2}} {
		t.Run(fmt.Sprintf("%s-W%d", tc.ckpt, tc.world), func(t *testing.T) {
			g := loadGolden(t, tc.ckpt)
			ctx := context.Background()
			plain := loadModel(t, tc.ckpt, Options{WorldSize: tc.world, Backend: "reference"})
			want, err := plain.Logits(ctx, g.ids)
			if err != nil {
				t.Fatal(err)
			}
			for _, decline := range []bool{false, true} {
				var ranks []*stackedRef
				m := loadModel(t, tc.ckpt, Options{WorldSize: tc.world, Backend: "stacked", Factory: stackedFactory(decline, &ranks)})
				got, err := m.Logits(ctx, g.ids)
				if err != nil {
					t.Fatal(err)
				}
				cfg := m.Config()
				moeLayers := int64(cfg.NLayers - cfg.NDenseLayers)
				perRank := int64(cfg.NRoutedExperts / tc.world)
				wantCalls, wantUploads := moeLayers, int64(0)
				if decline {
					wantCalls, wantUploads = 0, 2*perRank*moeLayers
				}
				for r, s := range ranks {
					if c, u := s.calls.Load(), s.expertUploads.Load(); c != wantCalls || u != wantUploads {
						t.Errorf("decline=%v rank %d: %d RoutedMoE calls and %d per-expert uploads, want %d and %d", decline, r, c, u, wantCalls, wantUploads)
					}
				}
				worstGolden, worstPlain := 0.0, 0.0
				for i := range got {
					worstGolden = math.Max(worstGolden, relErr(got[i], g.logits[i]))
					worstPlain = math.Max(worstPlain, relErr(got[i], want[i]))
				}
				t.Logf("decline=%v: worst rel err %.3g vs transformers, %.3g vs the per-expert path", decline, worstGolden, worstPlain)
				if worstGolden > 1e-4 || worstPlain > 1e-5 || (decline && worstPlain != 0) {
					t.Errorf("decline=%v: rel err %.3g vs transformers (max 1e-4), %.3g vs the per-expert path (max 1e-5, 0 when declined)", decline, worstGolden, worstPlain)
				}
			}
		})
	}
}
