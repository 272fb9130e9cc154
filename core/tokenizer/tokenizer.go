package tokenizer

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"
)

// Tokenizer is a loaded DeepSeek-V3 tokenizer. It is immutable after Load except for an internal,
// bounded word cache, and safe for concurrent use by any number of goroutines.
type Tokenizer struct {
	vocab   map[string]int32 // token string (byte-level alphabet) -> id, BPE vocabulary and added tokens
	idBytes []string         // id -> the bytes it decodes to; "" for ids that have no token
	idValid []bool           // id -> idBytes[id] is complete, valid UTF-8 (the stream decoder's fast path)
	special []bool           // id -> special added token (dropped by skipSpecial)
	byteID  [256]int32       // byte -> id of its one-character byte-level token
	pairs   *pairTable       // BPE merges
	added   [2]*trie         // added tokens: [0] non-normalized, [1] normalized (HF extracts in this order)
	cls     *classTable

	bos, eos     int32
	bosText      string
	eosText      string
	chatTemplate string

	cache   *wordCache
	noCache bool // benchmarks only: bypass the cache
}

// DefaultDir returns the folder scripts/fetch-tokenizer.sh fills: $DSGATE_CACHE/tokenizer/deepseek_v3,
// with DSGATE_CACHE defaulting to $HOME/.cache/dsgate. environ is the process environment as a map.
func DefaultDir(environ map[string]string) string {
	cache := environ["DSGATE_CACHE"]
	if cache == "" {
		home := environ["HOME"]
		if home == "" {
			home, _ = os.UserHomeDir()
		}
		cache = filepath.Join(home, ".cache", "dsgate")
	}
	return filepath.Join(cache, "tokenizer", "deepseek_v3")
}

// ErrFormat is wrapped by Load's errors about a tokenizer file this package cannot use.
var ErrFormat = errors.New("unsupported tokenizer format")

