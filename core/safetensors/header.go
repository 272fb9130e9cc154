package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"sort"
)

// MaxHeaderSize is the largest JSON header accepted (the reference Rust crate's limit).
const MaxHeaderSize = 100_000_000

// ErrMalformed is wrapped by every error about a malformed file; test with errors.Is.
var ErrMalformed = errors.New("malformed safetensors file")

// TensorInfo describes one tensor of a file: its name, type, shape and the byte range
// of its data relative to the start of the data section.
type TensorInfo struct {
	Name  string
	DType DType
	Shape []int
	Begin int64 // offset of the first byte in the data section
	End   int64 // offset one past the last byte
}

// NumElements returns the product of the shape (1 for a scalar).
func (t TensorInfo) NumElements() int {
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Size returns the data size in bytes.
func (t TensorInfo) Size() int64 { return t.End - t.Begin }

// Header is a parsed safetensors header.
type Header struct {
	Metadata map[string]string
	Tensors  []TensorInfo // sorted by Begin
	DataOff  int64        // offset of the data section in the file (8 + header length)
	byName   map[string]int
}

// Lookup returns the tensor named name.
func (h *Header) Lookup(name string) (TensorInfo, bool) {
	i, ok := h.byName[name]
	if !ok {
		return TensorInfo{}, false
	}
	return h.Tensors[i], true
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// ReadHeaderSize decodes the 8-byte little-endian header length that starts a file and
// checks it against MaxHeaderSize and the file size.
func ReadHeaderSize(prefix []byte, fileSize int64) (int64, error) {
	if len(prefix) < 8 || fileSize < 8 {
		return 0, malformed("file is %d bytes, shorter than the 8-byte header length", fileSize)
	}
	n := binary.LittleEndian.Uint64(prefix)
	if n > MaxHeaderSize {
		return 0, malformed("header length %d exceeds the limit of %d bytes", n, MaxHeaderSize)
	}
	if int64(n) > fileSize-8 {
		return 0, malformed("header length %d runs past the end of the %d-byte file (truncated?)", n, fileSize)
	}
	return int64(n), nil
}

// Parse parses and validates the header of a complete safetensors file held in data.
// It never reads outside data and never panics.
func Parse(data []byte) (*Header, error) {
	n, err := ReadHeaderSize(data, int64(len(data)))
	if err != nil {
		return nil, err
	}
	h, err := ParseHeader(data[8:8+n], int64(len(data))-8-n)
	if err != nil {
		return nil, err
	}
	h.DataOff = 8 + n
	return h, nil
}

type rawEntry struct {
	DType       *string  `json:"dtype"`
	Shape       []int64  `json:"shape"`
	DataOffsets []uint64 `json:"data_offsets"`
}

// ParseHeader validates a JSON header given the size of the data section that follows
// it: every dtype known, shapes non-negative, each tensor's byte size equal to its
// element count times the element size, offsets inside the data section, tensors
// neither overlapping nor leaving gaps, and the data section fully used.
func ParseHeader(js []byte, dataSize int64) (*Header, error) {
	trimmed := bytes.TrimLeft(js, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, malformed("header is not a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber()
	if _, err := dec.Token(); err != nil {
		return nil, malformed("header is not valid JSON: %v", err)
	}
	h := &Header{byName: map[string]int{}}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, malformed("header is not valid JSON: %v", err)
		}
		name, ok := tok.(string)
		if !ok {
			return nil, malformed("header is not valid JSON: key %v", tok)
		}
		if seen[name] {
			return nil, malformed("duplicate key %q in header", name)
		}
		seen[name] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, malformed("header is not valid JSON at %q: %v", name, err)
		}
		if name == "__metadata__" {
			if err := json.Unmarshal(raw, &h.Metadata); err != nil {
				return nil, malformed("__metadata__ must map strings to strings: %v", err)
			}
			continue
		}
		ti, err := parseEntry(name, raw)
		if err != nil {
			return nil, err
		}
		h.Tensors = append(h.Tensors, ti)
	}
	if _, err := dec.Token(); err != nil {
		return nil, malformed("header is not valid JSON: %v", err)
	}
	if rest := bytes.TrimRight(js[dec.InputOffset():], " \t\r\n\x00"); len(rest) != 0 {
		return nil, malformed("trailing bytes after the header JSON")
	}
	sort.SliceStable(h.Tensors, func(i, j int) bool {
		a, b := h.Tensors[i], h.Tensors[j]
		if a.Begin != b.Begin {
			return a.Begin < b.Begin
		}
		return a.End < b.End
	})
	var pos int64
	for i, t := range h.Tensors {
		if t.End > dataSize {
			return nil, malformed("tensor %q: data_offsets [%d, %d] run past the %d-byte data section (truncated file?)", t.Name, t.Begin, t.End, dataSize)
		}
		if t.Begin < pos {
			return nil, malformed("tensor %q: data_offsets [%d, %d] overlap the previous tensor (ends at %d)", t.Name, t.Begin, t.End, pos)
		}
		if t.Begin > pos {
			return nil, malformed("tensor %q: gap in the data section before offset %d (previous tensor ends at %d)", t.Name, t.Begin, pos)
		}
		pos = t.End
		h.byName[t.Name] = i
	}
	if pos != dataSize {
		return nil, malformed("data section is %d bytes but the tensors cover %d", dataSize, pos)
	}
	return h, nil
}

func parseEntry(name string, raw json.RawMessage) (TensorInfo, error) {
	var e rawEntry
	if err := json.Unmarshal(raw, &e); err != nil {
		return TensorInfo{}, malformed("tensor %q: bad entry: %v", name, err)
	}
	if e.DType == nil {
		return TensorInfo{}, malformed("tensor %q: missing dtype", name)
	}
	dt := DType(*e.DType)
	if err := checkDType(dt); err != nil {
		return TensorInfo{}, fmt.Errorf("%w: tensor %q: %v", ErrMalformed, name, err)
	}
	if e.Shape == nil {
		return TensorInfo{}, malformed("tensor %q: missing shape", name)
	}
	if len(e.DataOffsets) != 2 {
		return TensorInfo{}, malformed("tensor %q: data_offsets must be [begin, end]", name)
	}
	b, en := e.DataOffsets[0], e.DataOffsets[1]
	if b > en {
		return TensorInfo{}, malformed("tensor %q: data_offsets [%d, %d] end before they begin", name, b, en)
	}
	if en > math.MaxInt64/2 {
		return TensorInfo{}, malformed("tensor %q: data_offsets [%d, %d] out of range", name, b, en)
	}
	shape := make([]int, len(e.Shape))
	size := uint64(dt.Size())
	for i, d := range e.Shape {
		if d < 0 {
			return TensorInfo{}, malformed("tensor %q: negative dimension %d in shape %v", name, d, e.Shape)
		}
		hi, lo := bits.Mul64(size, uint64(d))
		if hi != 0 || lo > math.MaxInt64/2 {
			return TensorInfo{}, malformed("tensor %q: shape %v is too large", name, e.Shape)
		}
		size = lo
		shape[i] = int(d)
	}
	if size != en-b {
		return TensorInfo{}, malformed("tensor %q: shape %v of %s needs %d bytes but data_offsets [%d, %d] hold %d", name, e.Shape, dt, size, b, en, en-b)
	}
	return TensorInfo{Name: name, DType: dt, Shape: shape, Begin: int64(b), End: int64(en)}, nil
}
