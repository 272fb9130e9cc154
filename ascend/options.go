package ascend

import (
	"fmt"

	"github.com/dsgate/dsgate/core/backend"
)

// Options configures a group of Ascend ranks.
type Options struct {
	// CANNHome is the CANN toolkit directory holding lib64/ (the --cann-home flag, or
	// ASCEND_TOOLKIT_HOME; see DefaultHome). The emulator's is ascend/emu/build.
	CANNHome string
	// Devices are the NPU ids of the ranks (default 0 … WorldSize-1).
	Devices []int
	// Precision is "bf16" (default: activations enter every matmul as bfloat16, as the
	// NPU's weight-quantized kernels require) or "f32" (verification: float32 throughout,
	// quantized weights dequantized to float32 at load).
	Precision string
	// HostMoE keeps the MoE layers' routed experts on the per-expert path (GatherRows,
	// one Linear per expert, SwiGLU, MoECombine; one device weight per expert) instead
	// of the device-side MoE (Backend.RoutedMoE over stacked experts), which is the
	// default. It exists to compare the two.
	HostMoE bool
}

// DefaultHome returns the CANN home named by the environment: ASCEND_TOOLKIT_HOME, else
// ASCEND_HOME_PATH, else the standard install path.
func DefaultHome(environ map[string]string) string {
	for _, k := range []string{"ASCEND_TOOLKIT_HOME", "ASCEND_HOME_PATH"} {
		if v := environ[k]; v != "" {
			return v
		}
	}
	return "/usr/local/Ascend/ascend-toolkit/latest"
}

func (o *Options) normalize(worldSize int) error {
	if worldSize <= 0 || worldSize > 64 {
		return fmt.Errorf("ascend: bad world size %d", worldSize)
	}
	if o.CANNHome == "" {
		return fmt.Errorf("ascend: no CANN home (set --cann-home or ASCEND_TOOLKIT_HOME)")
	}
	if len(o.Devices) == 0 {
		o.Devices = make([]int, worldSize)
		for i := range o.Devices {
			o.Devices[i] = i
		}
	}
	if len(o.Devices) != worldSize {
		return fmt.Errorf("ascend: %d devices for world size %d", len(o.Devices), worldSize)
	}
	switch o.Precision {
	case "":
		o.Precision = "bf16"
	case "bf16", "f32":
	default:
		return fmt.Errorf("ascend: precision %q: want bf16 or f32", o.Precision)
	}
	return nil
}

// NewGroup loads CANN from opt.CANNHome and returns the W rank backends of one
// tensor-parallel group (one NPU and one OS thread per rank, one HCCL communicator).
// Close every backend when done.
func NewGroup(worldSize int, opt Options) ([]backend.Backend, error) {
	if err := opt.normalize(worldSize); err != nil {
		return nil, err
	}
	return newGroup(worldSize, opt)
}

// New is NewGroup for core/model's Options.Backend == "ascend": it is the
// backend.Factory to hand to the model loader.
func New(opt Options) backend.Factory {
	return func(worldSize int) ([]backend.Backend, error) { return NewGroup(worldSize, opt) }
}
