package safetensors

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// mustOpen opens a golden file written by the reference Rust serializer.
func mustOpen(t *testing.T, path string) *File {
	t.Helper()
	f, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func f32s(t *testing.T, f *File, name string) []float32 {
	t.Helper()
	tn, err := f.Tensor(name)
	if err != nil {
		t.Fatal(err)
	}
	v, err := tn.Float32()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func sameBits(a, b float32) bool {
	return math.Float32bits(a) == math.Float32bits(b) || (a != a && b != b)
}

// TestGoldenFloats decodes every float dtype of the Rust-written golden file and
// compares with numpy/ml_dtypes' float32 values bit for bit.
func TestGoldenFloats(t *testing.T) {
	g := mustOpen(t, "testdata/golden.safetensors")
	e := mustOpen(t, "testdata/golden_expect.safetensors")
	if got := g.Metadata(); got["format"] != "pt" || got["note"] != "dsgate golden" {
		t.Errorf("metadata = %v", got)
	}
	for _, tc := range []struct {
		name  string
		dt    DType
		shape []int
	}{
		{"a.f32", F32, []int{3, 5}},
		{"b.bf16", BF16, []int{4, 7}},
		{"c.f16", F16, []int{3, 3}},
		{"d.f8", F8E4M3, []int{16, 16}},
		{"i.e5m2", F8E5M2, []int{16, 16}},
		{"j.e8m0", F8E8M0, []int{16, 16}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tn, err := g.Tensor(tc.name)
			if err != nil {
				t.Fatal(err)
			}
			if tn.DType != tc.dt || !slices.Equal(tn.Shape, tc.shape) {
				t.Fatalf("got %s %v, want %s %v", tn.DType, tn.Shape, tc.dt, tc.shape)
			}
			got, want := f32s(t, g, tc.name), f32s(t, e, tc.name)
			if len(got) != len(want) {
				t.Fatalf("len %d, want %d", len(got), len(want))
			}
			for i := range got {
				if !sameBits(got[i], want[i]) {
					t.Fatalf("element %d: got %v (%#x), want %v (%#x)", i, got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]))
				}
			}
		})
	}
}

func TestGoldenInts(t *testing.T) {
	g := mustOpen(t, "testdata/golden.safetensors")
	get := func(name string) Tensor {
		tn, err := g.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		return tn
	}
	i8, err := get("e.i8").Int8s()
	if err != nil || !slices.Equal(i8, []int8{-128, -1, 0, 1, 127}) {
		t.Errorf("i8 = %v, %v", i8, err)
	}
	if u8 := get("f.u8"); u8.DType != U8 || !bytes.Equal(u8.Data, []byte{0, 1, 200, 255}) {
		t.Errorf("u8 = %v", u8.Data)
	}
	i32, err := get("g.i32").Int32s()
	if err != nil || !slices.Equal(i32, []int32{math.MinInt32, 7, math.MaxInt32, -5}) {
		t.Errorf("i32 = %v, %v", i32, err)
	}
	i64, err := get("h.i64").Int64s()
	if err != nil || !slices.Equal(i64, []int64{math.MinInt64, 1 << 40, 3}) {
		t.Errorf("i64 = %v, %v", i64, err)
	}
	if s := get("scalar"); len(s.Shape) != 0 || s.NumElements() != 1 {
		t.Errorf("scalar shape %v", s.Shape)
	} else if v, _ := s.Float32(); v[0] != 2.5 {
		t.Errorf("scalar = %v", v)
	}
	if em := get("empty"); em.NumElements() != 0 || len(em.Data) != 0 || !slices.Equal(em.Shape, []int{0, 4}) {
		t.Errorf("empty = %v %v", em.Shape, em.Data)
	}
	if _, err := get("e.i8").Float32(); err == nil {
		t.Error("I8 converted to float32 without error")
	}
	if _, err := g.Tensor("nope"); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("missing tensor error = %v", err)
	}
}

// TestWriterMatchesReference re-encodes the Rust-written expectation file with the Go
// writer, in the same tensor order, and requires identical bytes.
func TestWriterMatchesReference(t *testing.T) {
	ref, err := os.ReadFile("testdata/golden_expect.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	f, err := FromBytes("golden_expect", ref)
	if err != nil {
		t.Fatal(err)
	}
	var tensors []Tensor
	for _, name := range f.Names() {
		tn, err := f.Tensor(name)
		if err != nil {
			t.Fatal(err)
		}
		tensors = append(tensors, tn)
	}
	out := filepath.Join(t.TempDir(), "x.safetensors")
	if err := WriteFile(out, tensors, nil); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, ref) {
		t.Fatalf("Go writer output differs from the reference serializer (%d vs %d bytes)", len(got), len(ref))
	}
}

