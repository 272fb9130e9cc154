// Package backend defines the small op interface the DeepSeek-V3 forward pass
// (core/model) is written against, the host-side weight and tensor types shared by
// backends, a shared-memory communicator for goroutine ranks, and Reference: a plain-Go
// implementation of every op that serves as the oracle for every other backend.
//
// Each op is chosen so that it maps onto one aclnn operator (or a short fixed sequence)
// on Ascend and onto one fused C kernel on the CPU (DESIGN.md "Backend op interface";
// ascend-cann.md §2, §7):
//
//	Embedding      aclnnEmbedding / aclnnIndexSelect (vocab-parallel: out-of-shard ids give 0)
//	RMSNorm        aclnnRmsNorm
//	Linear         aclnnMatmul (F32/BF16) or aclnnWeightQuantBatchMatmulV2 (I8/I4)
//	HeadLinear     aclnnBatchMatMul (one weight block per attention head)
//	GroupedLinear  aclnnGroupedMatmulV4 (groupList = counts)
//	Rope           aclnnRotaryPositionEmbedding mode 1 (interleaved pairs)
//	CacheWrite     scatter into the paged latent cache (aclnnScatterUpdate / KvRmsNormRopeCache)
//	CacheRead      gather of a sequence's cached rows (aclnnIndexSelect)
//	MLAAttention   aclnnFusedInferAttentionScoreV3 (absorbed MLA: query + queryRope, paged KV)
//	Attention      aclnnFusedInferAttentionScoreV2 (plain per-head K/V, "naive" MLA)
//	MoEGate        aclnnMoeGatingTopK (sigmoid) / aclnnMoeGatingTopKSoftmax
//	GatherRows     aclnnMoeInitRoutingV3 / aclnnIndexSelect
//	SwiGLU         aclnnSwiGlu (gate half first)
//	MoECombine     aclnnMoeTokenUnpermute
//	Add            aclnnAdd
//	AllReduce      HcclAllReduce (sum), AllGather: HcclAllGather
//	ArgMax / TopN  aclnnArgMax / aclnnTopk
//
// Activations are float32 matrices ([rows, cols], row-major, possibly a view with a
// row stride). Weights are uploaded once from a HostWeight (F32, BF16, or weight-only
// quantized I8/I4 in the layout of convert/FORMATS.md) and may be repacked by a backend.
//
// Ranks: a tensor-parallel group of W ranks is W Backend values sharing one
// communicator; rank r holds only its shard. Every op of one rank must be called from
// one goroutine at a time; collectives block until every rank of the group arrives.
//
// Row independence: every op computes each row of its output from the corresponding
// row(s) of its inputs only, with an arithmetic order that does not depend on how many
// rows are in the call. This is what makes a sequence's logits bit-identical whatever
// else shares the batch.
package backend

import "errors"

// Tensor is a float32 matrix living on a backend: Rows() × Cols(), row-major, possibly a
// view into a larger tensor (see Backend.Slice). Tensors are created by the backend that
// uses them and are not goroutine-safe.
type Tensor interface {
	Rows() int
	Cols() int
}

// Weight is a read-only parameter uploaded to a backend by Backend.LoadWeight. Its
// logical shape is N × K (PyTorch layout [out, in]): Linear computes y = x · Wᵀ.
// One-dimensional parameters (norm weights, router bias) have K == 1.
type Weight interface {
	Name() string
	DType() DType
	N() int
	K() int
}

// Sized is implemented by weights that report the memory their data holds (on the
// host or the device): what one full read of the weight costs.
type Sized interface {
	Bytes() int64
}

// Cache is the paged latent KV cache of one rank: for every layer, NumBlocks blocks of
// BlockSize token rows of Width float32 values. In absorb mode a row holds the
// normalised latent c_n followed by the rotated k_pe (spec §5.2.1). Slot s (a token row)
// is block s / BlockSize, offset s % BlockSize.
type Cache interface {
	Layers() int
	NumBlocks() int
	BlockSize() int
	Width() int
}

// RopeTable holds the rotary frequencies of one model (spec §5.4) on a backend.
type RopeTable interface {
	// Pairs is the number of rotated pairs (qk_rope_head_dim / 2).
	Pairs() int
	// MaxPos is the number of positions the table covers.
	MaxPos() int
}

