package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/dsgate/dsgate/ascend"
	"github.com/dsgate/dsgate/configs"
	"github.com/dsgate/dsgate/core/backend"
	"github.com/dsgate/dsgate/core/engine"
	"github.com/dsgate/dsgate/core/model"
	"github.com/dsgate/dsgate/core/tokenizer"
	"github.com/spf13/pflag"
)

// modelFlags are the flags of every subcommand that runs the model in-process (serve,
// batch, chat): where the checkpoint is, how to run it, and one override flag per
// config field.
type modelFlags struct {
	ckptPath   *string
	configPath *string
	backend    *string
	worldSize  *int
	tokenizer  *string
	blockSize  *int
	kvBlocks   *int
	maxQueue   *int
	cannHome   *string
	precision  *string
	modelName  *string
	overrides  *configs.Overrides
}

func addModelFlags(fs *pflag.FlagSet, env *cmdEnv) *modelFlags {
	getenv := func(k, def string) string {
		if v, ok := env.environ[k]; ok && v != "" {
			return v
		}
		return def
	}
	atoi := func(k string, def int) int {
		if n, err := strconv.Atoi(env.environ[k]); err == nil {
			return n
		}
		return def
	}
	return &modelFlags{
		ckptPath:   fs.String("ckpt-path", getenv("GATEWAY_CKPT_PATH", ""), "checkpoint folder (HF or DeepSeek-converted) (env GATEWAY_CKPT_PATH)"),
		configPath: fs.String("config-path", getenv("GATEWAY_CONFIG_PATH", ""), "model config JSON (default: the checkpoint's config.json) (env GATEWAY_CONFIG_PATH)"),
		backend:    fs.String("backend", getenv("GATEWAY_BACKEND", "cpu"), "compute backend: cpu or ascend (env GATEWAY_BACKEND)"),
		worldSize:  fs.Int("world-size", atoi("GATEWAY_WORLD_SIZE", 1), "ranks (1, 2, 4 or 8) (env GATEWAY_WORLD_SIZE)"),
		tokenizer:  fs.String("tokenizer", getenv("GATEWAY_TOKENIZER", ""), "folder with tokenizer.json (default: the checkpoint folder, then the dsgate cache)"),
		blockSize:  fs.Int("kv-block-size", atoi("GATEWAY_KV_BLOCK_SIZE", 16), "tokens per KV-cache block"),
		kvBlocks:   fs.Int("kv-blocks", atoi("GATEWAY_KV_BLOCKS", 0), "KV-cache blocks per layer (0 = max_batch_size*max_seq_len worth)"),
		maxQueue:   fs.Int("max-queue", atoi("GATEWAY_MAX_QUEUE", 256), "requests waiting for a batch slot before new ones get 'overloaded'"),
		cannHome:   fs.String("cann-home", getenv("GATEWAY_CANN_HOME", ""), "CANN toolkit folder for --backend ascend (default ASCEND_TOOLKIT_HOME)"),
		precision:  fs.String("ascend-precision", getenv("GATEWAY_ASCEND_PRECISION", "bf16"), "with --backend ascend: bf16 (NPU speed) or f32 (equal to the CPU backend, for checking)"),
		modelName:  fs.String("model-name", getenv("GATEWAY_MODEL_NAME", "deepseek_v3"), "the model's name in logs and answers (the original launcher's flag)"),
		overrides:  configs.RegisterOverrides(fs),
	}
}

// options turns the flags into the loader's options.
func (mf *modelFlags) options() stackOptions {
	return stackOptions{
		CkptPath: *mf.ckptPath, ConfigPath: *mf.configPath, Backend: *mf.backend, WorldSize: *mf.worldSize,
		Tokenizer: *mf.tokenizer, CANNHome: *mf.cannHome, Precision: *mf.precision, BlockSize: *mf.blockSize, KVBlocks: *mf.kvBlocks,
		MaxQueue: *mf.maxQueue, ModelName: *mf.modelName,
	}
}

// load builds the in-process stack from the flags.
func (mf *modelFlags) load(ctx context.Context, env *cmdEnv, log *slog.Logger) (*stack, error) {
	return loadStack(ctx, env.environ, mf.options(), mf.overrides, log)
}

