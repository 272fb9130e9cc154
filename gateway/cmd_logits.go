package main

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/dsgate/dsgate/configs"
	"github.com/dsgate/dsgate/core/model"
)

// runLogits implements `gateway logits`: it runs the ids as one sequence and prints
// {"logits": [[...], ...]}, the float32 next-token logits (full vocabulary) at every
// position. Other tools check the model through this output: keep it stable.
func runLogits(env *cmdEnv, args []string) error {
	fs := newFlagSet(env, "logits", "logits --ckpt-path DIR [--config-path F] --ids 0,5,9 [--backend cpu] [--world-size N] [--attn-impl absorb|naive] [--<config-field> V ...]")
	ckpt := fs.String("ckpt-path", "", "checkpoint folder (HF names: bf16/fp8; or DeepSeek names from convert)")
	cfgPath := fs.String("config-path", "", "model config (default: config.json of the checkpoint)")
	idsFlag := fs.String("ids", "", "comma-separated token ids")
	backendName := fs.String("backend", "cpu", "backend: cpu, reference or ascend")
	cannHome := fs.String("cann-home", env.environ["GATEWAY_CANN_HOME"], "CANN toolkit folder for --backend ascend (default ASCEND_TOOLKIT_HOME)")
	precision := fs.String("ascend-precision", "bf16", "with --backend ascend: bf16 or f32")
	world := fs.Int("world-size", 1, "ranks (1, 2, 4, 8)")
	ov := configs.RegisterOverrides(fs)
	lf := addLogFlags(fs, env)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return exitError{code: 2, msg: fmt.Sprintf("unexpected arguments %q", fs.Args())}
	}
	if *ckpt == "" {
		return exitError{code: 2, msg: "--ckpt-path is required"}
	}
	ids, err := parseIDs(*idsFlag)
	if err != nil {
		return exitError{code: 2, msg: err.Error()}
	}
	log, err := lf.logger(env.stderr)
	if err != nil {
		return exitError{code: 2, msg: err.Error()}
	}
	var cfg configs.Model
	if *cfgPath != "" {
		cfg, err = configs.LoadFile(*cfgPath)
	} else {
		cfg, err = configs.FromCheckpoint(*ckpt)
	}
	if err != nil {
		return exitError{code: 2, msg: err.Error()}
	}
	if err := ov.Apply(&cfg, env.environ); err != nil {
		return exitError{code: 2, msg: err.Error()}
	}
	factory, err := backendFactory(env.environ, *backendName, *cannHome, *precision)
	if err != nil {
		return exitError{code: 2, msg: err.Error()}
	}
	const blockSize = 16
	start := time.Now()
	m, err := model.Load(context.Background(), *ckpt, cfg, model.Options{
		Backend: *backendName, WorldSize: *world, BlockSize: blockSize, Logger: log, Factory: factory,
		NumBlocks: max(1, (len(ids)+blockSize-1)/blockSize),
	})
	if err != nil {
		return err
	}
	defer m.Close()
	log.Debug("model loaded", "took", time.Since(start))
	logits, err := m.Logits(context.Background(), ids)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(env.stdout)
	if err := writeLogitsJSON(w, logits); err != nil {
		return fmt.Errorf("write stdout: %w", err)
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("write stdout: %w", err)
	}
	return nil
}

// writeLogitsJSON streams {"logits": [[...], ...]}: each float32 in its shortest
// round-trip decimal form. NaN or Inf (not valid JSON) is an error.
func writeLogitsJSON(w *bufio.Writer, logits [][]float32) error {
	w.WriteString(`{"logits": [`)
	buf := make([]byte, 0, 32)
	for i, row := range logits {
		if i > 0 {
			w.WriteString(", ")
		}
		w.WriteByte('[')
		for j, v := range row {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return fmt.Errorf("logit at position %d, id %d is %v", i, j, v)
			}
			if j > 0 {
				w.WriteByte(',')
			}
			buf = strconv.AppendFloat(buf[:0], float64(v), 'g', -1, 32)
			w.Write(buf)
		}
		w.WriteByte(']')
	}
	_, err := w.WriteString("]}\n")
	return err
}

func parseIDs(s string) ([]int32, error) {
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("--ids is required (comma-separated token ids)")
	}
	var out []int32
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.ParseInt(strings.TrimSpace(f), 10, 32)
		if err != nil || v < 0 {
			return nil, fmt.Errorf("--ids: %q is not a token id", f)
		}
		out = append(out, int32(v))
	}
	return out, nil
}
