package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/caarlos0/env/v11"
	"github.com/spf13/pflag"

	"github.com/dsgate/dsgate/cluster"
	"github.com/dsgate/dsgate/configs"
	"github.com/dsgate/dsgate/extensions"
	"github.com/dsgate/dsgate/gateway/api"
	"github.com/dsgate/dsgate/gateway/api/adapt"
	"github.com/dsgate/dsgate/sessions"
	"github.com/dsgate/dsgate/web"
)

// serveOptions are gateway serve's settings. Each comes from its flag, else its
// GATEWAY_-prefixed environment variable, else the default; model fields come from the
// config file with flags and GATEWAY_* variables on top (configs.Overrides).
type serveOptions struct {
	CkptPath      string        `env:"CKPT_PATH"`
	ConfigPath    string        `env:"CONFIG_PATH"`
	ModelName     string        `env:"MODEL_NAME"`
	Backend       string        `env:"BACKEND"`
	WorldSize     int           `env:"WORLD_SIZE"`
	Addr          string        `env:"ADDR"`
	RedisURL      string        `env:"REDIS_URL"`
	SessionTTL    time.Duration `env:"SESSION_TTL"`
	ExtensionsDir string        `env:"EXTENSIONS_DIR"`
	DrainTimeout  time.Duration `env:"DRAIN_TIMEOUT"`
	MaxQueue      int           `env:"MAX_QUEUE"`
	MaxConcurrent int           `env:"MAX_CONCURRENT"`
	MaxBodyBytes  int64         `env:"MAX_BODY_BYTES"`
	CORSOrigins   []string      `env:"CORS_ORIGINS" envSeparator:","`
	Tokenizer     string        `env:"TOKENIZER"`
	CANNHome      string        `env:"CANN_HOME"`
	Precision     string        `env:"ASCEND_PRECISION"`
	KVBlockSize   int           `env:"KV_BLOCK_SIZE"`
	KVBlocks      int           `env:"KV_BLOCKS"`
	NNodes        int           `env:"NNODES"`
	NodeRank      int           `env:"NODE_RANK"`
	DistInitAddr  string        `env:"DIST_INIT_ADDR"`
	// Secrets come only from the environment, never from flags (visible in ps).
	APIKeys  []string `env:"API_KEYS" envSeparator:","`
	AdminKey string   `env:"ADMIN_KEY"`
}

func defaultServeOptions() serveOptions {
	return serveOptions{ModelName: "deepseek_v3", Backend: "cpu", WorldSize: 1, NNodes: 1, Addr: "127.0.0.1:8080",
		KVBlockSize: 16, SessionTTL: sessions.DefaultTTL, DrainTimeout: 30 * time.Second, MaxQueue: 256, MaxBodyBytes: 4 << 20}
}

func runServe(cenv *cmdEnv, args []string) error {
	o, fs, overrides, lf, err := parseServe(cenv, args)
	if err != nil {
		return err
	}
	log, err := lf.logger(cenv.stderr)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return serve(ctx, cenv, o, fs, overrides, log)
}

