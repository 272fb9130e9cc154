package cpu

import (
	"fmt"

	"github.com/dsgate/dsgate/core/backend"
)

// panelCols is the number of output columns of a panel.
const panelCols = 64

// qweight is a quantized weight repacked at load for the AVX2 kernels (fast.h;
// KERNELS.md "Layout: panels, packed at load"). The checkpoint's (K, N) layout puts
// every output column of one input row side by side, so a kernel that keeps its
// accumulators small must jump between rows N bytes apart. In panels, the K rows of 64
// output columns are contiguous: a kernel walks each panel down k as one sequential
// stream with its accumulators in registers and L1.
type qweight struct {
	h      *backend.HostWeight // the header: Name, DType, N, K, GroupSize (no data)
	panels []byte              // ceil(N/64) panels of K rows of panelBytes, zero past N
	scale  []float32           // scale groups × ldsc, zero past N
	ldsc   int                 // N rounded up to 64
}

var _ backend.Weight = (*qweight)(nil)

func (w *qweight) Name() string         { return w.h.Name }
func (w *qweight) DType() backend.DType { return w.h.DType }
func (w *qweight) N() int               { return w.h.N }
func (w *qweight) K() int               { return w.h.K }

// Bytes is the memory the weight holds: panels and scales.
func (w *qweight) Bytes() int64 { return int64(len(w.panels)) + 4*int64(len(w.scale)) }

// bits is 8 or 4.
func (w *qweight) bits() int {
	if w.h.DType == backend.I4 {
		return 4
	}
	return 8
}

// panelBytes is the bytes of one row of a panel: 64 int8 columns, or 64 int4 columns
// (8 words of 8 nibbles).
func panelBytes(d backend.DType) int {
	if d == backend.I4 {
		return 32
	}
	return 64
}

// packQuant repacks a validated I8 or I4 host weight into panels. The result shares no
// memory with hw, so hw's bytes can be freed once the caller drops it.
func packQuant(hw *backend.HostWeight) (*qweight, error) {
	if !hw.Quantized() {
		return nil, fmt.Errorf("pack %s: %v is not quantized", hw.Name, hw.DType)
	}
	pb := panelBytes(hw.DType)
	rowBytes := hw.N * pb / panelCols
	np := (hw.N + panelCols - 1) / panelCols
	ldsc := np * panelCols
	w := &qweight{
		h:      &backend.HostWeight{Name: hw.Name, DType: hw.DType, N: hw.N, K: hw.K, GroupSize: hw.GroupSize},
		panels: make([]byte, np*hw.K*pb),
		ldsc:   ldsc,
	}
	for k := 0; k < hw.K; k++ {
		row := hw.Q[k*rowBytes : (k+1)*rowBytes]
		for p := 0; p < np; p++ {
			at := (p*hw.K + k) * pb
			copy(w.panels[at:at+pb], row[p*pb:min((p+1)*pb, rowBytes)])
		}
	}
	groups := len(hw.Scale) / hw.N
	w.scale = make([]float32, groups*ldsc)
	for g := 0; g < groups; g++ {
		copy(w.scale[g*ldsc:], hw.Scale[g*hw.N:(g+1)*hw.N])
	}
	return w, nil
}

// weightArgs resolves a weight handle of this backend: the host weight (dense weights,
// and quantized ones on the generic kernels) or, for a packed weight, its header and
// the packed weight.
func weightArgs(op string, w backend.Weight) (*backend.HostWeight, *qweight, error) {
	if q, ok := w.(*qweight); ok && q != nil {
		return q.h, q, nil
	}
	h, err := backend.AsHostWeight(op, w)
	return h, nil, err
}
