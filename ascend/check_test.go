//go:build cgo

package ascend

import "testing"

// TestOpsMatchReference runs every op case on the emulator against the Go reference, in
// both precisions and at world sizes 1 and 4.
func TestOpsMatchReference(t *testing.T) {
	for _, tc := range []struct {
		world     int
		precision string
	}{{1, "bf16"}, {1, "f32"}, {4, "bf16"}} {
		res, err := Check(Options{CANNHome: emuHome, Precision: tc.precision}, tc.world)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res {
			if !r.Pass() {
				t.Errorf("W=%d %s: %s (%s): rel err %.3g > %.3g, err %v", tc.world, tc.precision, r.Op, r.CANN, r.RelErr, r.Tolerance, r.Err)
			}
		}
	}
}