// AttnSeq describes one sequence of an attention call: its query rows are
// [Row, Row+N) of the query and output tensors, at absolute positions [Pos, Pos+N);
// query row i attends to key positions [0, Pos+i] (causal). For MLAAttention Blocks is
// the sequence's block table (block i holds positions [i·BlockSize, (i+1)·BlockSize)).
// For Attention the keys of the sequence are rows [KeyRow, KeyRow+Pos+N) of the key
// and value tensors.
type AttnSeq struct {
	Row    int
	N      int
	Pos    int
	Blocks []int32
	KeyRow int
}

// Score is the router scoring function (spec §5.5).
type Score uint8

// Router scoring functions.
const (
	Sigmoid Score = iota + 1 // V3: sigmoid scores, bias for selection only
	Softmax                  // V2: softmax over all experts in float32
)

// GroupScore selects how an expert group is scored for group-limited routing.
type GroupScore uint8

// Group scoring rules (spec §5.5; aclnnMoeGatingTopK groupSelectMode).
const (
	GroupTop2Sum GroupScore = iota + 1 // V3: sum of the two largest biased scores
	GroupMax                           // V2: max score of the group
)

// GateParams configures MoEGate.
type GateParams struct {
	TopK       int        // experts per token (n_activated_experts)
	Groups     int        // expert groups (n_expert_groups); 1 = no group limit
	TopGroups  int        // groups a token may use (n_limited_groups)
	Score      Score      // sigmoid or softmax
	GroupScore GroupScore // group score rule when Groups > 1
	Normalize  bool       // renormalise the chosen weights to sum 1
	RouteScale float32    // multiplier on the routing weights (route_scale)
}

