// Package convert converts and quantizes DeepSeek checkpoints (fp8->bf16, bf16->bf16,
// bf16->int8, bf16->int4) and shards them for N ranks; FORMATS.md documents the layouts.
package convert