func TestWriterStreaming(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.safetensors")
	specs := []Spec{{"x", F32, []int{2, 3}}, {"z", I8, []int{0}}, {"y", BF16, []int{5}}, {"s", I64, nil}}
	w, err := Create(path, specs, map[string]string{"format": "pt"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("destination exists before Close")
	}
	payload := make([]byte, 24+10+8)
	for i := range payload {
		payload[i] = byte(i)
	}
	// Stream in odd-sized chunks spanning tensor boundaries.
	for i := 0; i < len(payload); i += 7 {
		if _, err := w.Write(payload[i:min(i+7, len(payload))]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.Write([]byte{1}); err == nil {
		t.Fatal("write past the end accepted")
	}
	if err := w.Close(); err == nil {
		t.Fatal("Close after an overflowing write succeeded")
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("failed writer left the destination")
	}

	w, err = Create(path, specs, map[string]string{"format": "pt"})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteTensor("y", payload[24:34]); err == nil {
		t.Fatal("out-of-order tensor accepted")
	}
	if err := w.WriteTensor("x", payload[:23]); err == nil {
		t.Fatal("short tensor accepted")
	}
	if err := w.WriteTensor("x", payload[:24]); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteTensor("y", payload[24:34]); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteTensor("s", payload[34:]); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f := mustOpen(t, path)
	if !slices.Equal(f.Names(), []string{"x", "z", "y", "s"}) {
		t.Fatalf("names %v", f.Names())
	}
	y, _ := f.Tensor("y")
	if !bytes.Equal(y.Data, payload[24:34]) {
		t.Fatal("y data differs")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("leftover temp files: %v", ents)
	}
	// Closing before the end removes the temp file and reports which tensor.
	w, _ = Create(filepath.Join(dir, "t.safetensors"), specs, nil)
	w.Write(payload[:5])
	if err := w.Close(); err == nil || !strings.Contains(err.Error(), `"x"`) {
		t.Fatalf("incomplete Close error = %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("leftover temp files: %v", ents)
	}
	if _, err := Create(path, []Spec{{"a", "Q9", []int{1}}}, nil); err == nil {
		t.Fatal("bad dtype accepted")
	}
	if _, err := Create(path, []Spec{{"a", F32, []int{1}}, {"a", F32, []int{1}}}, nil); err == nil {
		t.Fatal("duplicate name accepted")
	}
}

func TestOpenHFIndex(t *testing.T) {
	s, err := Open("testdata/hfset")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Layout != LayoutHFIndex || len(s.Files) != 2 {
		t.Fatalf("layout %s, %d files", s.Layout, len(s.Files))
	}
	if !slices.Equal(s.Names(), []string{"model.w1", "model.w2", "model.w3"}) {
		t.Fatalf("names %v", s.Names())
	}
	w3, err := s.Tensor("model.w3")
	if err != nil || w3.DType != I32 || !slices.Equal(w3.Shape, []int{2, 2, 2}) {
		t.Fatalf("w3 %v %v", w3.TensorInfo, err)
	}
	ents := s.Entries()
	if len(ents) != 3 || ents[2].File != "model-00002-of-00002.safetensors" {
		t.Fatalf("entries %+v", ents)
	}
}

// writeSet writes a folder of files, each holding the given tensor names (F32 [2]).
func writeSet(t *testing.T, files map[string][]string) string {
	t.Helper()
	dir := t.TempDir()
	for fn, names := range files {
		var ts []Tensor
		for _, n := range names {
			ts = append(ts, Tensor{TensorInfo: TensorInfo{Name: n, DType: F32, Shape: []int{2}}, Data: make([]byte, 8)})
		}
		if err := WriteFile(filepath.Join(dir, fn), ts, nil); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestOpenLayouts(t *testing.T) {
	single := writeSet(t, map[string][]string{"model.safetensors": {"a", "b"}})
	s, err := Open(single)
	if err != nil || s.Layout != LayoutSingle || !s.Has("b") {
		t.Fatalf("single: %v %v", s, err)
	}
	s.Close()

	mp := writeSet(t, map[string][]string{"model0-mp2.safetensors": {"a", "b"}, "model1-mp2.safetensors": {"a", "b"}})
	s, err = Open(mp)
	if err != nil {
		t.Fatal(err)
	}
	if s.Layout != LayoutMP || s.MP != 2 || len(s.Entries()) != 4 {
		t.Fatalf("mp: %s %d %d", s.Layout, s.MP, len(s.Entries()))
	}
	if _, err := s.Tensor("a"); err == nil {
		t.Error("Tensor on an mp2 set did not ask for a rank")
	}
	if tn, err := s.RankTensor(1, "b"); err != nil || tn.Name != "b" {
		t.Errorf("RankTensor: %v", err)
	}
	if _, err := s.RankTensor(2, "b"); err == nil {
		t.Error("rank 2 of mp2 accepted")
	}
	s.Close()

	for name, files := range map[string]map[string][]string{
		"missing rank": {"model0-mp2.safetensors": {"a"}},
		"mixed mp":     {"model0-mp1.safetensors": {"a"}, "model0-mp2.safetensors": {"a"}, "model1-mp2.safetensors": {"a"}},
		"duplicate":    {"x.safetensors": {"a"}, "y.safetensors": {"a"}},
		"empty dir":    {},
	} {
		if _, err := Open(writeSet(t, files)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	glob := writeSet(t, map[string][]string{"x.safetensors": {"a"}, "y.safetensors": {"b"}})
	s, err = Open(glob)
	if err != nil || s.Layout != LayoutGlob || len(s.Names()) != 2 {
		t.Fatalf("glob: %v", err)
	}
	s.Close()
}

func TestOpenBadIndex(t *testing.T) {
	for name, tc := range map[string]struct {
		index string
		want  string
	}{
		"not json":      {"{", "model.safetensors.index.json"},
		"empty map":     {`{"weight_map":{}}`, "weight_map"},
		"missing shard": {`{"weight_map":{"a":"gone.safetensors"}}`, "gone.safetensors"},
		"wrong shard":   {`{"weight_map":{"zz":"x.safetensors"}}`, `"zz"`},
		"path escape":   {`{"weight_map":{"a":"../x.safetensors"}}`, "plain file name"},
	} {
		t.Run(name, func(t *testing.T) {
			dir := writeSet(t, map[string][]string{"x.safetensors": {"a"}})
			os.WriteFile(filepath.Join(dir, IndexFile), []byte(tc.index), 0o644)
			_, err := Open(dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %s", err, tc.want)
			}
		})
	}
}

// build assembles a raw file from a header string and a data section.
func build(header string, data []byte) []byte {
	out := make([]byte, 8, 8+len(header)+len(data))
	binary.LittleEndian.PutUint64(out, uint64(len(header)))
	out = append(out, header...)
	return append(out, data...)
}

func TestMalformed(t *testing.T) {
	ok := `{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`
	huge := make([]byte, 8)
	binary.LittleEndian.PutUint64(huge, MaxHeaderSize+1)
	over := make([]byte, 8)
	binary.LittleEndian.PutUint64(over, math.MaxUint64)
	for _, tc := range []struct {
		name string
		file []byte
		want string
	}{
		{"empty", nil, "shorter than"},
		{"short", []byte{1, 2, 3}, "shorter than"},
		{"huge header", append(huge, make([]byte, 100)...), "exceeds the limit"},
		{"max uint64 header", over, "exceeds the limit"},
		{"header past end", build(ok, make([]byte, 8))[:20], "runs past the end"},
		{"not json", build("hello", nil), "not a JSON object"},
		{"json array", build("[1]", nil), "not a JSON object"},
		{"bad json", build(`{"a":`, nil), "not valid JSON"},
		{"trailing garbage", build(ok+"xx", make([]byte, 8)), "trailing bytes"},
		{"unknown dtype", build(`{"a":{"dtype":"F4","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 8)), "unsupported dtype"},
		{"missing dtype", build(`{"a":{"shape":[2],"data_offsets":[0,8]}}`, make([]byte, 8)), "missing dtype"},
		{"missing shape", build(`{"a":{"dtype":"F32","data_offsets":[0,8]}}`, make([]byte, 8)), "missing shape"},
		{"negative dim", build(`{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}`, make([]byte, 8)), "negative"},
		{"size mismatch", build(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, make([]byte, 8)), "needs 12 bytes"},
		{"dtype mismatch", build(`{"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 8)), "needs 4 bytes"},
		{"reversed offsets", build(`{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}`, make([]byte, 8)), "end before"},
		{"offsets out of range", build(ok, make([]byte, 4)), "run past"},
		{"truncated data", build(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}`, make([]byte, 12)), "truncated"},
		{"overlap", build(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, make([]byte, 8)), "overlap"},
		{"gap", build(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, make([]byte, 8)), "gap"},
		{"trailing data", build(ok, make([]byte, 12)), "cover 8"},
		{"duplicate", build(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, make([]byte, 8)), "duplicate"},
		{"overflowing shape", build(`{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}`, make([]byte, 8)), "too large"},
		{"huge offsets", build(`{"a":{"dtype":"U8","shape":[0],"data_offsets":[18446744073709551615,18446744073709551615]}}`, nil), "out of range"},
		{"bad metadata", build(`{"__metadata__":{"a":1}}`, nil), "__metadata__"},
		{"bad offsets", build(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}}`, make([]byte, 8)), "data_offsets"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.file)
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrMalformed mentioning %q", err, tc.want)
			}
			// The same bytes on disk fail OpenFile the same way, naming the file.
			path := filepath.Join(t.TempDir(), "bad.safetensors")
			os.WriteFile(path, tc.file, 0o644)
			if _, err := OpenFile(path); err == nil || !strings.Contains(err.Error(), "bad.safetensors") {
				t.Fatalf("OpenFile err = %v", err)
			}
		})
	}
	if _, err := Parse(build(ok, make([]byte, 8))); err != nil {
		t.Fatalf("valid file rejected: %v", err)
	}
}

// TestTruncatedGolden cuts the reference file at every length and requires an error.
func TestTruncatedGolden(t *testing.T) {
	ref, err := os.ReadFile("testdata/golden.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	for n := range len(ref) {
		if _, err := Parse(ref[:n]); err == nil {
			t.Fatalf("file cut to %d of %d bytes parsed", n, len(ref))
		}
	}
}

// FuzzParse feeds arbitrary bytes to Parse: it must return an error or a header whose
// every tensor lies inside the data, never panic.
func FuzzParse(f *testing.F) {
	for _, p := range []string{"testdata/golden.safetensors", "testdata/golden_expect.safetensors", "testdata/hfset/model-00002-of-00002.safetensors"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		if len(b) > 4096 {
			b = b[:4096]
		}
		f.Add(b)
	}
	f.Add(build(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 8)))
	f.Add(build(`{"__metadata__":{"k":"v"},"b":{"dtype":"F8_E4M3","shape":[2,2],"data_offsets":[0,4]}}`, make([]byte, 4)))
	f.Add(build(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, make([]byte, 8)))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := FromBytes("fuzz", data)
		if err != nil {
			return
		}
		for _, name := range file.Names() {
			tn, err := file.Tensor(name)
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(tn.Data)) != tn.Size() || int64(tn.NumElements())*int64(tn.DType.Size()) != tn.Size() {
				t.Fatalf("tensor %q: %d bytes for %v of %s", name, len(tn.Data), tn.Shape, tn.DType)
			}
			if tn.DType.IsFloat() && tn.NumElements() < 1<<16 {
				if _, err := tn.Float32(); err != nil {
					t.Fatal(err)
				}
			}
		}
	})
}

func TestWriterCheckpointResume(t *testing.T) {
	dir := t.TempDir()
	specs := []Spec{{"a", F32, []int{4}}, {"b", U8, []int{0}}, {"c", I8, []int{5}}, {"d", BF16, []int{3}}}
	data := map[string][]byte{"a": bytes.Repeat([]byte{1}, 16), "b": nil, "c": []byte{9, 8, 7, 6, 5}, "d": []byte{1, 2, 3, 4, 5, 6}}
	ref := filepath.Join(dir, "ref.safetensors")
	w, _ := Create(ref, specs, map[string]string{"k": "v"})
	for _, s := range specs {
		w.WriteTensor(s.Name, data[s.Name])
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	refSum := w.SHA256()

	path := filepath.Join(dir, "x.safetensors")
	w, _ = Create(path, specs, map[string]string{"k": "v"})
	w.WriteTensor("a", data["a"])
	st, err := w.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	w.WriteTensor("c", data["c"]) // lost: after the checkpoint
	w.Detach()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("detached writer produced the destination")
	}
	bad := st
	bad.Offset++
	if _, err := ResumeWriter(path, specs, map[string]string{"k": "v"}, bad); err == nil {
		t.Fatal("inconsistent state accepted")
	}
	if _, err := ResumeWriter(path, specs, map[string]string{"k": "other"}, st); err == nil {
		t.Fatal("resume with another header accepted")
	}
	w, err = ResumeWriter(path, specs, map[string]string{"k": "v"}, st)
	if err != nil {
		t.Fatal(err)
	}
	if w.Next() != "c" {
		t.Fatalf("next tensor %q, want c", w.Next())
	}
	w.WriteTensor("c", data["c"])
	w.WriteTensor("d", data["d"])
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(ref)
	b, _ := os.ReadFile(path)
	if !bytes.Equal(a, b) || w.SHA256() != refSum {
		t.Fatal("resumed file differs from the one-shot file")
	}
}
