package convert

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// module is one row of DeepSeek convert.py's mapping table (spec §3.3): the reference
// module name and the dimension split across ranks (-1: replicated).
type module struct {
	name string
	dim  int
}

var modules = map[string]module{
	"embed_tokens":             {"embed", 0},
	"input_layernorm":          {"attn_norm", -1},
	"post_attention_layernorm": {"ffn_norm", -1},
	"q_proj":                   {"wq", 0},
	"q_a_proj":                 {"wq_a", -1},
	"q_a_layernorm":            {"q_norm", -1},
	"q_b_proj":                 {"wq_b", 0},
	"kv_a_proj_with_mqa":       {"wkv_a", -1},
	"kv_a_layernorm":           {"kv_norm", -1},
	"kv_b_proj":                {"wkv_b", 0},
	"o_proj":                   {"wo", 1},
	"gate":                     {"gate", -1},
	"gate_proj":                {"w1", 0},
	"down_proj":                {"w2", 1},
	"up_proj":                  {"w3", 0},
	"norm":                     {"norm", -1},
	"lm_head":                  {"head", 0},
}

// target is where one Hugging Face tensor goes in the reference format.
type target struct {
	name   string // reference name, e.g. layers.3.ffn.experts.17.w1.weight
	dim    int    // split dimension in (n, k) orientation, -1 replicated
	expert int    // routed expert index, -1 if not a routed expert
}

var layerRe = regexp.MustCompile(`^model\.layers\.(\d+)\.`)

// hfLayer returns the layer index of an HF tensor name, or -1.
func hfLayer(name string) int {
	m := layerRe.FindStringSubmatch(name)
	if m == nil {
		return -1
	}
	l, err := strconv.Atoi(m[1])
	if err != nil {
		return -1
	}
	return l
}

// ReferenceName maps a Hugging Face tensor name to DeepSeek's reference name exactly as
// convert.py does (strip "model.", self_attn->attn, mlp->ffn,
// weight_scale_inv->scale, e_score_correction_bias->bias, then the module table).
func ReferenceName(hf string) (string, error) {
	t, err := mapName(hf)
	return t.name, err
}

func mapName(hf string) (target, error) {
	name := strings.TrimPrefix(hf, "model.")
	name = strings.ReplaceAll(name, "self_attn", "attn")
	name = strings.ReplaceAll(name, "mlp", "ffn")
	name = strings.ReplaceAll(name, "weight_scale_inv", "scale")
	name = strings.ReplaceAll(name, "e_score_correction_bias", "bias")
	parts := strings.Split(name, ".")
	if len(parts) < 2 {
		return target{}, fmt.Errorf("unknown tensor name %q", hf)
	}
	m, ok := modules[parts[len(parts)-2]]
	if !ok {
		return target{}, fmt.Errorf("unknown tensor name %q (module %q is not in convert.py's table)", hf, parts[len(parts)-2])
	}
	parts[len(parts)-2] = m.name
	t := target{name: strings.Join(parts, "."), dim: m.dim, expert: -1}
	if strings.Contains(name, "experts") && !strings.Contains(name, "shared_experts") {
		if len(parts) < 3 {
			return target{}, fmt.Errorf("unknown tensor name %q", hf)
		}
		e, err := strconv.Atoi(parts[len(parts)-3])
		if err != nil || e < 0 {
			return target{}, fmt.Errorf("routed expert tensor %q: bad expert index %q", hf, parts[len(parts)-3])
		}
		t.expert = e
		t.dim = -1
	}
	return t, nil
}

var quantRe = regexp.MustCompile(`^layers\.\d+\.(attn\.(wq|wq_a|wq_b|wkv_a|wkv_b|wo)|ffn\.(w1|w2|w3)|ffn\.shared_experts\.(w1|w2|w3)|ffn\.experts\.\d+\.(w1|w2|w3))\.weight$`)

// Quantized reports whether a reference-named tensor is a linear weight that int8/int4
// modes quantize (attention projections, dense MLP, shared and routed experts).
func Quantized(ref string) bool { return quantRe.MatchString(ref) }

// isRouterBias reports whether a reference name is the router's correction bias,
// which the reference keeps in fp32.
func isRouterBias(ref string) bool { return strings.HasSuffix(ref, ".ffn.gate.bias") }
