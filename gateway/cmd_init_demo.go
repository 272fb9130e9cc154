package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/dsgate/dsgate/configs"
	"github.com/dsgate/dsgate/core/model"
	"github.com/dsgate/dsgate/core/tokenizer"
)

// runInitDemo implements `gateway init-demo DIR`: a random-weight checkpoint (HF tensor
// names, bf16) of a DeepSeek-V3-shaped config, its config.json, and the tokenizer files,
// ready for `gateway serve --ckpt-path DIR`. Its answers are noise: it proves the pipeline.
func runInitDemo(env *cmdEnv, args []string) error {
	fs := newFlagSet(env, "init-demo", "init-demo DIR [--config-path configs/config_tiny.json] [--seed N] [--tokenizer DIR] [--<config-field> V ...]")
	cfgPath := fs.String("config-path", "configs/config_tiny.json", "model config (DeepSeek or HF format; embedded configs by name)")
	seed := fs.Uint64("seed", 1, "random seed (different seeds give different weights)")
	tokDir := fs.String("tokenizer", tokenizer.DefaultDir(env.environ), "folder with tokenizer.json and tokenizer_config.json to copy")
	ov := configs.RegisterOverrides(fs)
	lf := addLogFlags(fs, env)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return exitError{code: 2, msg: "init-demo needs exactly one argument: the output folder"}
	}
	log, err := lf.logger(env.stderr)
	if err != nil {
		return exitError{code: 2, msg: err.Error()}
	}
	dir := fs.Arg(0)
	cfg, err := configs.LoadFile(*cfgPath)
	if err != nil {
		return exitError{code: 2, msg: err.Error()}
	}
	if err := ov.Apply(&cfg, env.environ); err != nil {
		return exitError{code: 2, msg: err.Error()}
	}
	if err := cfg.Validate(); err != nil {
		return exitError{code: 2, msg: err.Error()}
	}
	// Check the tokenizer first: a missing tokenizer should not cost a checkpoint write.
	for _, f := range []string{"tokenizer.json", "tokenizer_config.json"} {
		if _, err := os.Stat(filepath.Join(*tokDir, f)); err != nil {
			return fmt.Errorf("tokenizer: %w (run scripts/fetch-tokenizer.sh or pass --tokenizer)", err)
		}
	}
	start := time.Now()
	if err := model.WriteRandomCheckpoint(dir, cfg, *seed); err != nil {
		return err
	}
	for _, f := range []string{"tokenizer.json", "tokenizer_config.json"} {
		if err := copyFile(filepath.Join(*tokDir, f), filepath.Join(dir, f)); err != nil {
			return err
		}
	}
	log.Info("demo checkpoint written", "dir", dir, "seed", *seed, "vocab", cfg.VocabSize, "dim", cfg.Dim,
		"layers", cfg.NLayers, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return fmt.Errorf("copy to %s: %w", dst, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("copy to %s: %w", dst, err)
	}
	return nil
}
