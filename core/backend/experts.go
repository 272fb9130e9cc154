package backend

// Experts is a rank's routed experts [First, First+Count) held by a backend in the
// layout of its device-side MoE (for example one stacked tensor per projection), made by
// RoutedExperts.LoadExperts.
type Experts interface {
	// First is the global id of the first expert.
	First() int
	// Count is the number of experts.
	Count() int
}

// RoutedExperts is an optional interface of backends that run the routed experts of a
// MoE layer as one device-side operation (dispatch, grouped matmuls, SwiGLU and combine:
// aclnnMoeInitRoutingV3, aclnnGroupedMatmulV4, aclnnSwiGlu, aclnnMoeTokenUnpermute on
// Ascend) instead of the per-expert composition of GatherRows, GroupedLinear, SwiGLU and
// MoECombine. core/model finds it by type assertion; backends without it use the
// composition.
type RoutedExperts interface {
	// LoadExperts uploads the routed experts [first, first+len(w13)) of one MoE layer:
	// w13[i] is expert first+i's w1 ‖ w3 (2I × D, w1 rows first, as SwiGLU takes them)
	// and w2[i] its down projection (D × I). Every expert has the same shapes and dtype.
	// It returns (nil, nil) when the backend does not stack these weights (a dtype or
	// layout its operator does not take, or the device-side MoE switched off): the
	// caller then loads the experts with LoadWeight and uses the composition. The
	// backend may keep references to the host weights' slices.
	LoadExperts(first int, w13, w2 []*HostWeight) (Experts, error)
	// RoutedMoE overwrites out (M × D) with the routed part of a MoE layer for the
	// experts of ex:
	//
	//	out[i] = Σ_q w[i·topK+q] · w2_e(silu(w1_e·x[i]) ⊙ (w3_e·x[i])),  e = idx[i·topK+q],
	//
	// over the slots q whose expert e is in ex (other slots contribute 0). idx and w are
	// M × topK row-major, as MoEGate returns them; numExperts is the model's routed
	// expert count (every id must be in [0, numExperts)). This is the sum that
	// GatherRows + GroupedLinear (w13) + SwiGLU + GroupedLinear (w2) + MoECombine compute
	// over the same experts; only the summation order and the backend's rounding differ.
	RoutedMoE(out, x Tensor, idx []int32, w []float32, topK, numExperts int, ex Experts) error
}