// Backend is one rank's set of ops. All methods return an error (never panic) on bad
// shapes or dtypes. Output tensors must not alias inputs unless the op says so.
type Backend interface {
	// Name is the backend's name ("reference", "cpu", "ascend").
	Name() string
	// Rank and WorldSize place this backend in its tensor-parallel group.
	Rank() int
	WorldSize() int

	// NewTensor allocates a zeroed rows × cols float32 tensor.
	NewTensor(rows, cols int) (Tensor, error)
	// Slice returns a view of rows [row0, row0+rows) and columns [col0, col0+cols) of t,
	// sharing its storage.
	Slice(t Tensor, row0, rows, col0, cols int) (Tensor, error)
	// Write copies src (rows × cols, row-major) into t; Read copies t into dst.
	Write(t Tensor, src []float32) error
	Read(t Tensor, dst []float32) error

	// LoadWeight uploads a host weight (validated first). The backend may keep a
	// reference to hw's slices; the caller must not modify them afterwards.
	LoadWeight(hw *HostWeight) (Weight, error)
	// NewCache allocates the paged latent cache.
	NewCache(layers, numBlocks, blockSize, width int) (Cache, error)
	// NewRopeTable builds cos/sin tables for positions [0, maxPos) from the per-pair
	// frequencies: angle(t, i) = float32(t) · freqs[i] (float32 product).
	NewRopeTable(freqs []float32, maxPos int) (RopeTable, error)

	// Embedding writes out[i] = table[ids[i] - rowOffset] for ids inside this rank's
	// rows [rowOffset, rowOffset+table.N()), and zeros otherwise (spec §4.3). table is
	// F32 or BF16 with K == out.Cols().
	Embedding(out Tensor, table Weight, ids []int32, rowOffset int) error
	// RMSNorm writes out = w ⊙ x / sqrt(mean(x²) + eps) per row; out may equal x.
	RMSNorm(out, x Tensor, w Weight, eps float32) error
	// Linear writes out = x · Wᵀ: x is M × K, out is M × N.
	Linear(out, x Tensor, w Weight) error
	// HeadLinear is a per-head Linear: w is (heads·n) × k, x is M × (heads·k), out is
	// M × (heads·n), and out[:, h·n:(h+1)·n] = x[:, h·k:(h+1)·k] · W[h·n:(h+1)·n]ᵀ.
	HeadLinear(out, x Tensor, w Weight, heads int) error
	// GroupedLinear applies ws[g] to the counts[g] consecutive rows of x that follow the
	// rows of the earlier groups: out = x · ws[g]ᵀ row-group by row-group. Every weight
	// has the same N and K; sum(counts) == x.Rows().
	GroupedLinear(out, x Tensor, ws []Weight, counts []int) error
	// Rope rotates x in place: x is M × (heads·2·Pairs) and row i is at position pos[i];
	// each head's pairs (x[2j], x[2j+1]) are rotated by angle(pos[i], j) (spec §5.3,
	// interleaved pairs).
	Rope(x Tensor, heads int, pos []int32, table RopeTable) error

	// CacheWrite stores the rows of kv (M × Width) at the given cache slots of layer.
	CacheWrite(c Cache, layer int, kv Tensor, slots []int32) error
	// CacheRead gathers positions [0, out.Rows()) of a sequence with block table blocks
	// from layer into out (rows × Width).
	CacheRead(out Tensor, c Cache, layer int, blocks []int32) error
	// MLAAttention is absorbed MLA attention over the paged latent cache (spec §5.2.1):
	// for each sequence, query row i and head h, score(t) = (qAbs_h·c_t + qPe_h·pe_t)·scale
	// over t ≤ Pos+i, where cache row t = [c_t (Lc) | pe_t (R)]; p = softmax(score);
	// out_h = Σ_t p_t c_t. qAbs is M × (heads·Lc), qPe M × (heads·R), out M × (heads·Lc),
	// with Lc + R == Width.
	MLAAttention(out, qAbs, qPe Tensor, c Cache, layer int, heads int, seqs []AttnSeq, scale float32) error
	// Attention is plain causal multi-head attention with a shared rope key (spec
	// §5.2.2): score(t) = (qNope_h·kNope_{t,h} + qPe_h·kPe_t)·scale, p = softmax,
	// out_h = Σ_t p_t v_{t,h}. qNope M × (heads·Dn), qPe M × (heads·R), kNope T × (heads·Dn),
	// kPe T × R, v T × (heads·Dv), out M × (heads·Dv).
	Attention(out, qNope, qPe, kNope, kPe, v Tensor, heads int, seqs []AttnSeq, scale float32) error

	// MoEGate routes each row of the router logits (M × E) to p.TopK experts (spec
	// §5.5): it returns idx and w, both M × TopK row-major, sorted by descending
	// selection score (ties: lower expert id). bias (E × 1, F32) may be nil.
	MoEGate(logits Tensor, bias Weight, p GateParams) (idx []int32, w []float32, err error)
	// GatherRows writes out[i] = x[rows[i]].
	GatherRows(out, x Tensor, rows []int32) error
	// SwiGLU writes out = silu(x[:, :m]) ⊙ x[:, m:] with x M × 2m and out M × m.
	SwiGLU(out, x Tensor) error
	// MoECombine zeroes out and then, for r = 0, 1, ... in order, adds w[r]·y[r] to
	// out[tok[r]]. Rows of y sorted by expert id give the reference's order (spec §5.5).
	MoECombine(out, y Tensor, tok []int32, w []float32) error
	// Add writes out = a + b; out may equal a or b.
	Add(out, a, b Tensor) error

	// AllReduce sums t over the ranks of the group in place (rank order, identical
	// result on every rank).
	AllReduce(t Tensor) error
	// AllGather concatenates every rank's in (M × n) along columns into out (M × W·n),
	// rank order.
	AllGather(out, in Tensor) error

	// ArgMax returns the index of the largest value of each row (ties: lowest index).
	ArgMax(x Tensor) ([]int32, error)
	// TopN returns, per row, the n largest values and their indices (descending; ties:
	// lowest index), both rows × n row-major.
	TopN(x Tensor, n int) ([]int32, []float32, error)

	// Close releases the backend's memory; it is safe to call more than once.
	Close() error
}

// Aborter is implemented by backends whose collectives can be cancelled. When one rank
// fails, the caller calls AbortCollectives on any rank: every rank blocked in (or later
// entering) a collective returns an error wrapping ErrAborted. ResetCollectives re-arms
// the group once every rank has returned.
type Aborter interface {
	AbortCollectives(cause error)
	ResetCollectives()
}

// Freer is implemented by backends whose tensors hold memory that the garbage collector
// does not reclaim (device memory): Free releases a tensor made by NewTensor (not a
// view). The model frees its per-step tensors through it when available.
type Freer interface {
	Free(t Tensor)
}

// Factory builds the W rank backends of one tensor-parallel group.
type Factory func(worldSize int) ([]Backend, error)

// ErrAborted is returned by collectives after another rank of the group failed.
var ErrAborted = errors.New("backend: collective aborted by another rank")
