package tokenizer

import (
	"sync"
	"unicode/utf8"
)

// Character classes of the pre-tokenizer regexes, as Oniguruma (inside HF tokenizers) defines them.
// The bits match the masks in onigRanges (unicode_tables.go).
const (
	clsL  uint8 = 1 << iota // \p{L}
	clsM                    // \p{M}
	clsN                    // \p{N}
	clsP                    // \p{P}
	clsS                    // \p{S}
	clsWS                   // \s
	clsNL                   // '\r' or '\n' (not a Unicode class; set here to keep the scanner branch-free)
)

// classTable is a two-level lookup from code point to class mask: stage1[cp>>8] selects a
// 256-entry block of stage2. Built once from onigRanges; read-only afterwards.
type classTable struct {
	stage1 [0x110000 >> 8]uint16
	stage2 []uint8
}

var classes = sync.OnceValue(buildClasses)

func buildClasses() *classTable {
	full := make([]uint8, 0x110000)
	for _, r := range onigRanges {
		for c := r[0]; c <= r[1]; c++ {
			full[c] = uint8(r[2])
		}
	}
	full['\r'] |= clsNL
	full['\n'] |= clsNL
	t := &classTable{}
	seen := map[string]uint16{}
	for blk := 0; blk < len(t.stage1); blk++ {
		b := full[blk<<8 : (blk+1)<<8]
		idx, ok := seen[string(b)]
		if !ok {
			idx = uint16(len(t.stage2) >> 8)
			t.stage2 = append(t.stage2, b...)
			seen[string(b)] = idx
		}
		t.stage1[blk] = idx
	}
	return t
}

// of returns the class mask of a code point; 0 for anything outside the table.
func (t *classTable) of(r rune) uint8 {
	if uint32(r) >= 0x110000 {
		return 0
	}
	return t.stage2[int(t.stage1[r>>8])<<8|int(r&0xFF)]
}

// next decodes the character at s[i] and returns its class mask and byte length. Invalid UTF-8
// bytes are single-byte characters of class 0 (HF never sees them: Rust strings are valid UTF-8).
func (t *classTable) next(s string, i int) (uint8, int) {
	c := s[i]
	if c < utf8.RuneSelf {
		return t.stage2[c], 1 // block 0 is always stage2[0:256]
	}
	r, n := utf8.DecodeRuneInString(s[i:])
	if r == utf8.RuneError && n == 1 {
		return 0, 1
	}
	return t.of(r), n
}
