package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/lmittmann/tint"
	"github.com/spf13/pflag"
	"golang.org/x/term"
)

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "dev"
}

// newFlagSet returns a subcommand's flag set: GNU-style long flags, interspersed with
// positional arguments, errors returned (not exit).
func newFlagSet(env *cmdEnv, name, usageLine string) *pflag.FlagSet {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(env.stderr)
	fs.SortFlags = false
	fs.Usage = func() {
		fmt.Fprintf(env.stderr, "usage: gateway %s\n\nflags:\n", usageLine)
		fs.PrintDefaults()
	}
	return fs
}

// logFlags are the logging flags every subcommand has.
type logFlags struct {
	level  *string
	format *string
}

func addLogFlags(fs *pflag.FlagSet, env *cmdEnv) logFlags {
	lvl := env.environ["GATEWAY_LOG_LEVEL"]
	if lvl == "" {
		lvl = "info"
	}
	return logFlags{
		level:  fs.String("log-level", lvl, "log level: debug, info, warn, error (env GATEWAY_LOG_LEVEL)"),
		format: fs.String("log-format", env.environ["GATEWAY_LOG_FORMAT"], "log format: text (tint), json; default text on a terminal, json otherwise"),
	}
}

// logger builds the slog logger: tint on a terminal, JSON otherwise.
func (lf logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(*lf.level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", *lf.level)
	}
	format := strings.ToLower(*lf.format)
	if format == "" {
		format = "json"
		if isTerminal(w) {
			format = "text"
		}
	}
	switch format {
	case "text":
		return slog.New(tint.NewTextHandler(w, &tint.Options{Level: level, TimeFormat: time.TimeOnly, NoColor: !isTerminal(w)})), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level})), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", *lf.format)
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