// parseServe resolves serve's options: defaults, then GATEWAY_* variables, then flags.
func parseServe(cenv *cmdEnv, args []string) (serveOptions, *pflag.FlagSet, *configs.Overrides, logFlags, error) {
	o := defaultServeOptions()
	if err := env.ParseWithOptions(&o, env.Options{Prefix: configs.EnvPrefix, Environment: cenv.environ}); err != nil {
		return o, nil, nil, logFlags{}, fmt.Errorf("environment: %w", err)
	}
	fs := newFlagSet(cenv, "serve", "serve --ckpt-path DIR [--config-path FILE] [--model-name NAME] [--addr HOST:PORT] [flags]")
	fs.StringVar(&o.CkptPath, "ckpt-path", o.CkptPath, "checkpoint folder (safetensors + config.json) (env GATEWAY_CKPT_PATH)")
	fs.StringVar(&o.ConfigPath, "config-path", o.ConfigPath, "model config file (default: the checkpoint's config.json)")
	fs.StringVar(&o.ModelName, "model-name", o.ModelName, "model id served by /v1/models")
	fs.StringVar(&o.Backend, "backend", o.Backend, "compute backend: cpu or ascend")
	fs.IntVar(&o.WorldSize, "world-size", o.WorldSize, "tensor-parallel ranks")
	fs.StringVar(&o.Addr, "addr", o.Addr, "listen address (host:port; port 0 picks a free one)")
	fs.StringVar(&o.RedisURL, "redis-url", o.RedisURL, "Redis URL for sessions (redis:// or rediss://); empty keeps sessions in memory")
	fs.DurationVar(&o.SessionTTL, "session-ttl", o.SessionTTL, "sessions unused this long are deleted")
	fs.StringVar(&o.ExtensionsDir, "extensions-dir", o.ExtensionsDir, "folder of uploaded WASM extensions (empty: in memory only)")
	fs.DurationVar(&o.DrainTimeout, "drain-timeout", o.DrainTimeout, "on SIGTERM/SIGINT, how long running streams may finish")
	fs.IntVar(&o.MaxQueue, "max-queue", o.MaxQueue, "requests waiting for the engine before 503 overloaded")
	fs.IntVar(&o.MaxConcurrent, "max-concurrent", o.MaxConcurrent, "generation requests in flight before 503 overloaded (0 = max-queue + max-batch-size)")
	fs.Int64Var(&o.MaxBodyBytes, "max-body-bytes", o.MaxBodyBytes, "largest JSON request body (413 above)")
	fs.StringSliceVar(&o.CORSOrigins, "cors-origins", o.CORSOrigins, "browser origins allowed by CORS (comma-separated, * for any)")
	fs.StringVar(&o.Tokenizer, "tokenizer", o.Tokenizer, "tokenizer folder (default: the checkpoint folder if it has tokenizer.json, else the fetched DeepSeek-V3 tokenizer)")
	fs.StringVar(&o.CANNHome, "cann-home", o.CANNHome, "CANN toolkit folder for --backend ascend (default ASCEND_TOOLKIT_HOME)")
	fs.StringVar(&o.Precision, "ascend-precision", o.Precision, "with --backend ascend: bf16 (NPU speed) or f32 (equal to the CPU backend, for checking)")
	fs.IntVar(&o.KVBlockSize, "kv-block-size", o.KVBlockSize, "tokens per KV-cache block")
	fs.IntVar(&o.KVBlocks, "kv-blocks", o.KVBlocks, "KV-cache blocks per layer (0 = max_batch_size*max_seq_len worth)")
	fs.IntVar(&o.NNodes, "nnodes", o.NNodes, "nodes that together run the --world-size ranks (needs --backend ascend); run the same command on each, changing --node-rank")
	fs.IntVar(&o.NodeRank, "node-rank", o.NodeRank, "this node's index in [0, nnodes): 0 serves HTTP, the others run node 0's steps (no HTTP listener)")
	fs.StringVar(&o.DistInitAddr, "dist-init-addr", o.DistInitAddr, "with --nnodes > 1: host:port where node 0 listens for the other nodes")
	overrides := configs.RegisterOverrides(fs)
	lf := addLogFlags(fs, cenv)
	if err := fs.Parse(args); err != nil {
		return o, nil, nil, lf, err
	}
	if fs.NArg() > 0 {
		return o, nil, nil, lf, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return o, fs, overrides, lf, nil
}

func serve(ctx context.Context, cenv *cmdEnv, o serveOptions, fs *pflag.FlagSet, overrides *configs.Overrides, log *slog.Logger) error {
	st, err := loadStack(ctx, cenv.environ, stackOptions{
		CkptPath: o.CkptPath, ConfigPath: o.ConfigPath, Backend: o.Backend, WorldSize: o.WorldSize,
		Tokenizer: o.Tokenizer, CANNHome: o.CANNHome, Precision: o.Precision, BlockSize: o.KVBlockSize, KVBlocks: o.KVBlocks,
		MaxQueue: o.MaxQueue, ModelName: o.ModelName, NNodes: o.NNodes, NodeRank: o.NodeRank, DistInitAddr: o.DistInitAddr, Worker: true,
	}, overrides, log)
	if err != nil && o.NNodes > 1 && ctx.Err() != nil {
		log.Info("stopped by signal while the nodes were meeting", "err", err)
		return nil
	}
	if err != nil {
		return err
	}
	defer st.Close()
	if st.follower != nil {
		return serveSteps(ctx, st, o, log)
	}
	cfg, tok, eng := st.cfg, st.tok, st.eng

	var store sessions.Store
	sopt := sessions.Options{TTL: o.SessionTTL}
	if o.RedisURL != "" {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		rs, err := sessions.NewRedis(rctx, o.RedisURL, sopt)
		cancel()
		if err != nil {
			return fmt.Errorf("sessions: %w", err)
		}
		store = rs
		log.Info("sessions in Redis", "url", redactURL(o.RedisURL))
	} else {
		store = sessions.NewMemory(sopt)
		log.Info("sessions in memory (set --redis-url to share them between gateways and keep them across restarts)")
	}
	defer store.Close()

	xopt := extensions.Options{Dir: o.ExtensionsDir, Logger: log}
	if o.ExtensionsDir != "" {
		xopt.CacheDir = filepath.Join(o.ExtensionsDir, ".cache")
	}
	host, err := extensions.Open(ctx, xopt)
	if err != nil {
		return fmt.Errorf("extensions: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = host.Close(cctx)
	}()

	maxConc := o.MaxConcurrent
	if maxConc == 0 {
		maxConc = o.MaxQueue + cfg.MaxBatchSize
	}
	acfg := api.Config{
		Engine: adapt.Engine(eng), Tokenizer: adapt.Tokenizer(tok), Sessions: adapt.Sessions(store), Extensions: adapt.Extensions(host),
		ModelName: o.ModelName, MaxSeqLen: eng.MaxSeqLen(), APIKeys: o.APIKeys, AdminKey: o.AdminKey,
		CORSOrigins: o.CORSOrigins, MaxBodyBytes: o.MaxBodyBytes, MaxConcurrent: maxConc, Static: web.FS(), Logger: log,
	}
	if st.leader != nil {
		acfg.ModelHealth = st.leader.Err // a lost node: not ready
	}
	srv, err := api.New(acfg)
	if err != nil {
		return err
	}
	if srv.OpenDevMode() {
		log.Warn("!!! OPEN DEV MODE: no GATEWAY_API_KEYS or GATEWAY_ADMIN_KEY set; every request is accepted without a key, and anyone who can reach the port can upload extensions !!!")
	}
	if addr := listenAddr(o.Addr, fs.Changed("addr"), srv.OpenDevMode()); addr != o.Addr {
		log.Warn("open dev mode binds loopback only; pass --addr explicitly to listen elsewhere", "asked", o.Addr, "addr", addr)
		o.Addr = addr
	}
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	log.Info("serving", "addr", ln.Addr().String(), "model", o.ModelName, "max_seq_len", eng.MaxSeqLen())

	select {
	case err := <-errc:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down: no new connections; running streams may finish", "drain_timeout", o.DrainTimeout)
	dctx, cancel := context.WithTimeout(context.Background(), o.DrainTimeout)
	defer cancel()
	if err := hs.Shutdown(dctx); err != nil {
		log.Warn("drain timeout reached: ending the remaining streams", "err", err)
		ectx, ecancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := srv.Drain(ectx); err != nil {
			log.Warn("streams did not end", "err", err)
		}
		// the cut streams now write their final error event and [DONE]; let them
		if err := hs.Shutdown(ectx); err != nil {
			_ = hs.Close()
		}
		ecancel()
	}
	log.Info("stopped")
	return nil
}

// serveSteps is gateway serve on a node other than 0: no HTTP listener; it runs node 0's
// engine steps on its ranks until node 0 says goodbye, goes away, or a signal comes.
func serveSteps(ctx context.Context, st *stack, o serveOptions, log *slog.Logger) error {
	base, n := st.model.LocalRanks()
	log.Info("serving steps for the leader", "node_rank", o.NodeRank, "leader", o.DistInitAddr, "ranks", fmt.Sprintf("[%d,%d)", base, base+n))
	err := st.follower.Serve(ctx, st.model)
	switch {
	case ctx.Err() != nil:
		log.Info("stopped by signal")
		return nil
	case errors.Is(err, cluster.ErrLeaderGone):
		log.Warn("the leader went away; stopping", "err", err)
		return nil
	case err != nil:
		return err
	}
	log.Info("the leader ended the session; stopping")
	return nil
}

// listenAddr is the address to listen on: in open dev mode a non-loopback address is
// replaced by loopback unless it came from the --addr flag itself.
func listenAddr(addr string, fromFlag, openDev bool) string {
	if !openDev || fromFlag || isLoopback(addr) {
		return addr
	}
	return net.JoinHostPort("127.0.0.1", portOf(addr))
}

func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func portOf(addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "8080"
	}
	return port
}

// redactURL hides a password in a Redis URL for logs.
func redactURL(u string) string {
	if at := strings.LastIndex(u, "@"); at > 0 {
		if i := strings.Index(u, "://"); i >= 0 && i+3 < at {
			return u[:i+3] + "***" + u[at:]
		}
	}
	return u
}
