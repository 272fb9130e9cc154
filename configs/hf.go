package configs

import (
	"encoding/json"
	"fmt"
	"math"
)

// hfConfig is the subset of a Hugging Face DeepSeek config.json that maps onto ModelArgs
// (spec §1.3).
type hfConfig struct {
	VocabSize         int      `json:"vocab_size"`
	HiddenSize        int      `json:"hidden_size"`
	IntermediateSize  int      `json:"intermediate_size"`
	MoeIntermediate   int      `json:"moe_intermediate_size"`
	NumHiddenLayers   int      `json:"num_hidden_layers"`
	FirstKDense       *int     `json:"first_k_dense_replace"`
	NumAttentionHeads int      `json:"num_attention_heads"`
	NRoutedExperts    *int     `json:"n_routed_experts"`
	NSharedExperts    *int     `json:"n_shared_experts"`
	NumExpertsPerTok  *int     `json:"num_experts_per_tok"`
	NGroup            *int     `json:"n_group"`
	TopkGroup         *int     `json:"topk_group"`
	TopkMethod        string   `json:"topk_method"`
	ScoringFunc       string   `json:"scoring_func"`
	NormTopkProb      *bool    `json:"norm_topk_prob"`
	RoutedScaling     *float64 `json:"routed_scaling_factor"`
	QLoraRank         *int     `json:"q_lora_rank"`
	KVLoraRank        int      `json:"kv_lora_rank"`
	QKNopeHeadDim     int      `json:"qk_nope_head_dim"`
	QKRopeHeadDim     int      `json:"qk_rope_head_dim"`
	VHeadDim          int      `json:"v_head_dim"`
	RopeTheta         *float64 `json:"rope_theta"`
	MaxPositionEmbeds int      `json:"max_position_embeddings"`
	BOSTokenID        *int     `json:"bos_token_id"`
	EOSTokenID        *int     `json:"eos_token_id"`
	RopeScaling       *struct {
		Type         string   `json:"type"`
		RopeType     string   `json:"rope_type"`
		Factor       *float64 `json:"factor"`
		Original     *int     `json:"original_max_position_embeddings"`
		BetaFast     *float64 `json:"beta_fast"`
		BetaSlow     *float64 `json:"beta_slow"`
		Mscale       *float64 `json:"mscale"`
		MscaleAllDim *float64 `json:"mscale_all_dim"`
	} `json:"rope_scaling"`
	QuantizationConfig *struct {
		QuantMethod string `json:"quant_method"`
		ScaleFmt    string `json:"scale_fmt"`
	} `json:"quantization_config"`
}

func parseHF(data []byte) (Model, error) {
	var h hfConfig
	if err := json.Unmarshal(data, &h); err != nil {
		return Model{}, fmt.Errorf("parse Hugging Face config.json: %w", err)
	}
	m := Default()
	m.VocabSize = h.VocabSize
	m.Dim = h.HiddenSize
	m.InterDim = h.IntermediateSize
	if h.MoeIntermediate > 0 {
		m.MoeInterDim = h.MoeIntermediate
	}
	m.NLayers = h.NumHiddenLayers
	m.NHeads = h.NumAttentionHeads
	setInt(&m.NDenseLayers, h.FirstKDense)
	setInt(&m.NRoutedExperts, h.NRoutedExperts)
	setInt(&m.NSharedExperts, h.NSharedExperts)
	setInt(&m.NActivatedExperts, h.NumExpertsPerTok)
	setInt(&m.NExpertGroups, h.NGroup)
	setInt(&m.NLimitedGroups, h.TopkGroup)
	if h.NRoutedExperts == nil || *h.NRoutedExperts == 0 {
		m.NDenseLayers = m.NLayers // a model without experts is all dense
	}
	if h.ScoringFunc != "" {
		m.ScoreFunc = h.ScoringFunc
	}
	if h.RoutedScaling != nil {
		m.RouteScale = *h.RoutedScaling
	}
	if h.QLoraRank != nil {
		m.QLoraRank = *h.QLoraRank
	} else {
		m.QLoraRank = 0
	}
	m.KVLoraRank = h.KVLoraRank
	m.QKNopeHeadDim = h.QKNopeHeadDim
	m.QKRopeHeadDim = h.QKRopeHeadDim
	m.VHeadDim = h.VHeadDim
	if h.RopeTheta != nil {
		m.RopeTheta = *h.RopeTheta
	}
	bias := h.TopkMethod == "noaux_tc"
	m.RouterBias = &bias
	norm := m.ScoreFunc == "sigmoid"
	if h.NormTopkProb != nil {
		norm = *h.NormTopkProb
	}
	m.NormTopkProb = &norm
	setInt(&m.BOSID, h.BOSTokenID)
	setInt(&m.EOSID, h.EOSTokenID)
	if rs := h.RopeScaling; rs != nil && (rs.Type == "yarn" || rs.RopeType == "yarn") {
		if rs.Factor != nil {
			m.RopeFactor = *rs.Factor
		}
		setInt(&m.OriginalSeqLen, rs.Original)
		if rs.BetaFast != nil {
			m.BetaFast = int(math.Round(*rs.BetaFast))
		}
		if rs.BetaSlow != nil {
			m.BetaSlow = int(math.Round(*rs.BetaSlow))
		}
		if rs.MscaleAllDim != nil {
			m.Mscale = *rs.MscaleAllDim
		}
		// HF applies YaRN whatever the cache length; the reference only when
		// max_seq_len > original_seq_len. Keep the cache longer so both agree.
		if m.MaxSeqLen <= m.OriginalSeqLen {
			m.MaxSeqLen = 4 * m.OriginalSeqLen
		}
	} else {
		// No YaRN: the reference switches it off when max_seq_len <= original_seq_len.
		if h.MaxPositionEmbeds > 0 {
			m.OriginalSeqLen = h.MaxPositionEmbeds
			if m.MaxSeqLen > h.MaxPositionEmbeds {
				m.MaxSeqLen = h.MaxPositionEmbeds
			}
		}
	}
	if q := h.QuantizationConfig; q != nil && q.QuantMethod == "fp8" {
		m.Dtype = "fp8"
		m.ScaleFmt = q.ScaleFmt
	}
	return m, nil
}

func setInt(dst *int, v *int) {
	if v != nil {
		*dst = *v
	}
}
