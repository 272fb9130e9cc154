// Package configs holds the model configurations dsgate ships (embedded JSON files in
// DeepSeek's inference format) and the loader that reads a configuration from DeepSeek's
// format, from a Hugging Face config.json, from GATEWAY_* environment variables and from
// command-line flags named after each field.
//
// Precedence, highest first: flag > environment > config file > built-in default
// (spec deepseek-v3.md §1.1 gives the defaults).
package configs
