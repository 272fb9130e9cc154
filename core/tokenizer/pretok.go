package tokenizer

import "unicode/utf8"

// The pre-tokenizer of spec §2.2 step 3, hand-written. Each Split step is applied to every
// piece the previous step produced; step 4 (ByteLevel) is folded into the BPE, which works on
// bytes. See RATIONALE.md for how each regex alternative maps to the code below.

// pieceFunc receives one pre-token (a non-empty substring of the input).
type pieceFunc func(piece string)

// splitDigits is step 1: `\p{N}{1,3}`, Isolated. Runs of \p{N} characters are cut into
// chunks of at most three characters; the text between runs is passed on as it is.
func splitDigits(cls *classTable, s string, emit pieceFunc) {
	gap := 0
	i := 0
	for i < len(s) {
		f, n := cls.next(s, i)
		if f&clsN == 0 {
			i += n
			continue
		}
		if gap < i {
			splitCJK(cls, s[gap:i], emit)
		}
		// Up to three \p{N} characters.
		j := i + n
		for k := 1; k < 3 && j < len(s); k++ {
			f2, n2 := cls.next(s, j)
			if f2&clsN == 0 {
				break
			}
			j += n2
		}
		splitCJK(cls, s[i:j], emit)
		i = j
		gap = j
	}
	if gap < len(s) {
		splitCJK(cls, s[gap:], emit)
	}
}

// isCJK reports whether r is in step 2's class [一-龥぀-ゟ゠-ヿ].
func isCJK(r rune) bool {
	return (r >= 0x4E00 && r <= 0x9FA5) || (r >= 0x3040 && r <= 0x30FF)
}

// splitCJK is step 2: `[\x{4E00}-\x{9FA5}\x{3040}-\x{309F}\x{30A0}-\x{30FF}]+`, Isolated.
func splitCJK(cls *classTable, s string, emit pieceFunc) {
	// Fast path: every character of the class is 3 bytes long with a lead byte 0xE3..0xE9.
	has := false
	for k := 0; k < len(s); k++ {
		if c := s[k]; c >= 0xE3 && c <= 0xE9 {
			has = true
			break
		}
	}
	if !has {
		splitWords(cls, s, emit)
		return
	}
	gap := 0
	i := 0
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		if !isCJK(r) {
			i += n
			continue
		}
		j := i + n
		for j < len(s) {
			r2, n2 := utf8.DecodeRuneInString(s[j:])
			if !isCJK(r2) {
				break
			}
			j += n2
		}
		if gap < i {
			splitWords(cls, s[gap:i], emit)
		}
		splitWords(cls, s[i:j], emit)
		i = j
		gap = j
	}
	if gap < len(s) {
		splitWords(cls, s[gap:], emit)
	}
}

// asciiPunct is the class [!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~] of the first alternative.
var asciiPunct = func() (t [128]bool) {
	for _, c := range "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~" {
		t[c] = true
	}
	return t
}()

func isASCIILetter(c byte) bool { return (c|0x20) >= 'a' && (c|0x20) <= 'z' }

// splitWords is step 3, the six-way alternation, Isolated; first matching alternative wins at
// each position, and a position where none matches joins the text between matches.
func splitWords(cls *classTable, s string, emit pieceFunc) {
	gap := 0
	i := 0
	for i < len(s) {
		end := matchWord(cls, s, i)
		if end < 0 {
			_, n := cls.next(s, i)
			i += n
			continue
		}
		if gap < i {
			emit(s[gap:i])
		}
		emit(s[i:end])
		i = end
		gap = end
	}
	if gap < len(s) {
		emit(s[gap:])
	}
}

// runOf returns the end of the run of characters, from i, whose class mask intersects mask.
func runOf(cls *classTable, s string, i int, mask uint8) int {
	for i < len(s) {
		c := s[i]
		if c < utf8.RuneSelf {
			if cls.stage2[c]&mask == 0 {
				return i
			}
			i++
			continue
		}
		f, n := cls.next(s, i)
		if f&mask == 0 {
			return i
		}
		i += n
	}
	return i
}

// matchWord returns the end of the regex match that starts exactly at s[i], or -1.
func matchWord(cls *classTable, s string, i int) int {
	c := s[i]
	// 1. [!"#...~][A-Za-z]+
	if c < utf8.RuneSelf && asciiPunct[c] && i+1 < len(s) && isASCIILetter(s[i+1]) {
		j := i + 2
		for j < len(s) && isASCIILetter(s[j]) {
			j++
		}
		return j
	}
	f, n := cls.next(s, i)
	// 2. [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+
	if f&clsL != 0 {
		return runOf(cls, s, i+n, clsL|clsM)
	}
	if f&(clsNL|clsP|clsS) == 0 {
		// The optional character is taken; a letter/mark run must follow. If none follows and
		// the character is itself a mark, the engine backtracks and matches the mark alone.
		if j := runOf(cls, s, i+n, clsL|clsM); j > i+n || f&clsM != 0 {
			return j
		}
	}
	// 3. ` ?[\p{P}\p{S}]+[\r\n]*`
	if c == ' ' && i+1 < len(s) {
		if f2, n2 := cls.next(s, i+1); f2&(clsP|clsS) != 0 {
			j := runOf(cls, s, i+1+n2, clsP|clsS)
			return runOf(cls, s, j, clsNL)
		}
	}
	if f&(clsP|clsS) != 0 {
		j := runOf(cls, s, i+n, clsP|clsS)
		return runOf(cls, s, j, clsNL)
	}
	if f&clsWS == 0 {
		return -1
	}
	// Whitespace: the maximal run W = s[i:w].
	w := runOf(cls, s, i+n, clsWS)
	// 4. \s*[\r\n]+ : matches up to and including the last CR/LF of W (CR and LF are ASCII, so
	// a byte search cannot hit the middle of a multi-byte character).
	for k := w - 1; k >= i; k-- {
		if s[k] == '\r' || s[k] == '\n' {
			return k + 1
		}
	}
	// 5. \s+(?!\S) : all of W at the end of the piece; otherwise W minus its last character,
	// when that leaves at least one character.
	if w == len(s) {
		return w
	}
	_, last := utf8.DecodeLastRuneInString(s[i:w])
	if w-last > i {
		return w - last
	}
	// 6. \s+
	return w
}
