package configs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func TestEmbeddedConfigsValidate(t *testing.T) {
	for _, name := range []string{"config_671B.json", "config_236B.json", "config_16B.json", "config_tiny.json"} {
		m, err := Embedded(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	tiny, _ := Embedded("config_tiny.json")
	for _, w := range []int{1, 2, 4, 8} {
		if err := tiny.CheckWorldSize(w); err != nil {
			t.Errorf("config_tiny over %d ranks: %v", w, err)
		}
	}
	if tiny.VocabSize != 129280 {
		t.Errorf("config_tiny vocab %d, want the real 129280", tiny.VocabSize)
	}
}

// The HF config.json of DeepSeek-V3 must map onto the same ModelArgs as config_671B.json
// (spec §1.3), plus what HF says explicitly.
func TestHFConfigMapsLike671B(t *testing.T) {
	hf, err := LoadFile("testdata/hf_deepseek_v3_config.json")
	if err != nil {
		t.Fatal(err)
	}
	ds, err := Embedded("config_671B.json")
	if err != nil {
		t.Fatal(err)
	}
	if !hf.HasRouterBias() || !hf.NormalizesTopk() || !ds.HasRouterBias() || !ds.NormalizesTopk() {
		t.Fatalf("router bias / renormalisation: hf %v %v, ds %v %v", hf.HasRouterBias(), hf.NormalizesTopk(), ds.HasRouterBias(), ds.NormalizesTopk())
	}
	hf.RouterBias, hf.NormTopkProb = nil, nil
	hf.MaxSeqLen = ds.MaxSeqLen
	if hf != ds {
		t.Fatalf("HF config maps to\n%+v\nwant\n%+v", hf, ds)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ name, json, want string }{
		{"not json", `{`, "parse config JSON"},
		{"unknown field", `{"dimm": 3}`, "valid fields"},
		{"wrong type", `{"dim": "big"}`, "dim"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.json))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse(%s) = %v, want error containing %q", tc.json, err, tc.want)
			}
		})
	}
}

func TestValidateRejects(t *testing.T) {
	base, _ := Embedded("config_tiny.json")
	for _, tc := range []struct {
		name string
		mod  func(*Model)
		want string
	}{
		{"odd rope", func(m *Model) { m.QKRopeHeadDim = 3 }, "even"},
		{"groups", func(m *Model) { m.NExpertGroups = 3 }, "divisible"},
		{"score", func(m *Model) { m.ScoreFunc = "relu" }, "score_func"},
		{"dtype", func(m *Model) { m.Dtype = "fp4" }, "dtype"},
		{"attn", func(m *Model) { m.AttnImpl = "flash" }, "attn_impl"},
		{"zero dim", func(m *Model) { m.Dim = 0 }, "dim must be > 0"},
	} {
		m := base
		tc.mod(&m)
		if err := m.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate = %v, want %q", tc.name, err, tc.want)
		}
	}
	if err := base.CheckWorldSize(3); err == nil {
		t.Error("world size 3 accepted for config_tiny")
	}
}

// Precedence: flag > environment > config file > default.
func TestOverridePrecedence(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.json")
	if err := os.WriteFile(path, []byte(`{"max_batch_size": 16, "max_seq_len": 2048, "dim": 512}`), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
	o := RegisterOverrides(fs)
	if err := fs.Parse([]string{"--max-batch-size", "128", "--router-bias", "true"}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"GATEWAY_MAX_BATCH_SIZE": "64", "GATEWAY_MAX_SEQ_LEN": "1024"}
	if err := o.Apply(&m, env); err != nil {
		t.Fatal(err)
	}
	if m.MaxBatchSize != 128 || m.MaxSeqLen != 1024 || m.Dim != 512 || m.NLayers != 27 || !m.HasRouterBias() {
		t.Fatalf("precedence wrong: %+v", m)
	}
	fs2 := pflag.NewFlagSet("y", pflag.ContinueOnError)
	o2 := RegisterOverrides(fs2)
	_ = fs2.Parse([]string{"--dim", "wide"})
	if err := o2.Apply(&m, nil); err == nil || !strings.Contains(err.Error(), "--dim") {
		t.Fatalf("bad flag value: %v", err)
	}
	if err := ApplyEnv(&m, map[string]string{"GATEWAY_DIM": "x"}); err == nil {
		t.Fatal("bad env value accepted")
	}
	if err := m.Set("nope", "1"); err == nil || !strings.Contains(err.Error(), "max_batch_size") {
		t.Fatalf("Set unknown field: %v", err)
	}
}

func TestOriginalProjectConfigLoads(t *testing.T) {
	// The original project's config_671B.json adds these fields (ascend-cann.md §3.2).
	m, err := Parse([]byte(`{"dim": 7168, "max_batch_size": 128, "mini_batch_size": 16, "max_seq_len": 2048, "dtype": "int4",
		"gemm_impl": "naive", "attn_impl": "absorb", "max_new_tokens": 200, "temperature": 0, "offload_cpu": false}`))
	if err != nil {
		t.Fatal(err)
	}
	if m.Dtype != "int4" || m.MaxNewTokens != 200 || m.Temperature != 0 || m.MaxBatchSize != 128 {
		t.Fatalf("%+v", m)
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	m, _ := Embedded("config_tiny.json")
	b, err := m.MarshalIndent()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if back.Dim != m.Dim || back.HasRouterBias() != m.HasRouterBias() || back.VocabSize != m.VocabSize {
		t.Fatalf("round trip %+v != %+v", back, m)
	}
}

func FuzzParse(f *testing.F) {
	for _, name := range []string{"config_671B.json", "config_tiny.json"} {
		b, _ := EmbeddedJSON(name)
		f.Add(b)
	}
	hf, _ := os.ReadFile("testdata/hf_deepseek_v3_config.json")
	f.Add(hf)
	f.Add([]byte(`{"hidden_size": -1, "rope_scaling": {"type": "yarn", "factor": 1e308}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Parse(data)
		if err != nil {
			return
		}
		_ = m.Validate()
		_ = m.CheckWorldSize(8)
	})
}
