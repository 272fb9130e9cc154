package model

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/dsgate/dsgate/configs"
	"github.com/dsgate/dsgate/core/backend"
	"github.com/dsgate/dsgate/core/safetensors"
)

// demoTensor is one tensor of a random checkpoint: HF name, shape and how to draw it.
type demoTensor struct {
	name  string
	shape []int
	std   float64 // normal(0, std); for norms: 1 + normal(0, std)
	norm  bool
	f32   bool // stored F32 (router correction bias), else BF16
}

// demoTensors lists every tensor of cfg under Hugging Face names, with the scales
// gen_goldens.py uses: projections N(0, gain/√fan_in), norms 1 + N(0, 0.2²), embedding
// N(0, 1), router bias N(0, 0.1²), LM head gain 4 — attention and routing are clearly
// non-uniform, like a trained model's.
func demoTensors(cfg configs.Model) []demoTensor {
	var out []demoTensor
	lin := func(name string, n, k int, gain float64) {
		out = append(out, demoTensor{name: name, shape: []int{n, k}, std: gain / math.Sqrt(float64(k))})
	}
	vec := func(name string, n int) {
		out = append(out, demoTensor{name: name, shape: []int{n}, std: 0.2, norm: true})
	}
	out = append(out, demoTensor{name: "model.embed_tokens.weight", shape: []int{cfg.VocabSize, cfg.Dim}, std: 1})
	for l := 0; l < cfg.NLayers; l++ {
		for _, s := range layerSpecs(cfg, l) {
			name := s.hfName()
			switch {
			case s.kind == kindVector && s.bias:
				out = append(out, demoTensor{name: name, shape: []int{s.n}, std: 0.1, f32: true})
			case s.kind == kindVector:
				vec(name, s.n)
			default:
				gain := 1.0
				switch {
				case s.kind == kindDense: // router
					gain = 1
				case s.split == splitCols || s.ref[len(s.ref)-2:] == "w2":
					gain = 0.8
				}
				lin(name, s.n, s.k, gain)
			}
		}
	}
	vec("model.norm.weight", cfg.Dim)
	lin("lm_head.weight", cfg.VocabSize, cfg.Dim, 4)
	return out
}

// WriteRandomCheckpoint writes a random-weight checkpoint of cfg into dir: HF-named bf16
// tensors in model.safetensors (router bias F32) and config.json in DeepSeek's format.
// The same seed gives the same bytes; different seeds give different weights.
func WriteRandomCheckpoint(dir string, cfg configs.Model, seed uint64) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	ts := demoTensors(cfg)
	specs := make([]safetensors.Spec, len(ts))
	for i, t := range ts {
		specs[i] = safetensors.Spec{Name: t.name, DType: safetensors.BF16, Shape: t.shape}
		if t.f32 {
			specs[i].DType = safetensors.F32
		}
	}
	w, err := safetensors.Create(filepath.Join(dir, "model.safetensors"), specs, map[string]string{"format": "pt"})
	if err != nil {
		return fmt.Errorf("write demo checkpoint: %w", err)
	}
	r := rand.New(rand.NewPCG(seed, 0x64736761746531))
	for _, t := range ts {
		n := 1
		for _, d := range t.shape {
			n *= d
		}
		var buf []byte
		if t.f32 {
			buf = make([]byte, 4*n)
		} else {
			buf = make([]byte, 2*n)
		}
		for i := 0; i < n; i++ {
			v := r.NormFloat64() * t.std
			if t.norm {
				v += 1
			}
			if t.f32 {
				binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(float32(v)))
			} else {
				binary.LittleEndian.PutUint16(buf[2*i:], backend.ToBF16(float32(v)))
			}
		}
		if err := w.WriteTensor(t.name, buf); err != nil {
			_ = w.Close()
			return fmt.Errorf("write demo checkpoint: %w", err)
		}
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("write demo checkpoint: %w", err)
	}
	js, err := cfg.MarshalIndent()
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), js, 0o644); err != nil {
		return fmt.Errorf("write config.json: %w", err)
	}
	return nil
}
