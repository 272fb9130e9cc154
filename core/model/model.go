// Package model is the DeepSeek-V3 forward pass (spec §4–§5), written once against the
// ops of core/backend: vocab-parallel embedding, RMSNorm, MLA attention in "absorb" mode
// (the paged cache holds the normalised latent c_n and the rotated k_pe of every token)
// or "naive" mode (per-head keys and values re-expanded from the cached latents), YaRN
// RoPE with interleaved pairs and the mscale softmax correction, dense SwiGLU layers,
// MoE layers with sigmoid+bias+group-limited routing (V3) or softmax routing (V2),
// shared experts and the LM head. Ranks (world size W) are sharded as DeepSeek's
// convert.py shards (spec §3.3) and run in lockstep, one goroutine each.
//
// Numerics: dsgate computes in float32 throughout (bf16/int8/int4 weights are widened or
// dequantized inside the kernels; fp8 checkpoints are dequantized to float32 at load as
// f32(e4m3) × scale_inv). It therefore matches Hugging Face transformers run in float32,
// not the reference's bf16 roundings (spec §7).
//
// Rationale for a few choices:
//   - wq_b (or wq) rows are permuted at load so that the query is [q_nope of all heads |
//     q_pe of all heads]: the rope part is then one column view, and Rope/HeadLinear need
//     no 3-D strides. wkv_b is split into W_UKᵀ (per head Lc × Dn, float32) and W_UV
//     (per head Dv × Lc, stored dtype) for the absorbed path, and permuted to
//     [k_nope | v] for the naive path.
//   - w1 and w3 are concatenated (w1 rows first) so that one matmul feeds SwiGLU, as
//     aclnnSwiGlu expects.
//   - Naive mode keeps the same paged latent cache and re-expands K/V from it every step:
//     it exists to check the absorbed algebra, not for speed.
//   - Routed-expert outputs and shared-expert outputs are summed before one all-reduce
//     (the reference all-reduces them separately; in float32 only rounding differs).
package model

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"

	"github.com/dsgate/dsgate/configs"
	"github.com/dsgate/dsgate/core/backend"
	"github.com/dsgate/dsgate/core/cpu"
)

// Options configures Load.
type Options struct {
	Backend   string // "cpu" (default), "reference" (plain-Go oracle), or any name when Factory is set
	WorldSize int    // 1, 2, 4, 8 (0 = 1)
	BlockSize int    // KV cache block size in tokens (default 16)
	NumBlocks int    // KV cache blocks per layer (0 = enough for max_batch_size*max_seq_len)
	AttnImpl  string // "absorb" (default) or "naive"; "" = the config's attn_impl
	Logger    *slog.Logger
	// Factory, when set, builds the rank backends instead of the built-in "cpu" and
	// "reference" backends (e.g. the Ascend backend; core does not import ascend/).
	Factory backend.Factory
	// Threads is the CPU backend's goroutines per rank (0 = GOMAXPROCS / WorldSize).
	Threads int
	// QuantizeActivations runs the CPU backend's int4 matmuls on int8 activations
	// (cpu.Options.QuantizeActivations: faster decode, slightly less exact).
	QuantizeActivations bool
	// RankBase and LocalRanks select the ranks this process runs when the WorldSize ranks
	// are spread over several processes (nodes): global ranks [RankBase,
	// RankBase+LocalRanks). Weights are sharded and experts assigned by global rank.
	// LocalRanks 0 means all ranks in this process (RankBase must then be 0). With fewer
	// local ranks, Factory is required: it is called with WorldSize and returns the
	// local ranks only, joined to the other processes' ranks by its collectives. Every
	// process must then call Forward with the same steps (see package cluster); only the
	// process that holds rank 0 gets logits (the others get nil per sequence).
	RankBase, LocalRanks int
}

// Seq is one sequence's work in a Forward step.
type Seq struct {
	Tokens    []int32 // tokens to run in this step (a prefill chunk, or one decode token)
	Pos       int     // absolute position of Tokens[0]; the cache already holds positions [0, Pos)
	Blocks    []int32 // block table: Blocks[i] holds positions [i*BlockSize, (i+1)*BlockSize); covers Pos+len(Tokens)
	AllLogits bool    // return logits for every token of Tokens, else only for the last one
}

