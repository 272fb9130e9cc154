package configs

import (
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
)

//go:embed config_671B.json config_236B.json config_16B.json config_tiny.json
var embedded embed.FS

// Model is DeepSeek's ModelArgs (spec §1.1) plus the few fields dsgate needs to make
// implicit reference behaviour explicit. JSON names are those of DeepSeek's inference
// configs; env names are the GATEWAY_-prefixed upper-case forms.
type Model struct {
	MaxBatchSize      int     `json:"max_batch_size" env:"MAX_BATCH_SIZE"`
	MaxSeqLen         int     `json:"max_seq_len" env:"MAX_SEQ_LEN"`
	Dtype             string  `json:"dtype" env:"DTYPE"`
	ScaleFmt          string  `json:"scale_fmt,omitempty" env:"SCALE_FMT"`
	VocabSize         int     `json:"vocab_size" env:"VOCAB_SIZE"`
	Dim               int     `json:"dim" env:"DIM"`
	InterDim          int     `json:"inter_dim" env:"INTER_DIM"`
	MoeInterDim       int     `json:"moe_inter_dim" env:"MOE_INTER_DIM"`
	NLayers           int     `json:"n_layers" env:"N_LAYERS"`
	NDenseLayers      int     `json:"n_dense_layers" env:"N_DENSE_LAYERS"`
	NHeads            int     `json:"n_heads" env:"N_HEADS"`
	NRoutedExperts    int     `json:"n_routed_experts" env:"N_ROUTED_EXPERTS"`
	NSharedExperts    int     `json:"n_shared_experts" env:"N_SHARED_EXPERTS"`
	NActivatedExperts int     `json:"n_activated_experts" env:"N_ACTIVATED_EXPERTS"`
	NExpertGroups     int     `json:"n_expert_groups" env:"N_EXPERT_GROUPS"`
	NLimitedGroups    int     `json:"n_limited_groups" env:"N_LIMITED_GROUPS"`
	ScoreFunc         string  `json:"score_func" env:"SCORE_FUNC"`
	RouteScale        float64 `json:"route_scale" env:"ROUTE_SCALE"`
	QLoraRank         int     `json:"q_lora_rank" env:"Q_LORA_RANK"`
	KVLoraRank        int     `json:"kv_lora_rank" env:"KV_LORA_RANK"`
	QKNopeHeadDim     int     `json:"qk_nope_head_dim" env:"QK_NOPE_HEAD_DIM"`
	QKRopeHeadDim     int     `json:"qk_rope_head_dim" env:"QK_ROPE_HEAD_DIM"`
	VHeadDim          int     `json:"v_head_dim" env:"V_HEAD_DIM"`
	OriginalSeqLen    int     `json:"original_seq_len" env:"ORIGINAL_SEQ_LEN"`
	RopeTheta         float64 `json:"rope_theta" env:"ROPE_THETA"`
	RopeFactor        float64 `json:"rope_factor" env:"ROPE_FACTOR"`
	BetaFast          int     `json:"beta_fast" env:"BETA_FAST"`
	BetaSlow          int     `json:"beta_slow" env:"BETA_SLOW"`
	Mscale            float64 `json:"mscale" env:"MSCALE"`
	// QuantGroupSize is the int4/int8 scale group size along the input dimension k of
	// a converted checkpoint (convert/FORMATS.md): 0 = one scale per output channel.
	QuantGroupSize int `json:"quant_group_size,omitempty" env:"QUANT_GROUP_SIZE"`

	// RouterBias says whether the MoE router has an e_score_correction_bias. The reference
	// decides this implicitly (dim == 7168); HF says topk_method "noaux_tc". Nil means
	// the reference's rule.
	RouterBias *bool `json:"router_bias,omitempty" env:"ROUTER_BIAS"`
	// NormTopkProb says whether routing weights are renormalised over the chosen experts.
	// The reference does it iff score_func is sigmoid; HF says norm_topk_prob. Nil means
	// the reference's rule.
	NormTopkProb *bool `json:"norm_topk_prob,omitempty" env:"NORM_TOPK_PROB"`
	// BOSID and EOSID are the tokenizer's begin/end-of-sentence ids (HF bos_token_id,
	// eos_token_id); DeepSeek-V3 uses 0 and 1.
	BOSID int `json:"bos_token_id" env:"BOS_TOKEN_ID"`
	EOSID int `json:"eos_token_id" env:"EOS_TOKEN_ID"`

	// Fields of the original "DeepSeek-V3 for Ascend" project's configs, accepted so its
	// config files load unchanged. AttnImpl picks the MLA form ("absorb" or "naive");
	// MaxNewTokens and Temperature are the defaults of batch and chat when no request
	// says otherwise. GemmImpl, MiniBatchSize and OffloadCPU steered torch code paths
	// that have no counterpart here; they are read and ignored.
	AttnImpl      string  `json:"attn_impl,omitempty" env:"ATTN_IMPL"`
	GemmImpl      string  `json:"gemm_impl,omitempty" env:"GEMM_IMPL"`
	MaxNewTokens  int     `json:"max_new_tokens,omitempty" env:"MAX_NEW_TOKENS"`
	Temperature   float64 `json:"temperature" env:"TEMPERATURE"`
	MiniBatchSize int     `json:"mini_batch_size,omitempty" env:"MINI_BATCH_SIZE"`
	OffloadCPU    bool    `json:"offload_cpu,omitempty" env:"OFFLOAD_CPU"`
}

