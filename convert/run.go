package convert

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/dsgate/dsgate/configs"
	"github.com/dsgate/dsgate/core/safetensors"
)

// ---- fp8-bf16: Hugging Face in, Hugging Face out ----

type hfJob struct {
	in   input
	spec safetensors.Spec
}

func (c *conv) runHF(ctx context.Context) error {
	byFile := map[*safetensors.File][]hfJob{}
	weightMap := map[string]string{}
	for _, e := range c.set.Entries() {
		f, _ := c.set.FileOf(e.Name)
		if strings.HasSuffix(e.Name, "_scale_inv") {
			continue
		}
		spec := safetensors.Spec{Name: e.Name, DType: e.DType, Shape: e.Shape}
		if e.DType == safetensors.F8E4M3 {
			if _, err := c.fp8Scale(e.TensorInfo, e.File); err != nil {
				return err
			}
			spec.DType = safetensors.BF16
		}
		byFile[f] = append(byFile[f], hfJob{input{f, e.TensorInfo}, spec})
		weightMap[e.Name] = e.File
	}
	for _, f := range c.set.Files {
		if _, done := c.state.Done[filepath.Base(f.Path)]; done {
			continue
		}
		for _, j := range byFile[f] {
			c.total += j.in.info.Size()
		}
	}
	for _, f := range c.set.Files {
		name := filepath.Base(f.Path)
		if _, done := c.state.Done[name]; done {
			c.res.Resumed++
			c.res.Files = append(c.res.Files, name)
			continue
		}
		jobs := byFile[f]
		specs := make([]safetensors.Spec, len(jobs))
		for i, j := range jobs {
			specs[i] = j.spec
		}
		w, err := safetensors.Create(filepath.Join(c.opt.Out, name), specs, map[string]string{"format": "pt"})
		if err != nil {
			return fmt.Errorf("convert: %w", err)
		}
		f.Advise(true)
		for _, j := range jobs {
			if err := ctx.Err(); err != nil {
				w.Abort()
				return fmt.Errorf("convert: %w", err)
			}
			t, err := c.tensor(j.in)
			if err != nil {
				w.Abort()
				return err
			}
			data := t.Data
			if t.DType == safetensors.F8E4M3 {
				if data, err = c.bf16Bytes(j.in); err != nil {
					w.Abort()
					return err
				}
			}
			if err := w.WriteTensor(t.Name, data); err != nil {
				w.Abort()
				return fmt.Errorf("convert: %w", err)
			}
			f.Release(j.in.info)
			c.progress(j.in.info.Size())
		}
		if err := w.Close(); err != nil {
			return fmt.Errorf("convert: %w", err)
		}
		if err := c.finished(name, w.FileSize(), w.SHA256()); err != nil {
			return err
		}
	}
	if c.set.Layout == safetensors.LayoutHFIndex {
		idx, err := json.MarshalIndent(map[string]any{"metadata": map[string]any{}, "weight_map": weightMap}, "", "  ")
		if err != nil {
			return err
		}
		if err := c.writeAux(safetensors.IndexFile, append(idx, '\n')); err != nil {
			return err
		}
	}
	raw, err := os.ReadFile(filepath.Join(c.opt.In, "config.json"))
	switch {
	case err == nil:
		var m map[string]json.RawMessage
		if err := json.Unmarshal(raw, &m); err != nil {
			return fmt.Errorf("convert: %s: %w", filepath.Join(c.opt.In, "config.json"), err)
		}
		delete(m, "quantization_config")
		out, _ := json.MarshalIndent(m, "", "  ")
		if err := c.writeAux("config.json", append(out, '\n')); err != nil {
			return err
		}
	case os.IsNotExist(err):
		c.log.Warn("input has no config.json; output has none either", "dir", c.opt.In)
	default:
		return fmt.Errorf("convert: %w", err)
	}
	return c.finish()
}

// ---- DeepSeek reference format: bf16-bf16, bf16-int8, bf16-int4 ----

// refOut is one rank's output tensor(s) for a job.
type refOut struct {
	rank  int
	specs []safetensors.Spec // weight (and scale when quantized)
}

type refJob struct {
	in       input
	tgt      target
	quant    bool
	outDType safetensors.DType // kept tensors
	outs     []refOut
}

func (c *conv) modelConfig() (configs.Model, error) {
	if c.opt.Config != nil {
		return *c.opt.Config, nil
	}
	cfg, err := configs.FromCheckpoint(c.opt.In)
	if err != nil {
		return cfg, fmt.Errorf("convert: %w (pass --config-path)", err)
	}
	return cfg, nil
}

