// Package safetensors reads and writes the safetensors checkpoint format.
//
// Reading: OpenFile memory-maps one file (read-only) after validating its header with
// plain reads; Open opens a checkpoint folder in any of the layouts dsgate meets
// (Hugging Face model.safetensors.index.json + shards, DeepSeek's rank-sharded
// model{rank}-mp{N}.safetensors, a single model.safetensors, or any set of files with
// distinct names) and lists every tensor's name, dtype, shape and file (Set.Entries).
// A Tensor is a view of raw little-endian bytes aliasing the mapping, with typed
// accessors (Float32 converts F32/F16/BF16/F8_E4M3/F64 exactly as torch does; Int8s,
// Int32s, Int64s, Uint16s copy). File.Release drops a tensor's pages from the resident
// set after use, so streaming a large file keeps memory bounded.
//
// Validation follows the reference Rust crate: header length at most MaxHeaderSize and
// inside the file, a JSON object without duplicate keys, known dtypes, non-negative
// shapes whose byte size equals the data_offsets span, offsets inside the data section,
// no overlaps or gaps, the data section fully used. Every violation is an error wrapping
// ErrMalformed and naming the file and tensor; parsing never panics (FuzzParse).
//
// Writing: Create computes the whole header from declared Specs, writes it, then takes
// the tensors' bytes as a stream (Write / WriteTensor) into a temporary file in the
// destination folder; Close syncs and renames it into place only once every declared
// byte is written. Header bytes are identical to the reference serializer's for the
// same tensor order (TestWriterMatchesReference). Writer.SHA256 gives the file's hash
// without rereading it; Checkpoint (fsync + hash state) and ResumeWriter let a long
// write continue after an interruption or a crash.
//
// Number conversions (bf16, f16, e4m3fn) live in package core/dtype.
package safetensors