// stackOptions say where the model is and how to run it (serve, batch and chat).
type stackOptions struct {
	CkptPath, ConfigPath string
	Backend              string // cpu, reference or ascend
	WorldSize            int
	Tokenizer            string // folder; default: the checkpoint's, then the dsgate cache
	CANNHome             string // for ascend; default ASCEND_TOOLKIT_HOME
	Precision            string // for ascend: bf16 (default) or f32
	BlockSize, KVBlocks  int    // KV cache geometry (0 = the model's defaults)
	MaxQueue             int
	ModelName            string
}

// stack is the in-process inference stack a subcommand runs on.
type stack struct {
	cfg   configs.Model
	model *model.Model
	eng   *engine.Engine
	tok   *tokenizer.Tokenizer
}

// modelConfig resolves the model configuration: ConfigPath or the checkpoint's
// config.json, then GATEWAY_* variables, then flags.
func modelConfig(environ map[string]string, o stackOptions, overrides *configs.Overrides) (configs.Model, error) {
	if o.CkptPath == "" {
		return configs.Model{}, errors.New("--ckpt-path is required (a checkpoint folder; `gateway init-demo DIR` makes a small one)")
	}
	var cfg configs.Model
	var err error
	if o.ConfigPath != "" {
		cfg, err = configs.LoadFile(o.ConfigPath)
	} else {
		cfg, err = configs.FromCheckpoint(o.CkptPath)
	}
	if err != nil {
		return cfg, err
	}
	if err := overrides.Apply(&cfg, environ); err != nil {
		return cfg, err
	}
	if err := cfg.Validate(); err != nil {
		return cfg, err
	}
	return cfg, cfg.CheckWorldSize(max(1, o.WorldSize))
}

// loadStack builds the stack: tokenizer, model (weights on every rank) and engine.
func loadStack(ctx context.Context, environ map[string]string, o stackOptions, overrides *configs.Overrides, log *slog.Logger) (*stack, error) {
	cfg, err := modelConfig(environ, o, overrides)
	if err != nil {
		return nil, err
	}
	tokDir := o.Tokenizer
	if tokDir == "" {
		tokDir = tokenizer.DefaultDir(environ)
		if _, err := os.Stat(filepath.Join(o.CkptPath, "tokenizer.json")); err == nil {
			tokDir = o.CkptPath
		}
	}
	tok, err := tokenizer.Load(tokDir)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	opt := model.Options{
		Backend:   o.Backend,
		WorldSize: o.WorldSize,
		BlockSize: o.BlockSize,
		NumBlocks: o.KVBlocks,
		AttnImpl:  cfg.AttnImpl,
		Logger:    log,
	}
	if opt.Factory, err = backendFactory(environ, o.Backend, o.CANNHome, o.Precision); err != nil {
		return nil, err
	}
	start := time.Now()
	m, err := model.Load(ctx, o.CkptPath, cfg, opt)
	if err != nil {
		return nil, fmt.Errorf("load model: %w", err)
	}
	log.Info("model loaded", "name", o.ModelName, "ckpt", o.CkptPath, "backend", o.Backend, "world_size", o.WorldSize,
		"layers", cfg.NLayers, "dtype", cfg.Dtype, "seconds", time.Since(start).Seconds())
	eng, err := engine.New(m, engine.Options{
		MaxBatchSize:  cfg.MaxBatchSize,
		MaxQueue:      o.MaxQueue,
		EOS:           []int32{tok.EOS()},
		NewTextStream: func() engine.TextStream { return tok.NewStreamDecoder(true) },
		Logger:        log,
	})
	if err != nil {
		m.Close()
		return nil, fmt.Errorf("start engine: %w", err)
	}
	return &stack{cfg: cfg, model: m, eng: eng, tok: tok}, nil
}

// backendFactory picks the rank backends: nil for the built-in cpu and reference
// backends (core/model builds them), or the Ascend factory, which core may not import.
func backendFactory(environ map[string]string, name, cannHome, precision string) (backend.Factory, error) {
	switch name {
	case "", "cpu", "reference":
		return nil, nil
	case "ascend":
		if cannHome == "" {
			cannHome = ascend.DefaultHome(environ)
		}
		return ascend.New(ascend.Options{CANNHome: cannHome, Precision: precision}), nil
	}
	return nil, fmt.Errorf("--backend %q: want cpu, reference or ascend", name)
}

// Close stops the engine and frees the model.
func (s *stack) Close() error {
	return errors.Join(s.eng.Close(), s.model.Close())
}
