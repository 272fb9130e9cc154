package convert

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/dsgate/dsgate/configs"
	"github.com/dsgate/dsgate/core/dtype"
	"github.com/dsgate/dsgate/core/safetensors"
)

// The conversion modes (FORMATS.md).
const (
	ModeFP8BF16  = "fp8-bf16"
	ModeBF16BF16 = "bf16-bf16"
	ModeBF16Int8 = "bf16-int8"
	ModeBF16Int4 = "bf16-int4"
)

// Modes lists the valid modes.
var Modes = []string{ModeFP8BF16, ModeBF16BF16, ModeBF16Int8, ModeBF16Int4}

// DefaultInt4Group is dsgate's default int4 group size.
const DefaultInt4Group = 128

// ManifestFile is the sha256sum-format list of every output file.
const ManifestFile = "manifest.sha256"

// stateFile records the parameters and finished outputs of a run, so that a rerun
// resumes (same parameters and inputs) or restarts cleanly (anything else).
const stateFile = ".convert-state.json"

// Options configures a conversion.
type Options struct {
	Mode      string
	In, Out   string // input HF checkpoint folder, output folder
	MP        int    // model-parallel ranks (DeepSeek-format modes); 0 means 1
	NExperts  int    // routed experts; 0 = the config's n_routed_experts
	GroupSize int    // int4 scale group; -1 = default (128); int8 is always per channel
	// Config is the model configuration; nil reads In/config.json (HF or DeepSeek
	// format). fp8-bf16 needs none.
	Config   *configs.Model
	Logger   *slog.Logger
	Progress func(done, total int64) // called after every tensor with input bytes
	// CheckpointBytes is how many input bytes the DeepSeek-format modes convert
	// between durable checkpoints of their partial outputs (0 = 1 GiB); an interrupted
	// or killed run resumes from the last one.
	CheckpointBytes int64
}

// Result reports what a conversion did.
type Result struct {
	Files    []string // output files written or verified, relative to Out
	BytesIn  int64    // tensor bytes read in this run
	BytesOut int64    // bytes written in this run
	Resumed  int      // output files kept from an earlier interrupted run
	// ResumedBytes is the input already converted into checkpointed partial outputs by
	// an earlier interrupted run (DeepSeek-format modes).
	ResumedBytes int64
	Elapsed      time.Duration
	Quantized    int // tensors quantized
}

// Run converts opt.In into opt.Out.
func Run(ctx context.Context, opt Options) (*Result, error) {
	start := time.Now()
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if !slices.Contains(Modes, opt.Mode) {
		return nil, fmt.Errorf("convert: unknown mode %q (want %s)", opt.Mode, strings.Join(Modes, ", "))
	}
	if opt.MP == 0 {
		opt.MP = 1
	}
	if opt.MP < 0 {
		return nil, fmt.Errorf("convert: --model-parallel must be >= 1, got %d", opt.MP)
	}
	switch {
	case opt.Mode == ModeBF16Int4 && opt.GroupSize < 0:
		opt.GroupSize = DefaultInt4Group
	case opt.Mode != ModeBF16Int4 && opt.GroupSize > 0:
		return nil, fmt.Errorf("convert: --group-size applies to bf16-int4 only (int8 is per channel)")
	case opt.GroupSize < 0:
		opt.GroupSize = 0
	}
	if opt.GroupSize != 0 && opt.GroupSize%32 != 0 {
		return nil, fmt.Errorf("convert: --group-size must be 0, 32, 64 or 128 (a multiple of 32), got %d", opt.GroupSize)
	}
	if opt.Mode == ModeFP8BF16 && opt.MP != 1 {
		return nil, fmt.Errorf("convert: fp8-bf16 writes a Hugging Face checkpoint and does not shard (--model-parallel %d)", opt.MP)
	}
	if abs(opt.In) == abs(opt.Out) {
		return nil, fmt.Errorf("convert: --save-path must differ from --hf-ckpt-path")
	}
	set, err := openInput(opt.In)
	if err != nil {
		return nil, err
	}
	defer set.Close()
	if err := os.MkdirAll(opt.Out, 0o755); err != nil {
		return nil, fmt.Errorf("convert: %w", err)
	}
	c := &conv{opt: opt, set: set, res: &Result{}, log: opt.Logger}
	if err := c.loadState(); err != nil {
		return nil, err
	}
	if opt.Mode == ModeFP8BF16 {
		err = c.runHF(ctx)
	} else {
		err = c.runRef(ctx)
	}
	if err != nil {
		return nil, err
	}
	c.res.Elapsed = time.Since(start)
	return c.res, nil
}

func abs(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	return a
}

