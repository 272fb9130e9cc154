package sessions

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// The Redis store keeps each turn as one binary list element. JSON was tried first: decoding
// a 16-turn history (thousands of numbers, kilobytes of escaped text) took most of the
// per-turn CPU time; this format decodes several times faster and is smaller.
//
// Format (all integers are varints as encoding/binary writes them):
//
//	"T" 0x01                                magic and version
//	uvarint m; m × message:                 the messages, in order
//	    uvarint len, role bytes
//	    uvarint len, content bytes
//	    varint unix seconds, uvarint nanoseconds   Message.Time (UTC)
//	    varint tokens                              Message.Tokens
//	uvarint p; p × 4 bytes                  PromptIDs, little-endian int32
//	uvarint o; o × 4 bytes                  OutputIDs, little-endian int32
const turnMagic = "T\x01"

// encodeTurn returns the stored form of t.
func encodeTurn(t Turn) []byte {
	n := len(turnMagic) + 3*binary.MaxVarintLen64 + 4*(len(t.PromptIDs)+len(t.OutputIDs))
	for _, m := range t.Messages {
		n += len(m.Role) + len(m.Content) + 5*binary.MaxVarintLen64
	}
	b := make([]byte, 0, n)
	b = append(b, turnMagic...)
	b = binary.AppendUvarint(b, uint64(len(t.Messages)))
	for _, m := range t.Messages {
		b = binary.AppendUvarint(b, uint64(len(m.Role)))
		b = append(b, m.Role...)
		b = binary.AppendUvarint(b, uint64(len(m.Content)))
		b = append(b, m.Content...)
		b = binary.AppendVarint(b, m.Time.Unix())
		b = binary.AppendUvarint(b, uint64(m.Time.Nanosecond()))
		b = binary.AppendVarint(b, int64(m.Tokens))
	}
	for _, ids := range [][]int32{t.PromptIDs, t.OutputIDs} {
		b = binary.AppendUvarint(b, uint64(len(ids)))
		for _, v := range ids {
			b = binary.LittleEndian.AppendUint32(b, uint32(v))
		}
	}
	return b
}

// turnReader reads the stored form; the first error sticks.
type turnReader struct {
	b   []byte
	err error
}

var errShort = errors.New("truncated turn")

func (r *turnReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errShort
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *turnReader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errShort
		return 0
	}
	r.b = r.b[n:]
	return v
}

// count reads a length whose items take at least size bytes each, refusing lengths the
// remaining bytes cannot hold (so corrupt data never makes a huge allocation).
func (r *turnReader) count(size int) int {
	v := r.uvarint()
	if r.err == nil && v > uint64(len(r.b)/size) {
		r.err = fmt.Errorf("length %d exceeds the %d bytes left", v, len(r.b))
		return 0
	}
	return int(v)
}

func (r *turnReader) str() string {
	n := r.count(1)
	if r.err != nil {
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func (r *turnReader) ids() []int32 {
	n := r.count(4)
	if r.err != nil || n == 0 {
		return nil
	}
	ids := make([]int32, n)
	for i := range ids {
		ids[i] = int32(binary.LittleEndian.Uint32(r.b[4*i:]))
	}
	r.b = r.b[4*n:]
	return ids
}

// decodeTurn parses the stored form of a turn.
func decodeTurn(data []byte) (Turn, error) {
	if len(data) < len(turnMagic) || string(data[:len(turnMagic)]) != turnMagic {
		return Turn{}, errors.New("not a stored turn (bad magic)")
	}
	r := &turnReader{b: data[len(turnMagic):]}
	var t Turn
	if n := r.count(5); n > 0 { // a message takes at least 5 bytes
		t.Messages = make([]Message, n)
		for i := range t.Messages {
			m := &t.Messages[i]
			m.Role = r.str()
			m.Content = r.str()
			sec := r.varint()
			nsec := r.uvarint()
			if r.err == nil && nsec >= 1e9 {
				r.err = fmt.Errorf("nanoseconds %d out of range", nsec)
			}
			m.Time = time.Unix(sec, int64(nsec)).UTC()
			m.Tokens = int(r.varint())
		}
	}
	t.PromptIDs = r.ids()
	t.OutputIDs = r.ids()
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%d trailing bytes", len(r.b))
	}
	if r.err != nil {
		return Turn{}, r.err
	}
	return t, nil
}
