package main

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/dsgate/dsgate/core/tokenizer"
)

// runTokenize implements `gateway tokenize`: the text on stdin (all of it, byte for byte: a
// trailing newline is text too) -> a JSON array of token ids on stdout.
func runTokenize(env *cmdEnv, args []string) error {
	fs := newFlagSet(env, "tokenize", "tokenize [--tokenizer DIR] [--bos] < text")
	dir := fs.String("tokenizer", tokenizer.DefaultDir(env.environ), "folder with tokenizer.json and tokenizer_config.json (a checkpoint folder works)")
	bos := fs.Bool("bos", false, "prepend the BOS id (as transformers' tokenizer.encode does)")
	lf := addLogFlags(fs, env)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return exitError{code: 2, msg: fmt.Sprintf("unexpected arguments %q (the text is read from stdin)", fs.Args())}
	}
	log, err := lf.logger(env.stderr)
	if err != nil {
		return exitError{code: 2, msg: err.Error()}
	}
	start := time.Now()
	tk, err := tokenizer.Load(*dir)
	if err != nil {
		return err
	}
	log.Debug("tokenizer loaded", "dir", *dir, "took", time.Since(start))
	text, err := io.ReadAll(env.stdin)
	if err != nil {
		return fmt.Errorf("read stdin: %w", err)
	}
	ids := tk.Encode(string(text), *bos)
	out, err := json.Marshal(ids)
	if err != nil {
		return fmt.Errorf("encode ids: %w", err)
	}
	if _, err := fmt.Fprintf(env.stdout, "%s\n", out); err != nil {
		return fmt.Errorf("write stdout: %w", err)
	}
	log.Debug("tokenized", "bytes", len(text), "tokens", len(ids))
	return nil
}
