package safetensors

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"syscall"

	"github.com/dsgate/dsgate/core/dtype"
)

// File is one safetensors file, memory-mapped read-only. Tensor data returned by
// Tensor aliases the mapping and is valid until Close.
type File struct {
	Path   string
	Header *Header
	data   []byte // the whole file (mmap) or nil after Close
	mapped bool
}

// OpenFile maps path and validates its header. The file must not be truncated while
// it is open (that would fault on access, as with any mmap).
func OpenFile(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	size := st.Size()
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("safetensors: %s: not a regular file", path)
	}
	// Read and check the header with plain reads first, so that a huge or bogus
	// header length is rejected before anything is mapped.
	var prefix [8]byte
	if _, err := io.ReadFull(f, prefix[:]); err != nil {
		return nil, fmt.Errorf("safetensors: %s: %w", path, malformed("file is %d bytes, shorter than the 8-byte header length", size))
	}
	n, err := ReadHeaderSize(prefix[:], size)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %s: %w", path, err)
	}
	js := make([]byte, n)
	if _, err := io.ReadFull(f, js); err != nil {
		return nil, fmt.Errorf("safetensors: %s: reading header: %w", path, err)
	}
	h, err := ParseHeader(js, size-8-n)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %s: %w", path, err)
	}
	h.DataOff = 8 + n
	if size > math.MaxInt {
		return nil, fmt.Errorf("safetensors: %s: file too large to map", path)
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %s: mmap: %w", path, err)
	}
	return &File{Path: path, Header: h, data: data, mapped: true}, nil
}

// FromBytes wraps a complete safetensors file held in memory (no mapping).
func FromBytes(name string, data []byte) (*File, error) {
	h, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %s: %w", name, err)
	}
	return &File{Path: name, Header: h, data: data}, nil
}

// Close unmaps the file; tensors obtained from it must not be used afterwards.
func (f *File) Close() error {
	if f == nil || f.data == nil {
		return nil
	}
	var err error
	if f.mapped {
		err = syscall.Munmap(f.data)
	}
	f.data = nil
	if err != nil {
		return fmt.Errorf("safetensors: %s: munmap: %w", f.Path, err)
	}
	return nil
}

// Advise tells the kernel how the mapping will be read: sequential true asks for
// aggressive read-ahead (MADV_SEQUENTIAL). Errors are ignored: it is only a hint.
func (f *File) Advise(sequential bool) {
	if f.data == nil || !f.mapped || len(f.data) == 0 {
		return
	}
	adv := syscall.MADV_NORMAL
	if sequential {
		adv = syscall.MADV_SEQUENTIAL
	}
	_ = syscall.Madvise(f.data, adv)
}

// Release drops the pages of the tensor's data from this process's resident set
// (MADV_DONTNEED on the whole pages inside its range); the data stays readable and is
// paged in again from the file on the next access. Converters call it after each
// tensor so that their resident memory stays bounded by one tensor, not one file.
func (f *File) Release(t TensorInfo) {
	if f.data == nil || !f.mapped {
		return
	}
	page := int64(os.Getpagesize())
	lo := (f.Header.DataOff + t.Begin + page - 1) / page * page
	hi := (f.Header.DataOff + t.End) / page * page
	if hi > lo {
		_ = syscall.Madvise(f.data[lo:hi], syscall.MADV_DONTNEED)
	}
}

// Names returns the tensor names in data order.
func (f *File) Names() []string {
	out := make([]string, len(f.Header.Tensors))
	for i, t := range f.Header.Tensors {
		out[i] = t.Name
	}
	return out
}

// Metadata returns the __metadata__ map (nil if absent).
func (f *File) Metadata() map[string]string { return f.Header.Metadata }

// Tensor returns a view of the named tensor.
func (f *File) Tensor(name string) (Tensor, error) {
	if f.data == nil {
		return Tensor{}, fmt.Errorf("safetensors: %s: file is closed", f.Path)
	}
	ti, ok := f.Header.Lookup(name)
	if !ok {
		return Tensor{}, fmt.Errorf("safetensors: %s: no tensor %q", f.Path, name)
	}
	off := f.Header.DataOff
	return Tensor{TensorInfo: ti, Data: f.data[off+ti.Begin : off+ti.End : off+ti.End]}, nil
}