// Default returns ModelArgs with the reference's defaults (spec §1.1).
func Default() Model {
	return Model{
		MaxBatchSize: 8, MaxSeqLen: 4096 * 4, Dtype: "bf16", VocabSize: 102400, Dim: 2048,
		InterDim: 10944, MoeInterDim: 1408, NLayers: 27, NDenseLayers: 1, NHeads: 16,
		NRoutedExperts: 64, NSharedExperts: 2, NActivatedExperts: 6, NExpertGroups: 1,
		NLimitedGroups: 1, ScoreFunc: "softmax", RouteScale: 1, QLoraRank: 0, KVLoraRank: 512,
		QKNopeHeadDim: 128, QKRopeHeadDim: 64, VHeadDim: 128, OriginalSeqLen: 4096,
		RopeTheta: 10000, RopeFactor: 40, BetaFast: 32, BetaSlow: 1, Mscale: 1,
		BOSID: 0, EOSID: 1, AttnImpl: "absorb", MaxNewTokens: 200, Temperature: 0.2,
	}
}

// HasRouterBias resolves RouterBias (spec §1.1: bias iff dim == 7168 in the reference).
func (m Model) HasRouterBias() bool {
	if m.RouterBias != nil {
		return *m.RouterBias
	}
	return m.Dim == 7168
}

// NormalizesTopk resolves NormTopkProb (spec §5.5: renormalise iff sigmoid in the reference).
func (m Model) NormalizesTopk() bool {
	if m.NormTopkProb != nil {
		return *m.NormTopkProb
	}
	return m.ScoreFunc == "sigmoid"
}

// QKHeadDim is qk_nope_head_dim + qk_rope_head_dim.
func (m Model) QKHeadDim() int { return m.QKNopeHeadDim + m.QKRopeHeadDim }

// Validate checks that the configuration describes a model dsgate can build.
func (m Model) Validate() error {
	var errs []error
	pos := func(name string, v int) {
		if v <= 0 {
			errs = append(errs, fmt.Errorf("%s must be > 0, got %d", name, v))
		}
	}
	pos("max_batch_size", m.MaxBatchSize)
	pos("max_seq_len", m.MaxSeqLen)
	pos("vocab_size", m.VocabSize)
	pos("dim", m.Dim)
	pos("inter_dim", m.InterDim)
	pos("n_layers", m.NLayers)
	pos("n_heads", m.NHeads)
	pos("kv_lora_rank", m.KVLoraRank)
	pos("qk_nope_head_dim", m.QKNopeHeadDim)
	pos("qk_rope_head_dim", m.QKRopeHeadDim)
	pos("v_head_dim", m.VHeadDim)
	pos("original_seq_len", m.OriginalSeqLen)
	if m.QKRopeHeadDim%2 != 0 {
		errs = append(errs, fmt.Errorf("qk_rope_head_dim must be even, got %d", m.QKRopeHeadDim))
	}
	if m.NDenseLayers < 0 || m.NDenseLayers > m.NLayers {
		errs = append(errs, fmt.Errorf("n_dense_layers must be in [0, n_layers], got %d", m.NDenseLayers))
	}
	if m.QLoraRank < 0 {
		errs = append(errs, fmt.Errorf("q_lora_rank must be >= 0, got %d", m.QLoraRank))
	}
	if m.NDenseLayers < m.NLayers {
		pos("moe_inter_dim", m.MoeInterDim)
		pos("n_routed_experts", m.NRoutedExperts)
		pos("n_activated_experts", m.NActivatedExperts)
		pos("n_expert_groups", m.NExpertGroups)
		pos("n_limited_groups", m.NLimitedGroups)
		if m.NSharedExperts < 0 {
			errs = append(errs, fmt.Errorf("n_shared_experts must be >= 0, got %d", m.NSharedExperts))
		}
		if m.NExpertGroups > 0 && m.NRoutedExperts%m.NExpertGroups != 0 {
			errs = append(errs, fmt.Errorf("n_routed_experts (%d) must be divisible by n_expert_groups (%d)", m.NRoutedExperts, m.NExpertGroups))
		}
		if m.NLimitedGroups > m.NExpertGroups {
			errs = append(errs, fmt.Errorf("n_limited_groups (%d) must be <= n_expert_groups (%d)", m.NLimitedGroups, m.NExpertGroups))
		}
		if m.NActivatedExperts > m.NRoutedExperts {
			errs = append(errs, fmt.Errorf("n_activated_experts (%d) must be <= n_routed_experts (%d)", m.NActivatedExperts, m.NRoutedExperts))
		}
	}
	switch m.ScoreFunc {
	case "softmax", "sigmoid":
	default:
		errs = append(errs, fmt.Errorf(`score_func must be "softmax" or "sigmoid", got %q`, m.ScoreFunc))
	}
	switch m.AttnImpl {
	case "", "absorb", "naive":
	default:
		errs = append(errs, fmt.Errorf(`attn_impl must be "absorb" or "naive", got %q`, m.AttnImpl))
	}
	if m.Temperature < 0 {
		errs = append(errs, fmt.Errorf("temperature must be >= 0, got %v", m.Temperature))
	}
	switch m.Dtype {
	case "bf16", "fp8", "int8", "int4":
	default:
		errs = append(errs, fmt.Errorf(`dtype must be bf16, fp8, int8 or int4, got %q`, m.Dtype))
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid model config: %w", errors.Join(errs...))
	}
	return nil
}

