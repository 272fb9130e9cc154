package tokenizer

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
)

// The real tokenizer is loaded once per test binary. It must be there: `make test` runs
// scripts/fetch-tokenizer.sh first; a missing tokenizer is a failure, never a skip.
var (
	realOnce sync.Once
	realTok  *Tokenizer
	realErr  error
)

func environ() map[string]string {
	return map[string]string{"HOME": os.Getenv("HOME"), "DSGATE_CACHE": os.Getenv("DSGATE_CACHE")}
}

func loadReal(tb testing.TB) *Tokenizer {
	tb.Helper()
	realOnce.Do(func() { realTok, realErr = Load(DefaultDir(environ())) })
	if realErr != nil {
		tb.Fatalf("the real DeepSeek-V3 tokenizer is needed (run scripts/fetch-tokenizer.sh, or make test): %v", realErr)
	}
	return realTok
}

// readJSONL decodes every line of a gzipped JSON-lines golden file into a new T.
func readJSONL[T any](tb testing.TB, name string) []T {
	tb.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		tb.Fatalf("golden file missing (core/tokenizer/testdata/gen_golden.py makes it): %v", err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		tb.Fatalf("%s: %v", name, err)
	}
	sc := bufio.NewScanner(zr)
	sc.Buffer(make([]byte, 1<<20), 1<<26)
	var out []T
	for sc.Scan() {
		var v T
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			tb.Fatalf("%s line %d: %v", name, len(out)+1, err)
		}
		out = append(out, v)
	}
	if err := sc.Err(); err != nil {
		tb.Fatalf("%s: %v", name, err)
	}
	if len(out) == 0 {
		tb.Fatalf("%s is empty", name)
	}
	return out
}

type corpusSample struct {
	Name string  `json:"name"`
	Text string  `json:"text"`
	IDs  []int32 `json:"ids"`
}

func loadCorpus(tb testing.TB) []corpusSample { return readJSONL[corpusSample](tb, "corpus.jsonl.gz") }

// firstDiff describes where two id lists part.
func firstDiff(t *Tokenizer, got, want []int32) string {
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	lo := max(0, i-3)
	show := func(ids []int32) string {
		hi := min(len(ids), i+4)
		if lo >= hi {
			return "[]"
		}
		b, _ := json.Marshal(ids[lo:hi])
		return string(b) + " " + jsonQuote(t.Decode(ids[lo:hi], false))
	}
	return "at id " + itoa(i) + ": got " + show(got) + ", want " + show(want)
}

func jsonQuote(s string) string { b, _ := json.Marshal(s); return string(b) }
func itoa(i int) string         { b, _ := json.Marshal(i); return string(b) }

// TestCorpusGolden: every corpus sample encodes to exactly the ids HF tokenizers produced.
func TestCorpusGolden(t *testing.T) {
	tk := loadReal(t)
	samples := loadCorpus(t)
	total, bad := 0, 0
	for i, s := range samples {
		total += len(s.Text)
		got := tk.Encode(s.Text, false)
		if !slices.Equal(got, s.IDs) {
			bad++
			if bad <= 15 {
				t.Errorf("sample %d (%s) %s: %s", i, s.Name, jsonQuote(truncate(s.Text, 120)), firstDiff(tk, got, s.IDs))
			}
		}
	}
	if total < 1<<20 {
		t.Errorf("corpus is %d bytes, want at least 1 MiB", total)
	}
	if bad > 0 {
		t.Errorf("%d of %d samples differ", bad, len(samples))
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