// Model is a loaded DeepSeek model. Forward may be called from any goroutine; calls are
// serialized.
type Model struct {
	cfg       configs.Model
	opt       Options
	ranks     []*rank
	blockSize int
	numBlocks int
	freqs     []float32
	scale     float32
	gate      backend.GateParams
	log       *slog.Logger

	mu     sync.Mutex // serializes Forward and Close
	closed bool
}

// BlockSize returns the KV cache block size in tokens.
func (m *Model) BlockSize() int { return m.blockSize }

// NumBlocks returns the number of KV cache blocks (per layer, per rank).
func (m *Model) NumBlocks() int { return m.numBlocks }

// VocabSize returns the number of logits per position.
func (m *Model) VocabSize() int { return m.cfg.VocabSize }

// MaxSeqLen returns the longest sequence (positions) the model accepts.
func (m *Model) MaxSeqLen() int { return m.cfg.MaxSeqLen }

// Config returns the model configuration.
func (m *Model) Config() configs.Model { return m.cfg }

// WorldSize returns the number of ranks (in every process, see Options.LocalRanks).
func (m *Model) WorldSize() int { return m.opt.WorldSize }

// LocalRanks returns the global ranks this process runs: [base, base+n).
func (m *Model) LocalRanks() (base, n int) { return m.opt.RankBase, len(m.ranks) }

// local reports whether global rank r runs in this process.
func (m *Model) local(r int) bool { return r >= m.opt.RankBase && r < m.opt.RankBase+m.opt.LocalRanks }

// Close releases the backends. The model must not be used afterwards.
func (m *Model) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	var errs []error
	for _, r := range m.ranks {
		errs = append(errs, r.b.Close())
	}
	return errors.Join(errs...)
}

// yarnOn reports whether YaRN is applied: only when the cache is longer than the
// pre-extension context (spec §5.4, fact 3 of §10).
func yarnOn(cfg configs.Model) bool { return cfg.MaxSeqLen > cfg.OriginalSeqLen }

// RopeFreqs returns the per-pair rotary frequencies of cfg (spec §5.4), in float32.
func RopeFreqs(cfg configs.Model) []float32 {
	d := cfg.QKRopeHeadDim
	f := make([]float32, d/2)
	for i := range f {
		e := float32(2*i) / float32(d)
		f[i] = 1 / float32(math.Pow(cfg.RopeTheta, float64(e)))
	}
	if !yarnOn(cfg) {
		return f
	}
	corr := func(rot float64) float64 {
		return float64(d) * math.Log(float64(cfg.OriginalSeqLen)/(2*math.Pi*rot)) / (2 * math.Log(cfg.RopeTheta))
	}
	low := math.Max(math.Floor(corr(float64(cfg.BetaFast))), 0)
	high := math.Min(math.Ceil(corr(float64(cfg.BetaSlow))), float64(d-1))
	if low == high {
		high += 0.001
	}
	factor := float32(cfg.RopeFactor)
	for i := range f {
		r := float32((float64(i) - low) / (high - low))
		r = min(max(r, 0), 1)
		smooth := 1 - r
		// The conversions round each product, as torch does: without them Go may
		// fuse the sum into one FMA (it does on arm64), one ulp off the spec's table.
		f[i] = float32(f[i]/factor*(1-smooth)) + float32(f[i]*smooth)
	}
	return f
}

// SoftmaxScale returns the attention scale (spec §5.2): qk_head_dim^-1/2, times
// (0.1·mscale·ln(rope_factor)+1)² when YaRN is on.
func SoftmaxScale(cfg configs.Model) float32 {
	s := 1 / math.Sqrt(float64(cfg.QKHeadDim()))
	if yarnOn(cfg) && cfg.RopeFactor > 1 {
		m := 0.1*cfg.Mscale*math.Log(cfg.RopeFactor) + 1
		s *= m * m
	}
	return float32(s)
}