// openInput opens a Hugging Face checkpoint folder.
func openInput(dir string) (*safetensors.Set, error) {
	if st, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("convert: input checkpoint: %w", err)
	} else if !st.IsDir() {
		return nil, fmt.Errorf("convert: input checkpoint %s is not a folder", dir)
	}
	set, err := safetensors.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("convert: %w", err)
	}
	switch {
	case set.Layout == safetensors.LayoutMP:
		set.Close()
		return nil, fmt.Errorf("convert: %s holds model{r}-mp%d.safetensors files: it is already in DeepSeek's reference format (the input must be a Hugging Face checkpoint)", dir, set.MP)
	case set.Layout == safetensors.LayoutGlob && len(set.Files) > 1:
		set.Close()
		return nil, fmt.Errorf("convert: %s: missing %s (the index of a sharded Hugging Face checkpoint)", dir, safetensors.IndexFile)
	}
	return set, nil
}

type conv struct {
	opt   Options
	set   *safetensors.Set
	res   *Result
	log   *slog.Logger
	state runState
	done  int64 // progress
	total int64
	// scratch is the float32 weight buffer reused by every quantized tensor, bscratch
	// the bf16 byte buffer of converted (not copied) tensors.
	scratch  []float32
	bscratch []byte
}

// ---- state (resume / restart) ----

type inputFP struct {
	Name  string `json:"name"`
	Size  int64  `json:"size"`
	MTime int64  `json:"mtime_ns"`
}

type outRec struct {
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

type runState struct {
	Mode      string            `json:"mode"`
	MP        int               `json:"mp"`
	NExperts  int               `json:"n_experts"`
	GroupSize int               `json:"group_size"`
	Config    string            `json:"config"`
	Inputs    []inputFP         `json:"inputs"`
	Done      map[string]outRec `json:"done"`
	Complete  bool              `json:"complete"`
	Partial   *partial          `json:"partial,omitempty"`
}

// partial records the rank files of an unfinished DeepSeek-format pass: every job
// before Job is durably in the temporary files.
type partial struct {
	Job     int                       `json:"job"`
	Writers []safetensors.WriterState `json:"writers"`
}

func (c *conv) fingerprint() (runState, error) {
	st := runState{Mode: c.opt.Mode, MP: c.opt.MP, NExperts: c.opt.NExperts, GroupSize: c.opt.GroupSize, Done: map[string]outRec{}}
	if c.opt.Config != nil {
		b, _ := json.Marshal(c.opt.Config)
		st.Config = string(b)
	}
	for _, f := range c.set.Files {
		fi, err := os.Stat(f.Path)
		if err != nil {
			return st, fmt.Errorf("convert: %w", err)
		}
		st.Inputs = append(st.Inputs, inputFP{filepath.Base(f.Path), fi.Size(), fi.ModTime().UnixNano()})
	}
	return st, nil
}

func sameRun(a, b runState) bool {
	return a.Mode == b.Mode && a.MP == b.MP && a.NExperts == b.NExperts && a.GroupSize == b.GroupSize &&
		a.Config == b.Config && slices.Equal(a.Inputs, b.Inputs)
}

// loadState removes temporary files of interrupted runs and decides between resuming
// (same parameters and inputs: finished outputs are kept) and restarting (outputs of
// the earlier run are removed).
func (c *conv) loadState() error {
	fp, err := c.fingerprint()
	if err != nil {
		return err
	}
	c.state = fp
	var old runState
	raw, err := os.ReadFile(filepath.Join(c.opt.Out, stateFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("convert: %w", err)
	case json.Unmarshal(raw, &old) != nil || !sameRun(old, fp):
		c.log.Warn("output folder holds an earlier conversion with other parameters or inputs: restarting", "dir", c.opt.Out)
		for name := range old.Done {
			if filepath.Base(name) == name {
				os.Remove(filepath.Join(c.opt.Out, name))
			}
		}
		os.Remove(filepath.Join(c.opt.Out, ManifestFile))
	default:
		for name, rec := range old.Done {
			if fi, err := os.Stat(filepath.Join(c.opt.Out, name)); err == nil && fi.Size() == rec.Size {
				c.state.Done[name] = rec
			}
		}
		c.state.Partial = old.Partial
		if len(c.state.Done) > 0 {
			c.log.Info("resuming an interrupted conversion", "finished_files", len(c.state.Done))
		}
	}
	// Temporary files of interrupted runs go, except a resumable pass's.
	keep := map[string]bool{}
	if c.state.Partial != nil {
		for _, w := range c.state.Partial.Writers {
			keep[filepath.Base(w.Temp)] = true
		}
	}
	ents, err := os.ReadDir(c.opt.Out)
	if err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") && strings.Contains(e.Name(), ".tmp-") && !keep[e.Name()] {
			os.Remove(filepath.Join(c.opt.Out, e.Name()))
		}
	}
	return c.saveState()
}

