package tokenizer

import "unicode/utf8"

// Decode returns the text of ids (spec §2.2, decoding): each token's bytes (byte-level tokens
// mapped back to bytes, added tokens as written), concatenated, then read as UTF-8 with every
// invalid sequence replaced by U+FFFD exactly as Rust's String::from_utf8_lossy does (one
// U+FFFD per maximal invalid subpart). With skipSpecial, special added tokens are dropped
// (the non-special ones, e.g. <｜User｜>, stay). Ids without a token are ignored, as HF does.
func (t *Tokenizer) Decode(ids []int32, skipSpecial bool) string {
	buf := make([]byte, 0, len(ids)*4)
	for _, id := range ids {
		buf = t.appendToken(buf, id, skipSpecial)
	}
	if utf8.Valid(buf) {
		return string(buf)
	}
	out, _ := appendLossy(nil, buf, true)
	return string(out)
}

func (t *Tokenizer) appendToken(buf []byte, id int32, skipSpecial bool) []byte {
	if id < 0 || int(id) >= len(t.idBytes) || (skipSpecial && t.special[id]) {
		return buf
	}
	return append(buf, t.idBytes[id]...)
}

// StreamDecoder turns ids, pushed one at a time, into text deltas for streaming. A delta never
// ends inside a UTF-8 character: bytes that may still complete a character are held back until
// the next Push or Flush. The deltas of all Push calls plus Flush concatenate to exactly
// Decode(ids, skipSpecial). Not safe for concurrent use; one per sequence.
type StreamDecoder struct {
	t           *Tokenizer
	skipSpecial bool
	pending     []byte // bytes not yet emitted: at most one incomplete UTF-8 prefix (<= 3 bytes)
}

// NewStreamDecoder returns an incremental decoder with the skipSpecial rule of Decode.
func (t *Tokenizer) NewStreamDecoder(skipSpecial bool) *StreamDecoder {
	return &StreamDecoder{t: t, skipSpecial: skipSpecial, pending: make([]byte, 0, 16)}
}

// Push adds one id and returns the text that became final ("" when the id only added bytes of
// an unfinished character, or was dropped).
func (d *StreamDecoder) Push(id int32) string {
	t := d.t
	if len(d.pending) == 0 && id >= 0 && int(id) < len(t.idValid) && t.idValid[id] {
		if d.skipSpecial && t.special[id] {
			return ""
		}
		return t.idBytes[id] // whole characters only: no copy, no allocation
	}
	d.pending = d.t.appendToken(d.pending, id, d.skipSpecial)
	if len(d.pending) == 0 {
		return ""
	}
	out, rest := appendLossy(nil, d.pending, false)
	d.pending = append(d.pending[:0], d.pending[len(d.pending)-rest:]...)
	return string(out)
}

// Flush returns the bytes still held back (an unfinished character at the end of the stream
// becomes U+FFFD) and resets the decoder for reuse.
func (d *StreamDecoder) Flush() string {
	if len(d.pending) == 0 {
		return ""
	}
	out, _ := appendLossy(nil, d.pending, true)
	d.pending = d.pending[:0]
	return string(out)
}

// appendLossy appends the UTF-8 reading of b to dst, with one U+FFFD per maximal invalid
// subpart (the Unicode "substitution of maximal subparts" practice that Rust follows). When
// final is false, a truncated but so far valid sequence at the end of b is not consumed; rest is
// its length.
func appendLossy(dst, b []byte, final bool) (out []byte, rest int) {
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			dst = append(dst, c)
			i++
			continue
		}
		need, lo, hi := seqInfo(c)
		if need == 0 {
			dst = append(dst, "\uFFFD"...)
			i++
			continue
		}
		// Walk the continuation bytes while they are valid.
		j := i + 1
		for k := 0; k < need; k++ {
			if j >= len(b) {
				if !final {
					return dst, len(b) - i
				}
				break
			}
			l, h := byte(0x80), byte(0xBF)
			if k == 0 {
				l, h = lo, hi
			}
			if b[j] < l || b[j] > h {
				break
			}
			j++
		}
		if j-i == need+1 {
			dst = append(dst, b[i:j]...)
		} else {
			dst = append(dst, "\uFFFD"...)
		}
		i = j
	}
	return dst, 0
}

// seqInfo returns, for a non-ASCII lead byte, how many continuation bytes follow and the valid
// range of the first one; need is 0 for bytes that cannot start a character.
func seqInfo(c byte) (need int, lo, hi byte) {
	switch {
	case c >= 0xC2 && c <= 0xDF:
		return 1, 0x80, 0xBF
	case c == 0xE0:
		return 2, 0xA0, 0xBF
	case c >= 0xE1 && c <= 0xEC, c == 0xEE, c == 0xEF:
		return 2, 0x80, 0xBF
	case c == 0xED:
		return 2, 0x80, 0x9F
	case c == 0xF0:
		return 3, 0x90, 0xBF
	case c >= 0xF1 && c <= 0xF3:
		return 3, 0x80, 0xBF
	case c == 0xF4:
		return 3, 0x80, 0x8F
	}
	return 0, 0, 0
}
