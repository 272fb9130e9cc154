package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/dsgate/dsgate/core/engine"
	"github.com/dsgate/dsgate/core/tokenizer"
	"github.com/dsgate/dsgate/extensions"
	"github.com/spf13/pflag"
)

// extFlags let batch and chat use WASM extensions, as a request's "extensions" field
// does on the HTTP API: a template module renders the prompt, a sampler module picks
// each token.
type extFlags struct {
	dir         *string
	template    *string
	sampler     *string
	samplerArgs *string
}

func addExtFlags(fs *pflag.FlagSet, env *cmdEnv) *extFlags {
	return &extFlags{
		dir:         fs.String("extensions-dir", env.environ["GATEWAY_EXTENSIONS_DIR"], "folder of registered WASM extensions (the one gateway serve uses)"),
		template:    fs.String("template-ext", "", "template extension: a registered name, or a .wasm file"),
		sampler:     fs.String("sampler-ext", "", "sampler extension: a registered name, or a .wasm file"),
		samplerArgs: fs.String("sampler-args", "", "JSON handed to the sampler extension's init"),
	}
}

// extensionSet is an opened host and the names to use from it.
type extensionSet struct {
	host              *extensions.Host
	template, sampler string
	args              json.RawMessage
	bos, eos          string
}

// open starts the WASM host when a template or sampler was asked for (nil otherwise).
func (x *extFlags) open(ctx context.Context, tok *tokenizer.Tokenizer, log *slog.Logger) (*extensionSet, error) {
	if *x.template == "" && *x.sampler == "" {
		return nil, nil
	}
	if *x.samplerArgs != "" && !json.Valid([]byte(*x.samplerArgs)) {
		return nil, fmt.Errorf("--sampler-args is not JSON: %q", *x.samplerArgs)
	}
	opt := extensions.Options{Dir: *x.dir, Logger: log}
	if *x.dir != "" {
		opt.CacheDir = filepath.Join(*x.dir, ".cache")
	}
	host, err := extensions.Open(ctx, opt)
	if err != nil {
		return nil, fmt.Errorf("extensions: %w", err)
	}
	set := &extensionSet{host: host, args: json.RawMessage(*x.samplerArgs),
		bos: tok.Decode([]int32{tok.BOS()}, false), eos: tok.Decode([]int32{tok.EOS()}, false)}
	if set.template, err = resolveExt(ctx, host, *x.template, "template"); err == nil {
		set.sampler, err = resolveExt(ctx, host, *x.sampler, "sampler")
	}
	if err != nil {
		_ = host.Close(context.Background())
		return nil, err
	}
	return set, nil
}

// resolveExt returns the name to call: a registered name as is, or a .wasm file loaded
// into the host under its base name.
func resolveExt(ctx context.Context, host *extensions.Host, ref, kind string) (string, error) {
	if ref == "" || !strings.HasSuffix(ref, ".wasm") {
		if ref != "" {
			if info, ok := host.Get(ref); !ok || info.Kind != kind {
				return "", fmt.Errorf("no %s extension %q in --extensions-dir", kind, ref)
			}
		}
		return ref, nil
	}
	wasm, err := os.ReadFile(ref)
	if err != nil {
		return "", fmt.Errorf("%s extension: %w", kind, err)
	}
	name := strings.TrimSuffix(filepath.Base(ref), ".wasm")
	if _, err := host.Add(ctx, name, kind, wasm); err != nil {
		return "", fmt.Errorf("%s extension %s: %w", kind, ref, err)
	}
	return name, nil
}

func (e *extensionSet) Close() error {
	if e == nil {
		return nil
	}
	return e.host.Close(context.Background())
}

// prompt renders msgs with the template extension when there is one, else the built-in
// chat template.
func (e *extensionSet) prompt(ctx context.Context, tok *tokenizer.Tokenizer, msgs []tokenizer.Message, addGen bool) (string, error) {
	if e == nil || e.template == "" {
		return tok.ApplyChatTemplate(msgs, addGen)
	}
	in := extensions.TemplateInput{BOSToken: e.bos, EOSToken: e.eos, AddGenerationPrompt: addGen}
	for _, m := range msgs {
		in.Messages = append(in.Messages, extensions.Message{Role: m.Role, Content: m.Content, ToolCallID: m.ToolCallID, Name: m.Name})
	}
	return e.host.RenderTemplate(ctx, e.template, in)
}

// attachSampler sets req.Policy to a fresh sampler instance when there is a sampler
// extension. The engine closes it when the request ends; the caller closes it when
// Submit fails.
func (e *extensionSet) attachSampler(ctx context.Context, req *engine.Request, seed uint64) error {
	if e == nil || e.sampler == "" {
		return nil
	}
	p, err := e.host.NewSampler(ctx, e.sampler, e.args, seed)
	if err != nil {
		return err
	}
	req.Policy = p
	return nil
}