func (c *conv) saveState() error {
	b, err := json.MarshalIndent(c.state, "", " ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(c.opt.Out, stateFile), b)
}

func (c *conv) finished(name string, size int64, sum string) error {
	c.state.Done[name] = outRec{Size: size, SHA256: sum}
	c.res.BytesOut += size
	c.res.Files = append(c.res.Files, name)
	return c.saveState()
}

// writeFileAtomic writes data to a temporary name next to path and renames it.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("convert: %w", err)
	}
	return nil
}

func (c *conv) progress(n int64) {
	c.done += n
	c.res.BytesIn += n
	if c.opt.Progress != nil {
		c.opt.Progress(c.done, c.total)
	}
}

// ---- reading tensors ----

// input is one HF tensor with the file that holds it.
type input struct {
	file *safetensors.File
	info safetensors.TensorInfo
}

func (c *conv) tensor(in input) (safetensors.Tensor, error) {
	t, err := in.file.Tensor(in.info.Name)
	if err != nil {
		return t, fmt.Errorf("convert: %w", err)
	}
	return t, nil
}

// fp8Scale finds and checks the weight_scale_inv of an fp8 weight.
func (c *conv) fp8Scale(w safetensors.TensorInfo, file string) ([]float32, error) {
	name := w.Name + "_scale_inv"
	f, ok := c.set.FileOf(name)
	if !ok {
		return nil, fmt.Errorf("convert: %s: tensor %q is F8_E4M3 but %q is missing", file, w.Name, name)
	}
	t, err := f.Tensor(name)
	if err != nil {
		return nil, fmt.Errorf("convert: %w", err)
	}
	if len(w.Shape) != 2 {
		return nil, fmt.Errorf("convert: %s: fp8 tensor %q has shape %v, want 2-D", file, w.Name, w.Shape)
	}
	want := []int{(w.Shape[0] + 127) / 128, (w.Shape[1] + 127) / 128}
	if !slices.Equal(t.Shape, want) {
		return nil, fmt.Errorf("convert: %s: shape mismatch: %q is %v, want %v for weight %v (128x128 blocks)", filepath.Base(f.Path), name, t.Shape, want, w.Shape)
	}
	s, err := t.Float32()
	if err != nil {
		return nil, fmt.Errorf("convert: %s: %w", filepath.Base(f.Path), err)
	}
	return s, nil
}

func checkInputDType(file string, t safetensors.TensorInfo) error {
	switch t.DType {
	case safetensors.F8E4M3, safetensors.BF16, safetensors.F16, safetensors.F32:
		return nil
	}
	return fmt.Errorf("convert: %s: tensor %q has unsupported dtype %s (want F8_E4M3, BF16, F16 or F32)", file, t.Name, t.DType)
}

// bf16Bytes returns the tensor as little-endian bf16 bytes: fp8 dequantized with its
// block scale, F32/F16 rounded to nearest even, BF16 as is (aliasing the mapping).
// Converted data lives in a buffer reused across calls.
func (c *conv) bf16Bytes(in input) ([]byte, error) {
	t, err := c.tensor(in)
	if err != nil {
		return nil, err
	}
	if t.DType == safetensors.BF16 {
		return t.Data, nil
	}
	n := t.NumElements()
	if cap(c.bscratch) < 2*n {
		c.bscratch = make([]byte, 2*n)
	}
	out := c.bscratch[:2*n]
	if t.DType == safetensors.F8E4M3 {
		s, err := c.fp8Scale(t.TensorInfo, filepath.Base(in.file.Path))
		if err != nil {
			return nil, err
		}
		dequantFP8Into(out, nil, t.Data, t.Shape[0], t.Shape[1], s)
		return out, nil
	}
	f, err := t.Float32()
	if err != nil {
		return nil, fmt.Errorf("convert: %w", err)
	}
	for i, v := range f {
		binary.LittleEndian.PutUint16(out[2*i:], dtype.F32ToBF16(v))
	}
	return out, nil
}

// weightF32 returns a weight's bf16 values (see bf16Bits) widened to float32, in a
// buffer reused across calls; a non-finite value is an error naming the tensor.
func (c *conv) weightF32(in input) ([]float32, error) {
	n := in.info.NumElements()
	if cap(c.scratch) < n {
		c.scratch = make([]float32, n)
	}
	w := c.scratch[:n]
	file := filepath.Base(in.file.Path)
	if in.info.DType == safetensors.BF16 {
		t, err := c.tensor(in)
		if err != nil {
			return nil, err
		}
		if i := bf16ToF32Checked(w, t.Data); i >= 0 {
			return nil, fmt.Errorf("convert: %s: tensor %q: non-finite value at element %d cannot be quantized", file, in.info.Name, i)
		}
		return w, nil
	}
	b, err := c.bf16Bytes(in)
	if err != nil {
		return nil, err
	}
	if i := bf16ToF32Checked(w, b); i >= 0 {
		return nil, fmt.Errorf("convert: %s: tensor %q: non-finite value at element %d cannot be quantized", file, in.info.Name, i)
	}
	return w, nil
}
