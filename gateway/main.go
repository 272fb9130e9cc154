// Command gateway is dsgate's single binary: it serves DeepSeek-V3 over an
// OpenAI-compatible HTTP API (serve), runs prompts offline (batch), chats on the
// console (chat), converts checkpoints (convert), generates load (bench), writes a demo
// checkpoint (init-demo) and exposes the engine's building blocks for checking
// (logits, tokenize, detokenize, ascend-check).
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/spf13/pflag"
)

// command is one subcommand: run gets the arguments after the subcommand's name.
type command struct {
	summary string
	run     func(env *cmdEnv, args []string) error
}

// cmdEnv is what every subcommand receives instead of reaching for globals.
type cmdEnv struct {
	stdin   io.Reader
	stdout  io.Writer
	stderr  io.Writer
	environ map[string]string
}

func commands() map[string]command {
	return map[string]command{
		"serve":        {"serve the OpenAI-compatible HTTP API and the chat page", runServe},
		"batch":        {"run one prompt per line of a file, offline", runBatch},
		"chat":         {"interactive console chat with history", runChat},
		"convert":      {"convert and quantize checkpoints (fp8-bf16, bf16-bf16, bf16-int8, bf16-int4)", runConvert},
		"bench":        {"load generator against a running gateway", runBench},
		"init-demo":    {"write a small random-weight demo checkpoint", runInitDemo},
		"logits":       {"print next-token logits at every position as JSON", runLogits},
		"tokenize":     {"text on stdin -> JSON array of token ids", runTokenize},
		"detokenize":   {"JSON array of token ids on stdin -> text", runDetokenize},
		"ascend-check": {"run every Ascend operator against the CPU reference", runAscendCheck},
	}
}

func main() {
	os.Exit(run(os.Args[1:], &cmdEnv{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, environ: environMap(os.Environ())}))
}

// run dispatches to a subcommand and returns the process exit status.
func run(args []string, env *cmdEnv) int {
	cmds := commands()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(env.stderr, cmds)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	if args[0] == "version" || args[0] == "--version" {
		fmt.Fprintln(env.stdout, "gateway (dsgate)", version())
		return 0
	}
	c, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(env.stderr, "gateway: unknown command %q\n\n", args[0])
		usage(env.stderr, cmds)
		return 2
	}
	if err := c.run(env, args[1:]); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		var ee exitError
		if errors.As(err, &ee) {
			if ee.msg != "" {
				fmt.Fprintf(env.stderr, "gateway %s: %s\n", args[0], ee.msg)
			}
			return ee.code
		}
		fmt.Fprintf(env.stderr, "gateway %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

// exitError carries a specific exit status out of a subcommand.
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return e.msg }

func usage(w io.Writer, cmds map[string]command) {
	fmt.Fprintln(w, "usage: gateway <command> [flags]\n\ncommands:")
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-13s %s\n", n, cmds[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'gateway <command> --help' for a command's flags.")
}

func environMap(kv []string) map[string]string {
	m := make(map[string]string, len(kv))
	for _, e := range kv {
		k, v, _ := strings.Cut(e, "=")
		m[k] = v
	}
	return m
}
