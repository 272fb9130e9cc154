package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/dsgate/dsgate/ascend"
	"github.com/dsgate/dsgate/cluster"
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
	dist       distFlags
	cpu        cpuFlags
	overrides  *configs.Overrides
}

// cpuFlags tune the CPU backend.
type cpuFlags struct {
	threads  *int
	quantAct *bool
}

func addCPUFlags(fs *pflag.FlagSet, getenv func(k, def string) string, atoi func(k string, def int) int) cpuFlags {
	quant, _ := strconv.ParseBool(getenv("GATEWAY_CPU_QUANTIZE_ACTIVATIONS", "false"))
	return cpuFlags{
		threads: fs.Int("cpu-threads", atoi("GATEWAY_CPU_THREADS", 0), "with --backend cpu: threads per rank inside one op (0 = cores / world size) (env GATEWAY_CPU_THREADS)"),
		quantAct: fs.Bool("cpu-quantize-activations", quant, "with --backend cpu: run int4 matmuls on int8 activations with integer dot products, "+
			"like llama.cpp (about 2x faster decode; results move by the activations' rounding) (env GATEWAY_CPU_QUANTIZE_ACTIVATIONS)"),
	}
}

// setCPUOptions puts the CPU backend's flags into opt, refusing them for another
// backend.
func setCPUOptions(backendName string, threads int, quantAct bool, opt *model.Options) error {
	if backendName != "" && backendName != "cpu" && (threads != 0 || quantAct) {
		return fmt.Errorf("--cpu-threads and --cpu-quantize-activations apply to --backend cpu, not %s", backendName)
	}
	if threads < 0 {
		return fmt.Errorf("--cpu-threads %d: want 0 (automatic) or more", threads)
	}
	opt.Threads, opt.QuantizeActivations = threads, quantAct
	return nil
}

// distFlags place a process in a multi-node deployment (SGLang's flags): run the same
// command on every node, changing only --node-rank.
type distFlags struct {
	nnodes   *int
	nodeRank *int
	initAddr *string
}

func addDistFlags(fs *pflag.FlagSet, getenv func(k, def string) string, atoi func(k string, def int) int) distFlags {
	return distFlags{
		nnodes:   fs.Int("nnodes", atoi("GATEWAY_NNODES", 1), "nodes that together run the model's --world-size ranks (needs --backend ascend) (env GATEWAY_NNODES)"),
		nodeRank: fs.Int("node-rank", atoi("GATEWAY_NODE_RANK", 0), "this node's index in [0, nnodes): 0 serves, the others run the leader's steps (env GATEWAY_NODE_RANK)"),
		initAddr: fs.String("dist-init-addr", getenv("GATEWAY_DIST_INIT_ADDR", ""), "with --nnodes > 1: host:port where node 0 listens for the other nodes (env GATEWAY_DIST_INIT_ADDR)"),
	}
}

// envLookups returns flag-default helpers reading GATEWAY_* variables from environ.
func envLookups(environ map[string]string) (getenv func(k, def string) string, atoi func(k string, def int) int) {
	getenv = func(k, def string) string {
		if v, ok := environ[k]; ok && v != "" {
			return v
		}
		return def
	}
	atoi = func(k string, def int) int {
		if n, err := strconv.Atoi(environ[k]); err == nil {
			return n
		}
		return def
	}
	return getenv, atoi
}

func addModelFlags(fs *pflag.FlagSet, env *cmdEnv) *modelFlags {
	getenv, atoi := envLookups(env.environ)
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
		dist:       addDistFlags(fs, getenv, atoi),
		cpu:        addCPUFlags(fs, getenv, atoi),
		overrides:  configs.RegisterOverrides(fs),
	}
}

