// Package convert converts and quantizes DeepSeek checkpoints (fp8->bf16, bf16->bf16,
// bf16->int8, bf16->int4) and shards them for N ranks; FORMATS.md documents the layouts.
//
// Run streams tensor by tensor from the memory-mapped input shards (pages are released
// after each tensor, so resident memory stays near one tensor's worth), writes every
// output under a temporary name that is renamed only when complete, records finished
// outputs in .convert-state.json so that a rerun with the same parameters resumes (and a
// rerun with other parameters restarts cleanly), and ends with a sha256sum-format
// manifest.sha256. fp8-bf16 resumes file by file; the DeepSeek-format modes write all
// rank files in one pass and checkpoint them (fsync + SHA-256 state in the state file)
// every Options.CheckpointBytes of input and on cancellation, so a rerun after an
// interruption or a kill continues from the last checkpoint. fp8 weights are dequantized exactly as DeepSeek's fp8_cast_bf16.py
// (bf16(f32(fp8) x f32 scale_inv), RNE); int8/int4 are symmetric with bf16 scales per
// output channel or per group of input rows, stored transposed (k, n) for
// aclnnWeightQuantBatchMatmulV2. Dequantize, PackInt4 and UnpackInt4 give loaders the
// inverse.
package convert
