package safetensors

import "fmt"

// DType is a safetensors element type, spelled as in the file header.
type DType string

// The element types dsgate reads and writes.
const (
	F32     DType = "F32"
	F16     DType = "F16"
	BF16    DType = "BF16"
	F8E4M3  DType = "F8_E4M3"
	I8      DType = "I8"
	U8      DType = "U8"
	I32     DType = "I32"
	I64     DType = "I64"
	F64     DType = "F64"
	I16     DType = "I16"
	BoolDTy DType = "BOOL"
	F8E5M2  DType = "F8_E5M2"
	F8E8M0  DType = "F8_E8M0" // power-of-two scales (DeepSeek V3.1 "ue8m0")
	U16     DType = "U16"
	U32     DType = "U32"
	U64     DType = "U64"
)

// Size returns the element size in bytes, or 0 for an unsupported type.
func (d DType) Size() int {
	switch d {
	case F64, I64, U64:
		return 8
	case F32, I32, U32:
		return 4
	case F16, BF16, I16, U16:
		return 2
	case F8E4M3, F8E5M2, F8E8M0, I8, U8, BoolDTy:
		return 1
	}
	return 0
}

// Valid reports whether d is a type this package understands.
func (d DType) Valid() bool { return d.Size() != 0 }

// IsFloat reports whether d converts to float32 with [Tensor.Float32].
func (d DType) IsFloat() bool {
	switch d {
	case F32, F16, BF16, F8E4M3, F8E5M2, F8E8M0, F64:
		return true
	}
	return false
}

func checkDType(d DType) error {
	if !d.Valid() {
		return fmt.Errorf("unsupported dtype %q (want F32, F16, BF16, F8_E4M3, F8_E5M2, F8_E8M0, I8, U8, I16, U16, I32, U32, I64, U64, F64 or BOOL)", string(d))
	}
	return nil
}