// options turns the flags into the loader's options.
func (mf *modelFlags) options() stackOptions {
	return stackOptions{
		CkptPath: *mf.ckptPath, ConfigPath: *mf.configPath, Backend: *mf.backend, WorldSize: *mf.worldSize,
		Tokenizer: *mf.tokenizer, CANNHome: *mf.cannHome, Precision: *mf.precision, BlockSize: *mf.blockSize, KVBlocks: *mf.kvBlocks,
		MaxQueue: *mf.maxQueue, ModelName: *mf.modelName,
		NNodes: *mf.dist.nnodes, NodeRank: *mf.dist.nodeRank, DistInitAddr: *mf.dist.initAddr,
		CPUThreads: *mf.cpu.threads, QuantizeActivations: *mf.cpu.quantAct,
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
	// NNodes > 1 spreads the WorldSize ranks over that many processes (nodes);
	// NodeRank is this one's index and DistInitAddr node 0's rendezvous address.
	NNodes, NodeRank int
	DistInitAddr     string
	// CPUThreads and QuantizeActivations tune the CPU backend (model.Options).
	CPUThreads          int
	QuantizeActivations bool
	// Worker lets a node other than 0 load (gateway serve: it then runs the leader's
	// steps instead of an engine).
	Worker bool
}

// stack is the in-process inference stack a subcommand runs on. On a follower node of
// a multi-node deployment (follower != nil) there is no engine: the node runs the
// leader's steps (follower.Serve).
type stack struct {
	cfg      configs.Model
	model    *model.Model
	eng      *engine.Engine
	tok      *tokenizer.Tokenizer
	leader   *cluster.Leader   // node 0 of several: the engine's model
	follower *cluster.Follower // node > 0
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
	if err := setCPUOptions(o.Backend, o.CPUThreads, o.QuantizeActivations, &opt); err != nil {
		return nil, err
	}
	node, err := joinCluster(ctx, environ, o, cfg, &opt, log)
	if err != nil {
		return nil, err
	}
	if node.follower == nil && node.leader == nil {
		if opt.Factory, err = backendFactory(environ, o.Backend, o.CANNHome, o.Precision); err != nil {
			return nil, err
		}
	}
	start := time.Now()
	m, err := model.Load(ctx, o.CkptPath, cfg, opt)
	if err != nil {
		node.close()
		return nil, fmt.Errorf("load model: %w", err)
	}
	log.Info("model loaded", "name", o.ModelName, "ckpt", o.CkptPath, "backend", o.Backend, "world_size", o.WorldSize,
		"layers", cfg.NLayers, "dtype", cfg.Dtype, "seconds", time.Since(start).Seconds())
	if node.follower != nil {
		return &stack{cfg: cfg, model: m, tok: tok, follower: node.follower}, nil
	}
	var em engine.Model = m
	if node.leader != nil {
		node.leader.Attach(m)
		em = node.leader
	}
	eng, err := engine.New(em, engine.Options{
		MaxBatchSize:  cfg.MaxBatchSize,
		MaxQueue:      o.MaxQueue,
		EOS:           []int32{tok.EOS()},
		NewTextStream: func() engine.TextStream { return tok.NewStreamDecoder(true) },
		Logger:        log,
	})
	if err != nil {
		node.close()
		m.Close()
		return nil, fmt.Errorf("start engine: %w", err)
	}
	return &stack{cfg: cfg, model: m, eng: eng, tok: tok, leader: node.leader}, nil
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

// Close stops the engine (on node 0 of several, then says goodbye to the other nodes)
// and frees the model.
func (s *stack) Close() error {
	var errs []error
	if s.eng != nil {
		errs = append(errs, s.eng.Close())
	}
	if s.leader != nil {
		errs = append(errs, s.leader.Close())
	}
	if s.follower != nil {
		errs = append(errs, s.follower.Close())
	}
	return errors.Join(append(errs, s.model.Close())...)
}

// clusterNode is this process's place in a multi-node deployment (both nil: one node).
type clusterNode struct {
	leader   *cluster.Leader
	follower *cluster.Follower
}

func (n clusterNode) close() {
	if n.leader != nil {
		_ = n.leader.Close()
	}
	if n.follower != nil {
		_ = n.follower.Close()
	}
}

// checkDist validates the multi-node options.
func checkDist(o stackOptions) error {
	switch {
	case o.NNodes < 1:
		return fmt.Errorf("--nnodes %d must be at least 1", o.NNodes)
	case o.NNodes == 1 && o.NodeRank != 0:
		return fmt.Errorf("--node-rank %d needs --nnodes > 1", o.NodeRank)
	case o.NNodes == 1:
		return nil
	case o.Backend != "ascend":
		return fmt.Errorf("--nnodes %d needs --backend ascend (ranks on several nodes talk through HCCL; the %s backend runs on one machine)", o.NNodes, o.Backend)
	case o.DistInitAddr == "":
		return errors.New("--nnodes > 1 needs --dist-init-addr host:port (where node 0 listens; reachable from every node)")
	case o.NodeRank < 0 || o.NodeRank >= o.NNodes:
		return fmt.Errorf("--node-rank %d outside [0, --nnodes %d)", o.NodeRank, o.NNodes)
	case o.WorldSize%o.NNodes != 0 || o.WorldSize < o.NNodes:
		return fmt.Errorf("--world-size %d is not divisible by --nnodes %d", o.WorldSize, o.NNodes)
	case o.NodeRank > 0 && !o.Worker:
		return fmt.Errorf("--node-rank %d: nodes other than 0 run `gateway serve` with the leader's model flags (they serve the leader's steps)", o.NodeRank)
	}
	return nil
}

// joinCluster runs the multi-node rendezvous when o.NNodes > 1 and points opt at this
// node's ranks: [NodeRank·W/NNodes, +W/NNodes), joined over HCCL by the root info that
// node 0 made and sent.
func joinCluster(ctx context.Context, environ map[string]string, o stackOptions, cfg configs.Model, opt *model.Options, log *slog.Logger) (clusterNode, error) {
	if o.NNodes == 0 {
		o.NNodes = 1
	}
	if err := checkDist(o); err != nil {
		return clusterNode{}, err
	}
	if o.NNodes == 1 {
		return clusterNode{}, nil
	}
	if o.CANNHome == "" {
		o.CANNHome = ascend.DefaultHome(environ)
	}
	aopt := ascend.Options{CANNHome: o.CANNHome, Precision: o.Precision}
	local := o.WorldSize / o.NNodes
	ccfg := cluster.Config{NNodes: o.NNodes, NodeRank: o.NodeRank, Addr: o.DistInitAddr, WorldSize: o.WorldSize,
		Fingerprint: fingerprint(cfg, o), Logger: log}
	var node clusterNode
	var root []byte
	var err error
	if o.NodeRank == 0 {
		node.leader, root, err = cluster.Lead(ctx, ccfg, func() ([]byte, error) { return ascend.NewRootInfo(aopt) })
	} else {
		node.follower, root, err = cluster.Follow(ctx, ccfg)
	}
	if err != nil {
		return node, err
	}
	opt.RankBase, opt.LocalRanks = o.NodeRank*local, local
	opt.Factory = ascend.NodeFactory(aopt, root, opt.RankBase, local)
	log.Info("cluster formed", "nnodes", o.NNodes, "node_rank", o.NodeRank, "ranks", fmt.Sprintf("[%d,%d)", opt.RankBase, opt.RankBase+local),
		"world_size", o.WorldSize)
	return node, nil
}

// fingerprint summarizes what a node loads; every node of a cluster must agree on it:
// the resolved model config, backend, precision and KV-cache geometry.
func fingerprint(cfg configs.Model, o stackOptions) string {
	b, err := json.Marshal(cfg)
	if err != nil {
		b = fmt.Appendf(nil, "%+v", cfg)
	}
	prec := o.Precision
	if prec == "" {
		prec = "bf16"
	}
	h := sha256.New()
	h.Write(b)
	fmt.Fprintf(h, "|%s|%s|%d|%d", o.Backend, prec, o.BlockSize, o.KVBlocks)
	return fmt.Sprintf("config+flags %x", h.Sum(nil)[:8])
}
