// Package tokenizer is DeepSeek-V3's tokenizer and chat template in pure Go (spec §2): it loads
// a Hugging Face tokenizer.json (byte-level BPE) and tokenizer_config.json, encodes text to
// exactly the ids HF tokenizers produces, decodes ids (whole or incrementally for streaming),
// and renders conversations with the DeepSeek-V3 chat template as transformers does.
//
// Encoding follows spec §2.2: added tokens written in the text are cut out first (leftmost
// longest; non-normalized tokens before normalized ones, as HF does), the three Split
// pre-tokenizer steps run as a hand-written scanner (no regexp), and each pre-token is BPE-merged
// by rank. Unicode classes come from the HF library's regex engine (unicode_tables.go, generated
// by testdata/gen_tables.py), not from Go's unicode package, whose tables are an older Unicode
// version. RATIONALE.md explains the choices.
//
// Proof lives in testdata/: a corpus of more than 1 MB with the ids HF tokenizers gives for it,
// decodings, and conversations rendered by transformers' apply_chat_template; the generator
// scripts sit next to them.
//
// A *Tokenizer is safe for concurrent use; a *StreamDecoder belongs to one sequence.
package tokenizer
