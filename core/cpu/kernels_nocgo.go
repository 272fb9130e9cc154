//go:build !cgo

package cpu

import (
	"encoding/binary"
	"math"

	"github.com/dsgate/dsgate/core/backend"
)

// cgoEnabled reports whether the C kernels are in use.
const cgoEnabled = false

// linearKernel is the pure-Go twin of the C kernel (same algorithm, same summation
// order up to FMA contraction).
func linearKernel(o, x *backend.HostTensor, w *backend.HostWeight, n0, n1, xc0 int) {
	switch w.DType {
	case backend.F32, backend.BF16:
		for n := n0; n < n1; n++ {
			for m := 0; m < x.R; m++ {
				xr := x.Row(m)[xc0 : xc0+w.K]
				var acc [16]float32
				k := 0
				for ; k+16 <= w.K; k += 16 {
					for j := 0; j < 16; j++ {
						acc[j] += xr[k+j] * w.At(n, k+j)
					}
				}
				var s, tail float32
				for ; k < w.K; k++ {
					tail += xr[k] * w.At(n, k)
				}
				for j := 0; j < 16; j++ {
					s += acc[j]
				}
				o.Row(m)[n-n0] = s + tail
			}
		}
		return
	}
	g := w.GroupSize
	if g == 0 {
		g = w.K
	}
	for m := 0; m < x.R; m++ {
		xr := x.Row(m)[xc0 : xc0+w.K]
		yr := o.Row(m)
		for n := n0; n < n1; n++ {
			var out float32
			for g0 := 0; g0 < w.K; g0 += g {
				var acc float32
				for k := g0; k < min(g0+g, w.K); k++ {
					var q int8
					if w.DType == backend.I8 {
						q = int8(w.Q[k*w.N+n])
					} else {
						wd := binary.LittleEndian.Uint32(w.Q[(k*(w.N/8)+n/8)*4:])
						q = int8(wd>>(4*uint(n%8))<<4) >> 4
					}
					acc += xr[k] * float32(q)
				}
				out += acc * w.Scale[(g0/g)*w.N+n]
			}
			yr[n-n0] = out
		}
	}
}

func mlaKernel(o, qa, qp *backend.HostTensor, s backend.AttnSeq, h0, h1, lc, r int, cache []float32, width int, slots []int32, scale float32, sc []float32) {
	for i := 0; i < s.N; i++ {
		T := s.Pos + i + 1
		for h := h0; h < h1; h++ {
			a := qa.Row(s.Row + i)[h*lc : (h+1)*lc]
			p := qp.Row(s.Row + i)[h*r : (h+1)*r]
			mx := float32(math.Inf(-1))
			for t := 0; t < T; t++ {
				row := cache[int(slots[t])*width:][:width]
				var d float32
				for j, v := range a {
					d += v * row[j]
				}
				var e float32
				for j, v := range p {
					e += v * row[lc+j]
				}
				sc[t] = (d + e) * scale
				mx = max(mx, sc[t])
			}
			var sum float32
			for t := 0; t < T; t++ {
				sc[t] = float32(math.Exp(float64(sc[t] - mx)))
				sum += sc[t]
			}
			inv := 1 / sum
			out := o.Row(s.Row + i)[h*lc : (h+1)*lc]
			clear(out)
			for t := 0; t < T; t++ {
				row := cache[int(slots[t])*width:][:lc]
				pt := sc[t] * inv
				for j, v := range row {
					out[j] += pt * v
				}
			}
		}
	}
}
