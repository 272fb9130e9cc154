package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/dsgate/dsgate/core/tokenizer"
)

// runDetokenize implements `gateway detokenize`: a JSON array of token ids on stdin -> the
// decoded text on stdout (nothing added after it).
func runDetokenize(env *cmdEnv, args []string) error {
	fs := newFlagSet(env, "detokenize", "detokenize [--tokenizer DIR] [--skip-special] < ids.json")
	dir := fs.String("tokenizer", tokenizer.DefaultDir(env.environ), "folder with tokenizer.json and tokenizer_config.json (a checkpoint folder works)")
	skip := fs.Bool("skip-special", false, "drop special tokens (BOS, EOS, <|EOT|>, ...), as skip_special_tokens=True does")
	lf := addLogFlags(fs, env)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return exitError{code: 2, msg: fmt.Sprintf("unexpected arguments %q (the ids are read from stdin)", fs.Args())}
	}
	if _, err := lf.logger(env.stderr); err != nil {
		return exitError{code: 2, msg: err.Error()}
	}
	raw, err := io.ReadAll(env.stdin)
	if err != nil {
		return fmt.Errorf("read stdin: %w", err)
	}
	var ids []int32
	if err := json.Unmarshal(raw, &ids); err != nil {
		return exitError{code: 2, msg: fmt.Sprintf("stdin must be a JSON array of token ids: %v", err)}
	}
	tk, err := tokenizer.Load(*dir)
	if err != nil {
		return err
	}
	if _, err := io.WriteString(env.stdout, tk.Decode(ids, *skip)); err != nil {
		return fmt.Errorf("write stdout: %w", err)
	}
	return nil
}