// Tensor is a view of one tensor: its description and its raw little-endian bytes
// (aliasing the file mapping when read from a File).
type Tensor struct {
	TensorInfo
	Data []byte
}

// Float32 converts the tensor to a new float32 slice (F32, F16, BF16, F8_E4M3,
// F8_E5M2, F8_E8M0, F64).
func (t Tensor) Float32() ([]float32, error) {
	out := make([]float32, t.NumElements())
	if err := t.Float32Into(out); err != nil {
		return nil, err
	}
	return out, nil
}

// Float32Into converts the tensor into dst, which must hold NumElements values.
func (t Tensor) Float32Into(dst []float32) error {
	n := t.NumElements()
	if len(dst) < n {
		return fmt.Errorf("safetensors: tensor %q: destination holds %d values, need %d", t.Name, len(dst), n)
	}
	if int64(len(t.Data)) != int64(n)*int64(t.DType.Size()) {
		return fmt.Errorf("safetensors: tensor %q: %d data bytes for %d elements of %s", t.Name, len(t.Data), n, t.DType)
	}
	d := t.Data
	switch t.DType {
	case F32:
		for i := range n {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(d[4*i:]))
		}
	case F64:
		for i := range n {
			dst[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(d[8*i:])))
		}
	case BF16:
		for i := range n {
			dst[i] = dtype.BF16ToF32(binary.LittleEndian.Uint16(d[2*i:]))
		}
	case F16:
		for i := range n {
			dst[i] = dtype.F16ToF32(binary.LittleEndian.Uint16(d[2*i:]))
		}
	case F8E4M3:
		tab := dtype.E4M3Table()
		for i := range n {
			dst[i] = tab[d[i]]
		}
	case F8E5M2:
		// e5m2 is the top byte of an IEEE half.
		for i := range n {
			dst[i] = dtype.F16ToF32(uint16(d[i]) << 8)
		}
	case F8E8M0:
		for i := range n {
			dst[i] = dtype.E8M0ToF32(d[i])
		}
	default:
		return fmt.Errorf("safetensors: tensor %q: %s does not convert to float32", t.Name, t.DType)
	}
	return nil
}

// Uint16s returns the raw 16-bit values of a BF16, F16 or I16 tensor (a copy).
func (t Tensor) Uint16s() ([]uint16, error) {
	if t.DType.Size() != 2 {
		return nil, fmt.Errorf("safetensors: tensor %q: %s is not a 16-bit type", t.Name, t.DType)
	}
	out := make([]uint16, len(t.Data)/2)
	for i := range out {
		out[i] = binary.LittleEndian.Uint16(t.Data[2*i:])
	}
	return out, nil
}

// Int8s returns the values of an I8 tensor (a copy).
func (t Tensor) Int8s() ([]int8, error) {
	if t.DType != I8 {
		return nil, fmt.Errorf("safetensors: tensor %q: %s is not I8", t.Name, t.DType)
	}
	out := make([]int8, len(t.Data))
	for i, b := range t.Data {
		out[i] = int8(b)
	}
	return out, nil
}

// Int32s returns the values of an I32 tensor (a copy).
func (t Tensor) Int32s() ([]int32, error) {
	if t.DType != I32 {
		return nil, fmt.Errorf("safetensors: tensor %q: %s is not I32", t.Name, t.DType)
	}
	out := make([]int32, len(t.Data)/4)
	for i := range out {
		out[i] = int32(binary.LittleEndian.Uint32(t.Data[4*i:]))
	}
	return out, nil
}

// Int64s returns the values of an I64 or I32 tensor widened to int64 (a copy).
func (t Tensor) Int64s() ([]int64, error) {
	switch t.DType {
	case I64:
		out := make([]int64, len(t.Data)/8)
		for i := range out {
			out[i] = int64(binary.LittleEndian.Uint64(t.Data[8*i:]))
		}
		return out, nil
	case I32:
		v, _ := t.Int32s()
		out := make([]int64, len(v))
		for i, x := range v {
			out[i] = int64(x)
		}
		return out, nil
	}
	return nil, fmt.Errorf("safetensors: tensor %q: %s is not an integer type", t.Name, t.DType)
}
