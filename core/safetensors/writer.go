package safetensors

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
)

// Spec declares a tensor for a Writer: name, type and shape. The byte size follows.
type Spec struct {
	Name  string
	DType DType
	Shape []int
}

// Size returns the byte size of the tensor, or an error on a bad spec.
func (s Spec) Size() (int64, error) {
	if err := checkDType(s.DType); err != nil {
		return 0, fmt.Errorf("tensor %q: %w", s.Name, err)
	}
	n := int64(s.DType.Size())
	for _, d := range s.Shape {
		if d < 0 {
			return 0, fmt.Errorf("tensor %q: negative dimension in shape %v", s.Name, s.Shape)
		}
		if d != 0 && n > (1<<62)/int64(d) {
			return 0, fmt.Errorf("tensor %q: shape %v too large", s.Name, s.Shape)
		}
		n *= int64(d)
	}
	return n, nil
}

// Writer streams a safetensors file: the header (with every offset computed from the
// declared specs) is written first, then the tensors' bytes in declaration order. The
// file is written under a temporary name next to the destination and renamed into
// place by Close only when every byte has been written, so an interrupted write never
// leaves a file that looks complete.
type Writer struct {
	path, tmp string
	f         *os.File
	bw        *bufio.Writer
	specs     []Spec
	sizes     []int64
	cur       int   // index of the tensor being written
	written   int64 // bytes of the current tensor written so far
	err       error
	done      bool
	sum       hash.Hash
	total     int64
}

// Create starts writing path with the given tensors (in this order) and metadata.
func Create(path string, specs []Spec, metadata map[string]string) (*Writer, error) {
	hdr, sizes, err := EncodeHeader(specs, metadata)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %s: %w", path, err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	h := sha256.New()
	w := &Writer{path: path, tmp: f.Name(), f: f, specs: specs, sizes: sizes, sum: h}
	w.bw = bufio.NewWriterSize(io.MultiWriter(f, h), 1<<20)
	w.total = int64(len(hdr))
	for _, n := range sizes {
		w.total += n
	}
	if _, err := w.bw.Write(hdr); err != nil {
		w.Abort()
		return nil, fmt.Errorf("safetensors: %s: %w", path, err)
	}
	w.skipEmpty()
	return w, nil
}

// EncodeHeader returns the complete file prefix (8-byte length + JSON header padded
// with spaces to a multiple of 8) for specs laid out contiguously in order, and each
// tensor's byte size.
func EncodeHeader(specs []Spec, metadata map[string]string) ([]byte, []int64, error) {
	var buf bytes.Buffer
	buf.WriteByte('{')
	first := true
	if len(metadata) > 0 {
		m, err := json.Marshal(metadata)
		if err != nil {
			return nil, nil, err
		}
		buf.WriteString(`"__metadata__":`)
		buf.Write(m)
		first = false
	}
	seen := map[string]bool{}
	sizes := make([]int64, len(specs))
	var off int64
	for i, s := range specs {
		if s.Name == "" || s.Name == "__metadata__" {
			return nil, nil, fmt.Errorf("invalid tensor name %q", s.Name)
		}
		if seen[s.Name] {
			return nil, nil, fmt.Errorf("tensor %q declared twice", s.Name)
		}
		seen[s.Name] = true
		n, err := s.Size()
		if err != nil {
			return nil, nil, err
		}
		sizes[i] = n
		if !first {
			buf.WriteByte(',')
		}
		first = false
		name, _ := json.Marshal(s.Name)
		shape := s.Shape
		if shape == nil {
			shape = []int{}
		}
		sh, _ := json.Marshal(shape)
		fmt.Fprintf(&buf, `%s:{"dtype":"%s","shape":%s,"data_offsets":[%d,%d]}`, name, s.DType, sh, off, off+n)
		off += n
	}
	buf.WriteByte('}')
	for buf.Len()%8 != 0 {
		buf.WriteByte(' ')
	}
	out := make([]byte, 8, 8+buf.Len())
	binary.LittleEndian.PutUint64(out, uint64(buf.Len()))
	return append(out, buf.Bytes()...), sizes, nil
}

func (w *Writer) skipEmpty() {
	for w.cur < len(w.specs) && w.written == w.sizes[w.cur] {
		w.cur++
		w.written = 0
	}
}