// Load reads a checkpoint folder (Hugging Face names: bf16/f32, or fp8 e4m3 with
// weight_scale_inv; or DeepSeek names from convert: bf16, int8 or int4,
// model{r}-mp{N}.safetensors) and uploads each rank's shard to its backend. It fails,
// before any forward pass, with the full list of missing and unused tensors.
func Load(ctx context.Context, ckptDir string, cfg configs.Model, opt Options) (*Model, error) {
	if opt.WorldSize == 0 {
		opt.WorldSize = 1
	}
	if opt.BlockSize == 0 {
		opt.BlockSize = 16
	}
	if opt.AttnImpl == "" {
		opt.AttnImpl = cfg.AttnImpl // the config's attn_impl (the original project's field)
	}
	if opt.AttnImpl == "" {
		opt.AttnImpl = "absorb"
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if opt.AttnImpl != "absorb" && opt.AttnImpl != "naive" {
		return nil, fmt.Errorf("model: attn impl %q: want absorb or naive", opt.AttnImpl)
	}
	if opt.BlockSize < 1 {
		return nil, fmt.Errorf("model: block size %d must be positive", opt.BlockSize)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	w := opt.WorldSize
	if err := cfg.CheckWorldSize(w); err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	if opt.NumBlocks == 0 {
		opt.NumBlocks = (cfg.MaxBatchSize*cfg.MaxSeqLen + opt.BlockSize - 1) / opt.BlockSize
	}
	if opt.NumBlocks < 1 {
		return nil, fmt.Errorf("model: num blocks %d must be positive", opt.NumBlocks)
	}
	if opt.LocalRanks == 0 && opt.RankBase == 0 {
		opt.LocalRanks = w
	}
	if opt.LocalRanks < 1 || opt.RankBase < 0 || opt.RankBase+opt.LocalRanks > w {
		return nil, fmt.Errorf("model: local ranks [%d, %d) are not inside the world of %d ranks", opt.RankBase, opt.RankBase+opt.LocalRanks, w)
	}
	if opt.LocalRanks < w && opt.Factory == nil {
		return nil, fmt.Errorf("model: running %d of %d ranks in this process needs a backend factory whose collectives span processes (e.g. ascend.NodeFactory); the %q backend has none", opt.LocalRanks, w, opt.Backend)
	}
	factory := opt.Factory
	if factory == nil {
		switch opt.Backend {
		case "", "cpu":
			factory = cpu.Factory(cpu.Options{Threads: opt.Threads, QuantizeActivations: opt.QuantizeActivations})
		case "reference":
			factory = backend.NewReferenceGroup
		default:
			return nil, fmt.Errorf("model: backend %q is not built in (have cpu, reference); pass Options.Factory", opt.Backend)
		}
	}
	m := &Model{cfg: cfg, opt: opt, blockSize: opt.BlockSize, numBlocks: opt.NumBlocks, log: opt.Logger,
		freqs: RopeFreqs(cfg), scale: SoftmaxScale(cfg)}
	m.gate = backend.GateParams{
		TopK: cfg.NActivatedExperts, Groups: max(cfg.NExpertGroups, 1), TopGroups: max(cfg.NLimitedGroups, 1),
		Score: backend.Softmax, GroupScore: backend.GroupMax, Normalize: cfg.NormalizesTopk(), RouteScale: float32(cfg.RouteScale),
	}
	if cfg.ScoreFunc == "sigmoid" {
		m.gate.Score = backend.Sigmoid
	}
	if cfg.HasRouterBias() {
		// The reference scores groups by the sum of the top-2 biased scores when the
		// router has a bias, by the max otherwise (spec §5.5).
		m.gate.GroupScore = backend.GroupTop2Sum
	}
	c, err := openCkpt(ckptDir, cfg, w)
	if err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	defer c.set.Close()
	bs, err := factory(w)
	if err != nil {
		return nil, fmt.Errorf("model: create %s backend: %w", opt.Backend, err)
	}
	if len(bs) != opt.LocalRanks {
		for _, b := range bs {
			_ = b.Close()
		}
		return nil, fmt.Errorf("model: backend factory made %d ranks, want %d", len(bs), opt.LocalRanks)
	}
	for i, b := range bs {
		m.ranks = append(m.ranks, &rank{b: b, r: opt.RankBase + i, w: w, m: m})
	}
	if err := m.load(ctx, c); err != nil {
		_ = m.Close()
		return nil, err
	}
	opt.Logger.Info("model loaded", "dir", ckptDir, "backend", bs[0].Name(), "world_size", w, "local_ranks", fmt.Sprintf("[%d,%d)", opt.RankBase, opt.RankBase+opt.LocalRanks),
		"layers", cfg.NLayers, "attn", opt.AttnImpl, "kv_blocks", opt.NumBlocks, "block_size", opt.BlockSize)
	return m, nil
}

// Forward runs one step for a batch of sequences and returns, per Seq, float32 logits
// (len = VocabSize, or len(Tokens)*VocabSize with AllLogits). A sequence's results are
// bit-identical whatever other sequences share the step (row-independent kernels).
func (m *Model) Forward(ctx context.Context, seqs []Seq) ([][]float32, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, errors.New("model: forward on a closed model")
	}
	if err := m.checkSeqs(seqs); err != nil {
		return nil, err
	}
	if len(seqs) == 0 {
		return nil, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := make([][]float32, len(seqs))
	errs := make([]error, len(m.ranks))
	var wg sync.WaitGroup
	for i, rk := range m.ranks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if p := recover(); p != nil {
					errs[i] = fmt.Errorf("model: rank %d panicked: %v", i, p)
					m.abort(errs[i])
				}
			}()
			res, err := rk.forward(ctx, seqs)
			if err != nil {
				errs[i] = err
				m.abort(err)
				return
			}
			if i == 0 {
				copy(out, res)
			}
		}()
	}
	wg.Wait()
	var first error
	for _, err := range errs {
		if err != nil && (first == nil || errors.Is(first, backend.ErrAborted)) {
			first = err
		}
	}
	if first != nil {
		if a, ok := m.ranks[0].b.(backend.Aborter); ok {
			a.ResetCollectives()
		}
		return nil, fmt.Errorf("model: forward: %w", first)
	}
	return out, nil
}

