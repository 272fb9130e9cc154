package extensions

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// diskStore persists modules as <dir>/<name>.wasm plus <dir>/<name>.json (the Info). The .json
// is written last and removed first, so it marks a complete entry; a stray .wasm is ignored.
// An empty dir keeps nothing on disk.
type diskStore struct {
	dir string
}

func openDiskStore(dir string) (*diskStore, error) {
	if dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("extensions: create %s: %w", dir, err)
		}
	}
	return &diskStore{dir: dir}, nil
}

func (s *diskStore) list() ([]Info, error) {
	if s.dir == "" {
		return nil, nil
	}
	paths, err := filepath.Glob(filepath.Join(s.dir, "*.json"))
	if err != nil {
		return nil, fmt.Errorf("extensions: list %s: %w", s.dir, err)
	}
	sort.Strings(paths)
	var out []Info
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("extensions: read %s: %w", p, err)
		}
		var info Info
		if err := json.Unmarshal(b, &info); err != nil || info.Name+".json" != filepath.Base(p) {
			return nil, fmt.Errorf("extensions: %s is not a module record (%v)", p, err)
		}
		out = append(out, info)
	}
	return out, nil
}

func (s *diskStore) read(info Info) ([]byte, error) {
	bin, err := os.ReadFile(filepath.Join(s.dir, info.Name+".wasm"))
	if err != nil {
		return nil, fmt.Errorf("extensions: read module %q: %w", info.Name, err)
	}
	sum := sha256.Sum256(bin)
	if got := hex.EncodeToString(sum[:]); !strings.EqualFold(got, info.SHA256) {
		return nil, fmt.Errorf("extensions: module %q: sha256 %s does not match its record %s", info.Name, got, info.SHA256)
	}
	return bin, nil
}

func (s *diskStore) write(info Info, bin []byte) error {
	if s.dir == "" {
		return nil
	}
	meta, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return fmt.Errorf("extensions: encode record of %q: %w", info.Name, err)
	}
	if err := writeFileAtomic(filepath.Join(s.dir, info.Name+".wasm"), bin); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(s.dir, info.Name+".json"), meta)
}

func (s *diskStore) remove(name string) error {
	if s.dir == "" {
		return nil
	}
	var errs []error
	for _, ext := range []string{".json", ".wasm"} {
		if err := os.Remove(filepath.Join(s.dir, name+ext)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("extensions: remove %q: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// writeFileAtomic writes path through a synced temporary file and a rename.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return fmt.Errorf("extensions: write %s: %w", path, err)
	}
	_, werr := f.Write(data)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		_ = os.Remove(f.Name())
		return fmt.Errorf("extensions: write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		_ = os.Remove(f.Name())
		return fmt.Errorf("extensions: write %s: %w", path, err)
	}
	return nil
}
