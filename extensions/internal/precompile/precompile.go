// Package precompile fills a wazero compilation cache with extension modules, compiled exactly
// as extensions.Host compiles them. `make -C extensions/examples` runs it (through TestFill, so
// that the cache carries the same wazero version tag as the extensions test binaries, which
// then load the examples instead of compiling them under the race detector, many times slower).
package precompile

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/dsgate/dsgate/extensions"
)

// Fill compiles each module file into cacheDir. Modules of either kind are accepted.
func Fill(ctx context.Context, cacheDir string, paths []string) error {
	h, err := extensions.Open(ctx, extensions.Options{CacheDir: cacheDir, PoolSize: 1})
	if err != nil {
		return fmt.Errorf("precompile: %w", err)
	}
	defer h.Close(ctx)
	for _, path := range paths {
		bin, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("precompile: %w", err)
		}
		name := strings.TrimSuffix(filepath.Base(path), ".wasm")
		_, err = h.Add(ctx, name, extensions.KindSampler, bin)
		if err != nil {
			if _, err2 := h.Add(ctx, name, extensions.KindTemplate, bin); err2 != nil {
				return fmt.Errorf("precompile %s: %w", path, errors.Join(err, err2))
			}
		}
	}
	return nil
}