// Next returns the name of the tensor the next bytes belong to ("" when all are written).
func (w *Writer) Next() string {
	if w.cur < len(w.specs) {
		return w.specs[w.cur].Name
	}
	return ""
}

// Write appends raw tensor bytes; they may span tensors, in declaration order.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.done {
		return 0, fmt.Errorf("safetensors: %s: write after Close", w.path)
	}
	n := 0
	for len(p) > 0 {
		if w.cur >= len(w.specs) {
			w.err = fmt.Errorf("safetensors: %s: %d bytes written past the last tensor", w.path, len(p))
			return n, w.err
		}
		k := min(int64(len(p)), w.sizes[w.cur]-w.written)
		m, err := w.bw.Write(p[:k])
		n += m
		if err != nil {
			w.err = fmt.Errorf("safetensors: %s: %w", w.path, err)
			return n, w.err
		}
		w.written += k
		p = p[k:]
		w.skipEmpty()
	}
	return n, nil
}

// WriteTensor writes the whole data of the next tensor, checking its name and size.
func (w *Writer) WriteTensor(name string, data []byte) error {
	if w.err != nil {
		return w.err
	}
	if w.cur >= len(w.specs) {
		return fmt.Errorf("safetensors: %s: tensor %q not declared (all declared tensors written)", w.path, name)
	}
	s := w.specs[w.cur]
	if s.Name != name || w.written != 0 {
		return fmt.Errorf("safetensors: %s: tensor %q written out of order (next is %q)", w.path, name, s.Name)
	}
	if int64(len(data)) != w.sizes[w.cur] {
		return fmt.Errorf("safetensors: %s: tensor %q: got %d bytes, shape %v of %s needs %d", w.path, name, len(data), s.Shape, s.DType, w.sizes[w.cur])
	}
	_, err := w.Write(data)
	return err
}

// Close checks that every declared byte was written, syncs the temporary file and
// renames it to the destination. On any error the temporary file is removed.
func (w *Writer) Close() error {
	if w.done {
		return w.err
	}
	w.done = true
	if w.err == nil && w.cur < len(w.specs) {
		w.err = fmt.Errorf("safetensors: %s: closed before tensor %q was complete (%d of %d bytes)", w.path, w.specs[w.cur].Name, w.written, w.sizes[w.cur])
	}
	if w.err == nil {
		if err := w.bw.Flush(); err != nil {
			w.err = fmt.Errorf("safetensors: %s: %w", w.path, err)
		}
	}
	if w.err == nil {
		if err := w.f.Chmod(0o644); err != nil {
			w.err = fmt.Errorf("safetensors: %s: %w", w.path, err)
		}
	}
	if w.err == nil {
		if err := w.f.Sync(); err != nil {
			w.err = fmt.Errorf("safetensors: %s: %w", w.path, err)
		}
	}
	if err := w.f.Close(); err != nil && w.err == nil {
		w.err = fmt.Errorf("safetensors: %s: %w", w.path, err)
	}
	if w.err == nil {
		if err := os.Rename(w.tmp, w.path); err != nil {
			w.err = fmt.Errorf("safetensors: %w", err)
		}
	}
	if w.err != nil {
		os.Remove(w.tmp)
	}
	return w.err
}

// WriterState is what ResumeWriter needs to continue a file whose writer was
// checkpointed: the temporary file, how many bytes of it are durable, where the tensor
// stream stood, and the SHA-256 state at that point.
type WriterState struct {
	Temp    string `json:"temp"`
	Offset  int64  `json:"offset"`
	Cur     int    `json:"cur"`
	Written int64  `json:"written"`
	Hash    []byte `json:"hash"`
}

// Checkpoint flushes and syncs what has been written and returns the state from which
// ResumeWriter continues after a crash or interruption. The writer stays usable.
func (w *Writer) Checkpoint() (WriterState, error) {
	if w.err != nil {
		return WriterState{}, w.err
	}
	if w.done {
		return WriterState{}, fmt.Errorf("safetensors: %s: checkpoint after Close", w.path)
	}
	if err := w.bw.Flush(); err != nil {
		w.err = fmt.Errorf("safetensors: %s: %w", w.path, err)
		return WriterState{}, w.err
	}
	if err := w.f.Sync(); err != nil {
		w.err = fmt.Errorf("safetensors: %s: %w", w.path, err)
		return WriterState{}, w.err
	}
	off, err := w.f.Seek(0, io.SeekCurrent)
	if err != nil {
		return WriterState{}, fmt.Errorf("safetensors: %s: %w", w.path, err)
	}
	h, err := w.sum.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return WriterState{}, fmt.Errorf("safetensors: %s: %w", w.path, err)
	}
	return WriterState{Temp: w.tmp, Offset: off, Cur: w.cur, Written: w.written, Hash: h}, nil
}

