package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/dsgate/dsgate/configs"
	"github.com/dsgate/dsgate/convert"
)

// runConvert implements `gateway convert`: fp8->bf16 (Hugging Face layout) or
// bf16/int8/int4 DeepSeek-format rank shards (convert/FORMATS.md).
func runConvert(env *cmdEnv, args []string) error {
	fs := newFlagSet(env, "convert", "convert --mode fp8-bf16|bf16-bf16|bf16-int8|bf16-int4 --hf-ckpt-path IN --save-path OUT [--model-parallel N] [--n-experts E] [--group-size G] [--config-path F]")
	mode := fs.String("mode", "", "conversion: "+strings.Join(convert.Modes, ", "))
	in := fs.String("hf-ckpt-path", "", "input Hugging Face checkpoint folder (index + shards)")
	out := fs.String("save-path", "", "output folder")
	mp := fs.Int("model-parallel", 1, "number of rank shards model{r}-mp{N}.safetensors (not for fp8-bf16)")
	nExperts := fs.Int("n-experts", 0, "routed experts (default: the config's n_routed_experts)")
	group := fs.Int("group-size", -1, "int4 scale group size along k: 32, 64, 128, or 0 for per-channel; -1 picks 128")
	cfgPath := fs.String("config-path", "", "model config (DeepSeek or HF format); default IN/config.json")
	lf := addLogFlags(fs, env)
	ov := configs.RegisterOverrides(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return exitError{code: 2, msg: fmt.Sprintf("unexpected arguments %q", fs.Args())}
	}
	log, err := lf.logger(env.stderr)
	if err != nil {
		return exitError{code: 2, msg: err.Error()}
	}
	switch {
	case *mode == "":
		return exitError{code: 2, msg: "--mode is required (" + strings.Join(convert.Modes, ", ") + ")"}
	case *in == "":
		return exitError{code: 2, msg: "--hf-ckpt-path is required"}
	case *out == "":
		return exitError{code: 2, msg: "--save-path is required"}
	}
	opt := convert.Options{Mode: *mode, In: *in, Out: *out, MP: *mp, NExperts: *nExperts, GroupSize: *group, Logger: log}
	if *cfgPath != "" || *mode != convert.ModeFP8BF16 {
		var cfg configs.Model
		if *cfgPath != "" {
			cfg, err = configs.LoadFile(*cfgPath)
		} else {
			cfg, err = configs.FromCheckpoint(*in)
		}
		if err != nil {
			return fmt.Errorf("%w (pass --config-path)", err)
		}
		if err := ov.Apply(&cfg, env.environ); err != nil {
			return err
		}
		opt.Config = &cfg
	}
	if isTerminal(env.stderr) {
		var bar *progressbar.ProgressBar
		opt.Progress = func(done, total int64) {
			if bar == nil {
				bar = progressbar.NewOptions64(total,
					progressbar.OptionSetWriter(env.stderr),
					progressbar.OptionSetDescription("converting"),
					progressbar.OptionShowBytes(true),
					progressbar.OptionShowCount(),
					progressbar.OptionSetPredictTime(true),
					progressbar.OptionFullWidth(),
					progressbar.OptionThrottle(200*time.Millisecond),
					progressbar.OptionOnCompletion(func() { fmt.Fprintln(env.stderr) }))
			}
			_ = bar.Set64(done)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := convert.Run(ctx, opt)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return exitError{code: 130, msg: "interrupted; rerun the same command to resume"}
		}
		return err
	}
	secs := res.Elapsed.Seconds()
	log.Info("conversion complete", "mode", *mode, "out", *out, "files", len(res.Files),
		"resumed_files", res.Resumed, "quantized_tensors", res.Quantized,
		"read_mb", fmt.Sprintf("%.1f", float64(res.BytesIn)/1e6), "written_mb", fmt.Sprintf("%.1f", float64(res.BytesOut)/1e6), "seconds", fmt.Sprintf("%.1f", secs),
		"mb_per_s", fmt.Sprintf("%.1f", float64(res.BytesIn)/1e6/max(secs, 1e-9)))
	return nil
}