func (c *conv) runRef(ctx context.Context) error {
	cfg, err := c.modelConfig()
	if err != nil {
		return err
	}
	n := c.opt.MP
	nExp := cfg.NRoutedExperts
	moe := cfg.NDenseLayers < cfg.NLayers
	if c.opt.NExperts != 0 {
		if moe && c.opt.NExperts != cfg.NRoutedExperts {
			return fmt.Errorf("convert: --n-experts %d disagrees with the config's n_routed_experts %d", c.opt.NExperts, cfg.NRoutedExperts)
		}
		nExp = c.opt.NExperts
	}
	if err := cfg.CheckWorldSize(n); err != nil {
		return fmt.Errorf("convert: --model-parallel %d: %w", n, err)
	}
	if moe && nExp%n != 0 {
		return fmt.Errorf("convert: n_experts (%d) is not divisible by --model-parallel %d", nExp, n)
	}
	scheme := Scheme{Bits: 8}
	switch c.opt.Mode {
	case ModeBF16Int4:
		scheme = Scheme{Bits: 4, Group: c.opt.GroupSize}
	case ModeBF16BF16:
		scheme = Scheme{}
	}
	quantMode := scheme.Bits != 0

	var jobs []refJob
	perRank := make([][]safetensors.Spec, n)
	skipped := 0
	for _, e := range c.set.Entries() {
		f, _ := c.set.FileOf(e.Name)
		if strings.HasSuffix(e.Name, "_scale_inv") {
			if !c.set.Has(strings.TrimSuffix(e.Name, "_scale_inv")) {
				return fmt.Errorf("convert: %s: scale %q has no weight %q", e.File, e.Name, strings.TrimSuffix(e.Name, "_scale_inv"))
			}
			continue
		}
		if l := hfLayer(e.Name); l >= cfg.NLayers {
			skipped++ // the MTP module (layer n_layers) is dropped, as convert.py does
			continue
		}
		tgt, err := mapName(e.Name)
		if err != nil {
			return fmt.Errorf("convert: %s: %w", e.File, err)
		}
		if err := checkInputDType(e.File, e.TensorInfo); err != nil {
			return err
		}
		if e.DType == safetensors.F8E4M3 {
			if _, err := c.fp8Scale(e.TensorInfo, e.File); err != nil {
				return err
			}
		}
		j := refJob{in: input{f, e.TensorInfo}, tgt: tgt, outDType: safetensors.BF16}
		if isRouterBias(tgt.name) {
			j.outDType = safetensors.F32
		}
		j.quant = quantMode && Quantized(tgt.name)
		ranks := make([]int, n)
		for r := range ranks {
			ranks[r] = r
		}
		if tgt.expert >= 0 {
			if !moe || tgt.expert >= nExp {
				return fmt.Errorf("convert: %s: tensor %q: expert %d out of range (n_experts %d)", e.File, e.Name, tgt.expert, nExp)
			}
			ranks = []int{tgt.expert / (nExp / n)}
		}
		shape := e.Shape
		if (j.quant || tgt.dim >= 0) && len(shape) != 2 {
			return fmt.Errorf("convert: %s: shape mismatch: tensor %q has shape %v, want 2-D", e.File, e.Name, shape)
		}
		if tgt.dim >= 0 && shape[tgt.dim]%n != 0 {
			return fmt.Errorf("convert: %s: tensor %q: dim %d of shape %v is not divisible by --model-parallel %d", e.File, e.Name, tgt.dim, shape, n)
		}
		local := slicesClone(shape)
		if tgt.dim >= 0 {
			local[tgt.dim] /= n
		}
		for _, r := range ranks {
			var specs []safetensors.Spec
			if j.quant {
				nr, kr := local[0], local[1]
				ws := safetensors.Spec{Name: tgt.name, DType: safetensors.I8, Shape: []int{kr, nr}}
				if scheme.Bits == 4 {
					if nr%8 != 0 {
						return fmt.Errorf("convert: %s: tensor %q: int4 packs 8 output channels per int32 but the per-rank output size is %d", e.File, e.Name, nr)
					}
					ws = safetensors.Spec{Name: tgt.name, DType: safetensors.I32, Shape: []int{kr, nr / 8}}
				}
				scName := strings.TrimSuffix(tgt.name, ".weight") + ".scale"
				ss := safetensors.Spec{Name: scName, DType: safetensors.BF16, Shape: []int{nr}}
				if scheme.Group > 0 {
					ss.Shape = []int{(kr + scheme.Group - 1) / scheme.Group, nr}
				}
				specs = []safetensors.Spec{ws, ss}
			} else {
				specs = []safetensors.Spec{{Name: tgt.name, DType: j.outDType, Shape: local}}
			}
			j.outs = append(j.outs, refOut{rank: r, specs: specs})
			perRank[r] = append(perRank[r], specs...)
		}
		jobs = append(jobs, j)
	}
	if len(jobs) == 0 {
		return fmt.Errorf("convert: %s: no tensors to convert", c.opt.In)
	}
	if skipped > 0 {
		c.log.Info("dropping the MTP module", "tensors", skipped, "layer", cfg.NLayers)
	}
	names := make([]string, n)
	allDone := true
	for r := range n {
		names[r] = fmt.Sprintf("model%d-mp%d.safetensors", r, n)
		if _, ok := c.state.Done[names[r]]; !ok {
			allDone = false
		}
	}
	if allDone {
		c.res.Resumed += n
		c.res.Files = append(c.res.Files, names...)
	} else if err := c.writeRanks(ctx, jobs, perRank, names, scheme); err != nil {
		return err
	}
	out := cfg
	out.Dtype = "bf16"
	out.QuantGroupSize = 0
	out.ScaleFmt = ""
	switch c.opt.Mode {
	case ModeBF16Int8:
		out.Dtype = "int8"
	case ModeBF16Int4:
		out.Dtype = "int4"
		out.QuantGroupSize = scheme.Group
	}
	b, err := out.MarshalIndent()
	if err != nil {
		return err
	}
	if err := c.writeAux("config.json", b); err != nil {
		return err
	}
	return c.finish()
}