// CheckWorldSize reports whether the model can be sharded over w ranks (spec §3.3).
func (m Model) CheckWorldSize(w int) error {
	if w <= 0 {
		return fmt.Errorf("world size must be > 0, got %d", w)
	}
	var errs []error
	div := func(name string, v int) {
		if v%w != 0 {
			errs = append(errs, fmt.Errorf("%s (%d) is not divisible by world size %d", name, v, w))
		}
	}
	div("n_heads", m.NHeads)
	div("vocab_size", m.VocabSize)
	div("inter_dim", m.InterDim)
	if m.NDenseLayers < m.NLayers {
		div("n_routed_experts", m.NRoutedExperts)
		div("moe_inter_dim*n_shared_experts", m.MoeInterDim*m.NSharedExperts)
	}
	return errors.Join(errs...)
}

// Embedded returns a configuration shipped with dsgate by file name, e.g. "config_tiny.json".
func Embedded(name string) (Model, error) {
	data, err := embedded.ReadFile(name)
	if err != nil {
		return Model{}, fmt.Errorf("embedded config %q: %w (have config_671B.json, config_236B.json, config_16B.json, config_tiny.json)", name, err)
	}
	m, err := Parse(data)
	if err != nil {
		return Model{}, fmt.Errorf("embedded config %s: %w", name, err)
	}
	return m, nil
}

// EmbeddedJSON returns the raw bytes of a shipped configuration file.
func EmbeddedJSON(name string) ([]byte, error) { return embedded.ReadFile(name) }

// LoadFile reads a configuration file in DeepSeek's inference format or Hugging Face's
// config.json format (detected by its keys). A path that does not exist on disk but names
// an embedded config (e.g. "configs/config_tiny.json") is served from the embedded copy.
func LoadFile(path string) (Model, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			if m, eerr := Embedded(filepath.Base(path)); eerr == nil {
				return m, nil
			}
		}
		return Model{}, fmt.Errorf("load config %s: %w", path, err)
	}
	m, err := Parse(data)
	if err != nil {
		return Model{}, fmt.Errorf("load config %s: %w", path, err)
	}
	return m, nil
}

// FromCheckpoint reads config.json from a checkpoint folder (HF or DeepSeek format).
func FromCheckpoint(dir string) (Model, error) {
	return LoadFile(filepath.Join(dir, "config.json"))
}

// Parse decodes a configuration in either format on top of the defaults.
func Parse(data []byte) (Model, error) {
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(data, &probe); err != nil {
		return Model{}, fmt.Errorf("parse config JSON: %w", err)
	}
	if _, ok := probe["hidden_size"]; ok {
		return parseHF(data)
	}
	m := Default()
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return Model{}, fmt.Errorf("parse DeepSeek-format config: %w (valid fields: %s)", err, strings.Join(FieldNames(), ", "))
	}
	return m, nil
}

// FieldNames lists the JSON names of every configurable field, sorted.
func FieldNames() []string {
	t := reflect.TypeOf(Model{})
	names := make([]string, 0, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		names = append(names, jsonName(t.Field(i)))
	}
	sort.Strings(names)
	return names
}

func jsonName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	return name
}

// MarshalIndent renders the configuration in DeepSeek's inference format.
func (m Model) MarshalIndent() ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "    ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