type addedTokenJSON struct {
	ID         int32  `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

type tokenizerJSON struct {
	AddedTokens []addedTokenJSON `json:"added_tokens"`
	Normalizer  *struct {
		Type        string            `json:"type"`
		Normalizers []json.RawMessage `json:"normalizers"`
	} `json:"normalizer"`
	Model struct {
		Type                    string           `json:"type"`
		Vocab                   map[string]int32 `json:"vocab"`
		Merges                  json.RawMessage  `json:"merges"`
		ByteFallback            bool             `json:"byte_fallback"`
		ContinuingSubwordPrefix *string          `json:"continuing_subword_prefix"`
		EndOfWordSuffix         *string          `json:"end_of_word_suffix"`
	} `json:"model"`
}

// tokenText reads bos_token/eos_token of tokenizer_config.json: a string or an AddedToken object.
type tokenText string

func (t *tokenText) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*t = tokenText(s)
		return nil
	}
	var o struct {
		Content string `json:"content"`
	}
	if err := json.Unmarshal(b, &o); err != nil {
		return err
	}
	*t = tokenText(o.Content)
	return nil
}

type configJSON struct {
	BOSToken     *tokenText `json:"bos_token"`
	EOSToken     *tokenText `json:"eos_token"`
	ChatTemplate string     `json:"chat_template"`
}

// Load reads dir/tokenizer.json and dir/tokenizer_config.json (the layout of a Hugging Face
// checkpoint folder and of DefaultDir) and builds the tokenizer of spec §2.
func Load(dir string) (*Tokenizer, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return nil, fmt.Errorf("load tokenizer: %w (scripts/fetch-tokenizer.sh fetches it)", err)
	}
	var tj tokenizerJSON
	if err := json.Unmarshal(raw, &tj); err != nil {
		return nil, fmt.Errorf("load tokenizer: parse %s: %w", filepath.Join(dir, "tokenizer.json"), err)
	}
	craw, err := os.ReadFile(filepath.Join(dir, "tokenizer_config.json"))
	if err != nil {
		return nil, fmt.Errorf("load tokenizer: %w", err)
	}
	var cj configJSON
	if err := json.Unmarshal(craw, &cj); err != nil {
		return nil, fmt.Errorf("load tokenizer: parse %s: %w", filepath.Join(dir, "tokenizer_config.json"), err)
	}
	t, err := build(&tj, &cj)
	if err != nil {
		return nil, fmt.Errorf("load tokenizer from %s: %w", dir, err)
	}
	return t, nil
}

func build(tj *tokenizerJSON, cj *configJSON) (*Tokenizer, error) {
	m := &tj.Model
	if m.Type != "BPE" {
		return nil, fmt.Errorf("%w: model type %q, want BPE", ErrFormat, m.Type)
	}
	if m.ByteFallback || (m.ContinuingSubwordPrefix != nil && *m.ContinuingSubwordPrefix != "") ||
		(m.EndOfWordSuffix != nil && *m.EndOfWordSuffix != "") {
		return nil, fmt.Errorf("%w: BPE options byte_fallback/continuing_subword_prefix/end_of_word_suffix", ErrFormat)
	}
	if tj.Normalizer != nil && (tj.Normalizer.Type != "Sequence" || len(tj.Normalizer.Normalizers) != 0) {
		return nil, fmt.Errorf("%w: normalizer %q (only the empty Sequence is supported)", ErrFormat, tj.Normalizer.Type)
	}
	t := &Tokenizer{vocab: make(map[string]int32, len(m.Vocab)+len(tj.AddedTokens)), cls: classes()}
	maxID := int32(-1)
	for tok, id := range m.Vocab {
		if id < 0 {
			return nil, fmt.Errorf("%w: negative id %d", ErrFormat, id)
		}
		t.vocab[tok] = id
		maxID = max(maxID, id)
	}
	for _, a := range tj.AddedTokens {
		if a.ID < 0 || a.Content == "" {
			return nil, fmt.Errorf("%w: added token %q id %d", ErrFormat, a.Content, a.ID)
		}
		if a.LStrip || a.RStrip || a.SingleWord {
			return nil, fmt.Errorf("%w: added token %q uses lstrip/rstrip/single_word", ErrFormat, a.Content)
		}
		maxID = max(maxID, a.ID)
	}
	t.idBytes = make([]string, maxID+1)
	t.idValid = make([]bool, maxID+1)
	t.special = make([]bool, maxID+1)
	dec := byteDecoder()
	for tok, id := range m.Vocab {
		t.idBytes[id] = string(tokenBytes(tok, dec))
	}
	t.added[0], t.added[1] = newTrie(), newTrie()
	for _, a := range tj.AddedTokens {
		t.vocab[a.Content] = a.ID
		t.idBytes[a.ID] = string(tokenBytes(a.Content, dec))
		t.special[a.ID] = a.Special
		k := 0
		if a.Normalized {
			k = 1
		}
		t.added[k].add(a.Content, a.ID)
	}
	for id, b := range t.idBytes {
		t.idValid[id] = utf8.ValidString(b)
	}
	enc := byteEncoder()
	for b := 0; b < 256; b++ {
		id, ok := m.Vocab[string(enc[b])]
		if !ok {
			return nil, fmt.Errorf("%w: byte 0x%02x (%q) is not in the vocabulary", ErrFormat, b, enc[b])
		}
		t.byteID[b] = id
	}
	merges, err := parseMerges(m.Merges)
	if err != nil {
		return nil, err
	}
	t.pairs = newPairTable(len(merges))
	for rank, mg := range merges {
		a, b := mg[0], mg[1]
		ia, ok1 := m.Vocab[a]
		ib, ok2 := m.Vocab[b]
		im, ok3 := m.Vocab[a+b]
		if !ok1 || !ok2 || !ok3 {
			return nil, fmt.Errorf("%w: merge %d (%q %q) uses a token outside the vocabulary", ErrFormat, rank, a, b)
		}
		t.pairs.put(ia, ib, uint32(rank), im)
	}
	if cj.BOSToken == nil || cj.EOSToken == nil {
		return nil, fmt.Errorf("%w: tokenizer_config.json lacks bos_token or eos_token", ErrFormat)
	}
	var ok bool
	t.bosText, t.eosText = string(*cj.BOSToken), string(*cj.EOSToken)
	if t.bos, ok = t.vocab[t.bosText]; !ok {
		return nil, fmt.Errorf("%w: bos_token %q is not a token", ErrFormat, t.bosText)
	}
	if t.eos, ok = t.vocab[t.eosText]; !ok {
		return nil, fmt.Errorf("%w: eos_token %q is not a token", ErrFormat, t.eosText)
	}
	t.chatTemplate = cj.ChatTemplate
	t.cache = &wordCache{m: make(map[string][]int32)}
	return t, nil
}

// parseMerges reads the merges list: ["a b", ...] (older files) or [["a", "b"], ...] (newer files).
func parseMerges(raw json.RawMessage) ([][2]string, error) {
	var flat []string
	if err := json.Unmarshal(raw, &flat); err == nil {
		out := make([][2]string, len(flat))
		for i, s := range flat {
			a, b, ok := strings.Cut(s, " ")
			if !ok {
				return nil, fmt.Errorf("%w: merge %d %q has no space", ErrFormat, i, s)
			}
			out[i] = [2]string{a, b}
		}
		return out, nil
	}
	var pairs [][2]string
	if err := json.Unmarshal(raw, &pairs); err != nil {
		return nil, fmt.Errorf("%w: merges: %v", ErrFormat, err)
	}
	return pairs, nil
}

// byteEncoder is GPT-2's bytes_to_unicode table (spec §2.2 step 3.4): printable bytes map to
// themselves, the other 68 bytes to U+0100... in increasing byte order.
func byteEncoder() [256]rune {
	var enc [256]rune
	n := rune(0)
	for b := 0; b < 256; b++ {
		if (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255) {
			enc[b] = rune(b)
		} else {
			enc[b] = 256 + n
			n++
		}
	}
	return enc
}

func byteDecoder() map[rune]byte {
	enc := byteEncoder()
	dec := make(map[rune]byte, 256)
	for b, r := range enc {
		dec[r] = byte(b)
	}
	return dec
}

// tokenBytes is what HF's ByteLevel decoder makes of one token: every character mapped back to
// its byte when all of them are in the byte-level alphabet, else the token's own UTF-8 bytes.
func tokenBytes(tok string, dec map[rune]byte) []byte {
	out := make([]byte, 0, len(tok))
	for _, r := range tok {
		b, ok := dec[r]
		if !ok {
			return []byte(tok)
		}
		out = append(out, b)
	}
	return out
}

// BOS returns the id of the beginning-of-sentence token (0 for DeepSeek-V3).
func (t *Tokenizer) BOS() int32 { return t.bos }

// EOS returns the id of the end-of-sentence token (1 for DeepSeek-V3).
func (t *Tokenizer) EOS() int32 { return t.eos }

// VocabSize returns one more than the highest id the tokenizer can produce (128815 for DeepSeek-V3).
func (t *Tokenizer) VocabSize() int { return len(t.idBytes) }

// TokenID returns the id of a token given as it is spelled in tokenizer.json: an added token's
// content (e.g. "<｜User｜>") or a vocabulary entry in the byte-level alphabet (e.g. "Ġthe").
func (t *Tokenizer) TokenID(tok string) (int32, bool) {
	id, ok := t.vocab[tok]
	return id, ok
}

// IsSpecial reports whether id is a special added token (one that Decode drops with skipSpecial).
func (t *Tokenizer) IsSpecial(id int32) bool {
	return id >= 0 && int(id) < len(t.special) && t.special[id]
}

// Encode returns the ids of text (spec §2.2): added tokens written in the text become their ids,
// the rest is pre-tokenized and BPE-encoded; with addBOS the BOS id comes first (what
// transformers' tokenizer.encode does with add_special_tokens=True). Invalid UTF-8 is encoded
// byte by byte, so Decode returns those bytes as U+FFFD.
func (t *Tokenizer) Encode(text string, addBOS bool) []int32 {
	out := make([]int32, 0, len(text)/3+2)
	if addBOS {
		out = append(out, t.bos)
	}
	emit := func(piece string) { out = t.encodePiece(piece, out) }
	t.added[0].split(text, func(seg string, id int32) {
		if id >= 0 {
			out = append(out, id)
			return
		}
		t.added[1].split(seg, func(seg string, id int32) {
			if id >= 0 {
				out = append(out, id)
				return
			}
			splitDigits(t.cls, seg, emit)
		})
	})
	return out
}

// encodePiece appends the BPE ids of one pre-token, through the word cache.
func (t *Tokenizer) encodePiece(piece string, out []int32) []int32 {
	if len(piece) == 1 {
		return append(out, t.byteID[piece[0]])
	}
	if len(piece) > cacheMaxWord || t.noCache {
		return t.bpe(piece, out)
	}
	c := t.cache
	c.mu.RLock()
	ids, hit := c.m[piece]
	full := len(c.m) >= cacheMaxEntries
	c.mu.RUnlock()
	if hit {
		return append(out, ids...)
	}
	start := len(out)
	out = t.bpe(piece, out)
	if !full {
		ids := append([]int32(nil), out[start:]...)
		c.mu.Lock()
		if len(c.m) < cacheMaxEntries {
			c.m[strings.Clone(piece)] = ids
		}
		c.mu.Unlock()
	}
	return out
}

// trie finds added tokens in text: leftmost-longest, like HF's AddedVocabulary (Aho-Corasick,
// LeftmostLongest). Read-only after Load.
type trie struct {
	first [256]bool        // bytes that start some token
	next  map[uint64]int32 // node<<8|byte -> child node
	id    map[int32]int32  // node -> token id, for nodes that end a token
	nodes int32
}

func newTrie() *trie { return &trie{next: map[uint64]int32{}, id: map[int32]int32{}, nodes: 1} }

func (tr *trie) add(tok string, id int32) {
	tr.first[tok[0]] = true
	node := int32(0)
	for i := 0; i < len(tok); i++ {
		k := uint64(node)<<8 | uint64(tok[i])
		child, ok := tr.next[k]
		if !ok {
			child = tr.nodes
			tr.nodes++
			tr.next[k] = child
		}
		node = child
	}
	tr.id[node] = id
}

// longest returns the length and id of the longest token that starts at s[0], or 0, -1.
func (tr *trie) longest(s string) (int, int32) {
	node := int32(0)
	bestLen, bestID := 0, int32(-1)
	for i := 0; i < len(s); i++ {
		child, ok := tr.next[uint64(node)<<8|uint64(s[i])]
		if !ok {
			break
		}
		node = child
		if id, ok := tr.id[node]; ok {
			bestLen, bestID = i+1, id
		}
	}
	return bestLen, bestID
}

// split calls f for every added token found in s (with its id) and for every stretch of text
// between them (with id -1), in order.
func (tr *trie) split(s string, f func(seg string, id int32)) {
	if len(tr.id) == 0 {
		if s != "" {
			f(s, -1)
		}
		return
	}
	gap := 0
	for i := 0; i < len(s); i++ {
		if !tr.first[s[i]] {
			continue
		}
		n, id := tr.longest(s[i:])
		if n == 0 {
			continue
		}
		if gap < i {
			f(s[gap:i], -1)
		}
		f(s[i:i+n], id)
		gap = i + n
		i += n - 1
	}
	if gap < len(s) {
		f(s[gap:], -1)
	}
}