func slicesClone(s []int) []int { return append([]int(nil), s...) }

func (c *conv) writeRanks(ctx context.Context, jobs []refJob, perRank [][]safetensors.Spec, names []string, scheme Scheme) error {
	for _, j := range jobs {
		c.total += j.in.info.Size()
	}
	every := c.opt.CheckpointBytes
	if every <= 0 {
		every = 1 << 30
	}
	ws := make([]*safetensors.Writer, len(names))
	abort := func() {
		for _, w := range ws {
			if w != nil {
				w.Abort()
			}
		}
		c.state.Partial = nil
		c.saveState()
	}
	start := c.resumeRanks(ws, jobs, perRank, names)
	for r, name := range names {
		if ws[r] != nil {
			continue
		}
		w, err := safetensors.Create(filepath.Join(c.opt.Out, name), perRank[r], nil)
		if err != nil {
			abort()
			return fmt.Errorf("convert: %w", err)
		}
		ws[r] = w
	}
	checkpoint := func(next int) error {
		p := &partial{Job: next}
		for _, w := range ws {
			st, err := w.Checkpoint()
			if err != nil {
				return fmt.Errorf("convert: %w", err)
			}
			st.Temp = filepath.Base(st.Temp) // relative: the folder may move
			p.Writers = append(p.Writers, st)
		}
		c.state.Partial = p
		return c.saveState()
	}
	for _, f := range c.set.Files {
		f.Advise(true)
	}
	n := len(names)
	var since int64
	for i := start; i < len(jobs); i++ {
		j := jobs[i]
		if err := ctx.Err(); err != nil {
			// Interrupted between tensors: make everything so far durable and keep
			// the temporary files for the rerun.
			if cerr := checkpoint(i); cerr != nil {
				abort()
				return cerr
			}
			for _, w := range ws {
				w.Detach()
			}
			return fmt.Errorf("convert: %w", err)
		}
		var err error
		if j.quant {
			err = c.quantJob(j, ws, n, scheme)
		} else {
			err = c.keptJob(j, ws, n)
		}
		if err != nil {
			abort()
			return err
		}
		j.in.file.Release(j.in.info)
		c.progress(j.in.info.Size())
		if since += j.in.info.Size(); since >= every && i+1 < len(jobs) {
			if err := checkpoint(i + 1); err != nil {
				abort()
				return err
			}
			since = 0
		}
	}
	for r, w := range ws {
		if err := w.Close(); err != nil {
			abort()
			return fmt.Errorf("convert: %w", err)
		}
		c.state.Partial = nil
		if err := c.finished(names[r], w.FileSize(), w.SHA256()); err != nil {
			return err
		}
	}
	return nil
}

// resumeRanks reopens the rank files of a checkpointed pass and returns the first job
// still to do (0 when there is nothing to resume).
func (c *conv) resumeRanks(ws []*safetensors.Writer, jobs []refJob, perRank [][]safetensors.Spec, names []string) int {
	p := c.state.Partial
	c.state.Partial = nil
	if p == nil {
		return 0
	}
	drop := func(err error) int {
		c.log.Warn("cannot resume the partial rank files: starting the pass over", "err", err)
		for i, w := range ws {
			if w != nil {
				w.Abort()
				ws[i] = nil
			}
		}
		for _, st := range p.Writers {
			os.Remove(filepath.Join(c.opt.Out, filepath.Base(st.Temp)))
		}
		return 0
	}
	if len(p.Writers) != len(names) || p.Job < 0 || p.Job > len(jobs) {
		return drop(fmt.Errorf("state holds %d writers at job %d", len(p.Writers), p.Job))
	}
	for r, name := range names {
		st := p.Writers[r]
		st.Temp = filepath.Join(c.opt.Out, filepath.Base(st.Temp))
		w, err := safetensors.ResumeWriter(filepath.Join(c.opt.Out, name), perRank[r], nil, st)
		if err != nil {
			return drop(err)
		}
		ws[r] = w
	}
	for _, j := range jobs[:p.Job] {
		c.done += j.in.info.Size()
		c.res.ResumedBytes += j.in.info.Size()
	}
	c.log.Info("resuming the rank files from a checkpoint", "tensors_done", p.Job, "of", len(jobs))
	return p.Job
}