// ResumeWriter reopens a checkpointed temporary file (see Checkpoint) for the same
// specs and metadata, drops anything written after the checkpoint and continues.
func ResumeWriter(path string, specs []Spec, metadata map[string]string, st WriterState) (*Writer, error) {
	hdr, sizes, err := EncodeHeader(specs, metadata)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %s: %w", path, err)
	}
	if filepath.Dir(st.Temp) != filepath.Dir(path) || st.Cur < 0 || st.Cur > len(specs) || st.Offset < int64(len(hdr)) {
		return nil, fmt.Errorf("safetensors: %s: invalid resume state", path)
	}
	want := int64(len(hdr))
	for i := range st.Cur {
		want += sizes[i]
	}
	if st.Cur < len(specs) {
		want += st.Written
	}
	if want != st.Offset {
		return nil, fmt.Errorf("safetensors: %s: resume state does not match the declared tensors", path)
	}
	h := sha256.New()
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(st.Hash); err != nil {
		return nil, fmt.Errorf("safetensors: %s: resume hash state: %w", path, err)
	}
	f, err := os.OpenFile(st.Temp, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("safetensors: resume: %w", err)
	}
	head := make([]byte, len(hdr))
	if _, err := io.ReadFull(f, head); err != nil || !bytes.Equal(head, hdr) {
		f.Close()
		return nil, fmt.Errorf("safetensors: %s: temporary file %s does not hold the expected header", path, st.Temp)
	}
	fi, err := f.Stat()
	if err == nil && fi.Size() < st.Offset {
		err = fmt.Errorf("%s is %d bytes, shorter than the checkpoint at %d", st.Temp, fi.Size(), st.Offset)
	}
	if err == nil {
		err = f.Truncate(st.Offset)
	}
	if err == nil {
		_, err = f.Seek(st.Offset, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("safetensors: resume: %w", err)
	}
	w := &Writer{path: path, tmp: st.Temp, f: f, specs: specs, sizes: sizes, sum: h, cur: st.Cur, written: st.Written, total: int64(len(hdr))}
	for _, n := range sizes {
		w.total += n
	}
	w.bw = bufio.NewWriterSize(io.MultiWriter(f, h), 1<<20)
	w.skipEmpty()
	return w, nil
}

// Detach closes the writer's file without removing or renaming it, so that a later
// ResumeWriter continues from the last Checkpoint.
func (w *Writer) Detach() {
	if w.done {
		return
	}
	w.done = true
	if w.err == nil {
		w.err = errors.New("safetensors: writer detached")
	}
	w.f.Close()
}

// SHA256 returns the hex SHA-256 of the complete file, valid after a successful Close.
func (w *Writer) SHA256() string { return hex.EncodeToString(w.sum.Sum(nil)) }

// FileSize returns the size the complete file will have.
func (w *Writer) FileSize() int64 { return w.total }

// Abort discards the partial file.
func (w *Writer) Abort() {
	if w.done {
		return
	}
	w.done = true
	if w.err == nil {
		w.err = errors.New("safetensors: write aborted")
	}
	w.f.Close()
	os.Remove(w.tmp)
}

// WriteFile writes a complete file at once from tensors held in memory.
func WriteFile(path string, tensors []Tensor, metadata map[string]string) error {
	specs := make([]Spec, len(tensors))
	for i, t := range tensors {
		specs[i] = Spec{Name: t.Name, DType: t.DType, Shape: t.Shape}
	}
	w, err := Create(path, specs, metadata)
	if err != nil {
		return err
	}
	for _, t := range tensors {
		if err := w.WriteTensor(t.Name, t.Data); err != nil {
			w.Abort()
			return err
		}
	}
	return w.Close()
}
