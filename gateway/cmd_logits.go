package main

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/dsgate/dsgate/cluster"
	"github.com/dsgate/dsgate/configs"
	"github.com/dsgate/dsgate/core/model"
)

// runLogits implements `gateway logits`: it runs the ids as one sequence and prints
// {"logits": [[...], ...]}, the float32 next-token logits (full vocabulary) at every
// position. Other tools check the model through this output: keep it stable.
func runLogits(env *cmdEnv, args []string) error {
	fs := newFlagSet(env, "logits", "logits --ckpt-path DIR [--config-path F] --ids 0,5,9 [--backend cpu] [--world-size N] [--nnodes N --node-rank R --dist-init-addr H:P] [--attn-impl absorb|naive] [--<config-field> V ...]")
	ckpt := fs.String("ckpt-path", "", "checkpoint folder (HF names: bf16/fp8; or DeepSeek names from convert)")
	cfgPath := fs.String("config-path", "", "model config (default: config.json of the checkpoint)")
	idsFlag := fs.String("ids", "", "comma-separated token ids")
	backendName := fs.String("backend", "cpu", "backend: cpu, reference or ascend")
	cannHome := fs.String("cann-home", env.environ["GATEWAY_CANN_HOME"], "CANN toolkit folder for --backend ascend (default ASCEND_TOOLKIT_HOME)")
	precision := fs.String("ascend-precision", "bf16", "with --backend ascend: bf16 or f32")
	world := fs.Int("world-size", 1, "ranks (1, 2, 4, 8)")
	getenv, atoi := envLookups(env.environ)
	dist := addDistFlags(fs, getenv, atoi)
	cpuf := addCPUFlags(fs, getenv, atoi)
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
	const blockSize = 16
	opt := model.Options{
		Backend: *backendName, WorldSize: *world, BlockSize: blockSize, Logger: log,
		NumBlocks: max(1, (len(ids)+blockSize-1)/blockSize),
	}
	if err := setCPUOptions(*backendName, *cpuf.threads, *cpuf.quantAct, &opt); err != nil {
		return exitError{code: 2, msg: err.Error()}
	}
	// Several nodes: every node runs this same command with its --node-rank; node 0
	// prints the logits, the others run its step and print nothing.
	ctx := context.Background()
	node, err := joinCluster(ctx, env.environ, stackOptions{Backend: *backendName, WorldSize: *world, CANNHome: *cannHome, Precision: *precision,
		BlockSize: blockSize, KVBlocks: opt.NumBlocks, NNodes: *dist.nnodes, NodeRank: *dist.nodeRank, DistInitAddr: *dist.initAddr, Worker: true}, cfg, &opt, log)
	if err != nil {
		return err
	}
	if node.leader == nil && node.follower == nil {
		if opt.Factory, err = backendFactory(env.environ, *backendName, *cannHome, *precision); err != nil {
			return exitError{code: 2, msg: err.Error()}
		}
	}
	start := time.Now()
	m, err := model.Load(ctx, *ckpt, cfg, opt)
	if err != nil {
		node.close()
		return err
	}
	defer m.Close()
	defer node.close()
	log.Debug("model loaded", "took", time.Since(start))
	var logits [][]float32
	switch {
	case node.follower != nil:
		return node.follower.Serve(ctx, m)
	case node.leader != nil:
		node.leader.Attach(m)
		logits, err = clusterLogits(ctx, node.leader, ids, blockSize, cfg.VocabSize)
	default:
		logits, err = m.Logits(ctx, ids)
	}
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

// clusterLogits is Model.Logits through the cluster leader: one fresh sequence with
// every position's logits, run on every node.
func clusterLogits(ctx context.Context, l *cluster.Leader, ids []int32, blockSize, vocab int) ([][]float32, error) {
	blocks := make([]int32, (len(ids)+blockSize-1)/blockSize)
	for i := range blocks {
		blocks[i] = int32(i)
	}
	res, err := l.Forward(ctx, []model.Seq{{Tokens: ids, Blocks: blocks, AllLogits: true}})
	if err != nil {
		return nil, err
	}
	out := make([][]float32, len(ids))
	for i := range out {
		out[i] = res[0][i*vocab : (i+1)*vocab : (i+1)*vocab]
	}
	return out, nil
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