// rankRange returns rank r's half-open range of a dimension of size size split n ways.
func rankRange(size, r, n int) (int, int) { return r * size / n, (r + 1) * size / n }

func (c *conv) quantJob(j refJob, ws []*safetensors.Writer, n int, scheme Scheme) error {
	w, err := c.weightF32(j.in)
	if err != nil {
		return err
	}
	rows, k := j.in.info.Shape[0], j.in.info.Shape[1]
	var ch []uint16
	if scheme.Group == 0 {
		ch = channelScales(w, rows, k, scheme.QMax())
	}
	for _, o := range j.outs {
		r0, r1, c0, c1 := 0, rows, 0, k
		switch j.tgt.dim {
		case 0:
			r0, r1 = rankRange(rows, o.rank, n)
		case 1:
			c0, c1 = rankRange(k, o.rank, n)
		}
		q := quantize(w, k, r0, r1, c0, c1, scheme, ch)
		if err := ws[o.rank].WriteTensor(o.specs[0].Name, q.weight); err != nil {
			return fmt.Errorf("convert: %w", err)
		}
		if err := ws[o.rank].WriteTensor(o.specs[1].Name, q.scale); err != nil {
			return fmt.Errorf("convert: %w", err)
		}
	}
	c.res.Quantized++
	return nil
}

func (c *conv) keptJob(j refJob, ws []*safetensors.Writer, n int) error {
	t, err := c.tensor(j.in)
	if err != nil {
		return err
	}
	var data []byte
	switch {
	case j.outDType == t.DType:
		data = t.Data // straight from the mapping
	case j.outDType == safetensors.F32:
		f, err := t.Float32()
		if err != nil {
			return fmt.Errorf("convert: %w", err)
		}
		data = make([]byte, 4*len(f))
		for i, v := range f {
			binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(v))
		}
	default:
		if data, err = c.bf16Bytes(j.in); err != nil {
			return err
		}
	}
	esz := j.outDType.Size()
	for _, o := range j.outs {
		part := data
		if j.tgt.dim >= 0 {
			rows, cols := t.Shape[0], t.Shape[1]
			if j.tgt.dim == 0 {
				r0, r1 := rankRange(rows, o.rank, n)
				part = data[r0*cols*esz : r1*cols*esz]
			} else {
				c0, c1 := rankRange(cols, o.rank, n)
				w := (c1 - c0) * esz
				part = make([]byte, rows*w)
				for r := range rows {
					copy(part[r*w:(r+1)*w], data[(r*cols+c0)*esz:(r*cols+c1)*esz])
				}
			}
		}
		if err := ws[o.rank].WriteTensor(o.specs[0].Name, part); err != nil {
			return fmt.Errorf("convert: %w", err)
		}
	}
	return nil
}

// ---- shared finishing steps ----

// writeAux writes a small output file atomically and records it.
func (c *conv) writeAux(name string, data []byte) error {
	if err := writeFileAtomic(filepath.Join(c.opt.Out, name), data); err != nil {
		return err
	}
	sum := sha256.Sum256(data)
	return c.finished(name, int64(len(data)), hex.EncodeToString(sum[:]))
}

// finish copies the tokenizer files, writes the manifest and marks the run complete.
func (c *conv) finish() error {
	ents, err := os.ReadDir(c.opt.In)
	if err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	for _, e := range ents {
		if e.IsDir() || !strings.Contains(e.Name(), "token") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(c.opt.In, e.Name()))
		if err != nil {
			return fmt.Errorf("convert: %w", err)
		}
		if err := c.writeAux(e.Name(), data); err != nil {
			return err
		}
	}
	names := make([]string, 0, len(c.state.Done))
	for name := range c.state.Done {
		names = append(names, name)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, name := range names {
		fmt.Fprintf(&b, "%s  %s\n", c.state.Done[name].SHA256, name)
	}
	if err := writeFileAtomic(filepath.Join(c.opt.Out, ManifestFile), []byte(b.String())); err != nil {
		return err
	}
	c.state.Complete = true
	return c.saveState()
}