func (m *Model) abort(err error) {
	if a, ok := m.ranks[0].b.(backend.Aborter); ok {
		a.AbortCollectives(err)
	}
}

func (m *Model) checkSeqs(seqs []Seq) error {
	for i, s := range seqs {
		if len(s.Tokens) == 0 {
			return fmt.Errorf("model: sequence %d has no tokens", i)
		}
		if s.Pos < 0 || s.Pos+len(s.Tokens) > m.cfg.MaxSeqLen {
			return fmt.Errorf("model: sequence %d: positions [%d, %d) outside [0, max_seq_len %d)", i, s.Pos, s.Pos+len(s.Tokens), m.cfg.MaxSeqLen)
		}
		for _, t := range s.Tokens {
			if t < 0 || int(t) >= m.cfg.VocabSize {
				return fmt.Errorf("model: sequence %d: token id %d outside [0, %d)", i, t, m.cfg.VocabSize)
			}
		}
		need := (s.Pos + len(s.Tokens) + m.blockSize - 1) / m.blockSize
		if len(s.Blocks) < need {
			return fmt.Errorf("model: sequence %d: block table has %d blocks, positions up to %d need %d", i, len(s.Blocks), s.Pos+len(s.Tokens), need)
		}
		for _, b := range s.Blocks[:need] {
			if b < 0 || int(b) >= m.numBlocks {
				return fmt.Errorf("model: sequence %d: block %d outside [0, %d)", i, b, m.numBlocks)
			}
		}
	}
	return nil
}

// Logits runs ids as one fresh sequence and returns the logits at every position
// (len(ids) rows of VocabSize). It uses cache blocks [0, ⌈len(ids)/BlockSize⌉), so it must
// not run while an engine owns the model's cache.
func (m *Model) Logits(ctx context.Context, ids []int32) ([][]float32, error) {
	need := (len(ids) + m.blockSize - 1) / m.blockSize
	if need > m.numBlocks {
		return nil, fmt.Errorf("model: %d tokens need %d cache blocks, the model has %d", len(ids), need, m.numBlocks)
	}
	blocks := make([]int32, need)
	for i := range blocks {
		blocks[i] = int32(i)
	}
	res, err := m.Forward(ctx, []Seq{{Tokens: ids, Blocks: blocks, AllLogits: true}})
	if err != nil {
		return nil, err
	}
	v := m.cfg.VocabSize
	out := make([][]float32, len(ids))
	for i := range out {
		out[i] = res[0][i*v : (i+1)*v : (i+1)*v]
	}
	return out, nil
}
