// Package core is the root of dsgate's inference engine. Its subpackages each have one
// job: tokenizer, safetensors, backend (the op interface), cpu (the CPU backend), model
// (the DeepSeek-V3 forward pass), kvcache, engine (the scheduler) and sample.
package core
