package safetensors

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
)

// IndexFile is the Hugging Face index of a sharded checkpoint.
const IndexFile = "model.safetensors.index.json"

// Layout says how a checkpoint folder's tensors are split over files.
type Layout string

// The layouts Open recognises, in the order it tries them.
const (
	LayoutHFIndex Layout = "hf-index" // model.safetensors.index.json + the shards it names
	LayoutMP      Layout = "mp"       // DeepSeek's model{rank}-mp{N}.safetensors, one file per rank
	LayoutSingle  Layout = "single"   // one model.safetensors
	LayoutGlob    Layout = "glob"     // any other set of *.safetensors files with distinct tensor names
)

// Entry lists one tensor of a set.
type Entry struct {
	TensorInfo
	File string // base name of the file holding it
	Rank int    // rank for LayoutMP, else 0
}

// Set is an opened checkpoint folder. For LayoutMP every rank's file holds its own
// shard of the same names: use RankTensor; for the other layouts names are unique and
// Tensor finds them in whichever file holds them.
type Set struct {
	Dir    string
	Layout Layout
	MP     int     // number of ranks for LayoutMP, else 1
	Files  []*File // sorted by name; for LayoutMP, Files[r] is rank r's file
	byName map[string]*File
}

var mpName = regexp.MustCompile(`^model(\d+)-mp(\d+)\.safetensors$`)

type hfIndex struct {
	Metadata  map[string]any    `json:"metadata"`
	WeightMap map[string]string `json:"weight_map"`
}

// Open opens the checkpoint folder dir (see Layout). Every file is mapped and its
// header validated; the caller must Close the set.
func Open(dir string) (*Set, error) {
	s := &Set{Dir: dir, MP: 1, byName: map[string]*File{}}
	ok, err := s.openIndex()
	if err != nil || ok {
		return s.orClose(err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("safetensors: open checkpoint: %w", err)
	}
	var all, mp []string
	mpN := -1
	for _, e := range ents {
		if e.IsDir() || filepath.Ext(e.Name()) != ".safetensors" {
			continue
		}
		all = append(all, e.Name())
		if m := mpName.FindStringSubmatch(e.Name()); m != nil {
			n, _ := strconv.Atoi(m[2])
			if mpN != -1 && n != mpN {
				return nil, fmt.Errorf("safetensors: %s: mixed model-parallel sizes mp%d and mp%d", dir, mpN, n)
			}
			mpN = n
			mp = append(mp, e.Name())
		}
	}
	switch {
	case len(all) == 0:
		return nil, fmt.Errorf("safetensors: %s: no %s and no *.safetensors files", dir, IndexFile)
	case len(mp) > 0:
		return s.orClose(s.openMP(mp, mpN))
	case len(all) == 1 && all[0] == "model.safetensors":
		s.Layout = LayoutSingle
	default:
		s.Layout = LayoutGlob
	}
	sort.Strings(all)
	for _, name := range all {
		f, err := OpenFile(filepath.Join(dir, name))
		if err != nil {
			return s.orClose(err)
		}
		s.Files = append(s.Files, f)
		for _, t := range f.Header.Tensors {
			if prev, dup := s.byName[t.Name]; dup {
				return s.orClose(fmt.Errorf("safetensors: tensor %q is in both %s and %s", t.Name, filepath.Base(prev.Path), name))
			}
			s.byName[t.Name] = f
		}
	}
	return s, nil
}

func (s *Set) orClose(err error) (*Set, error) {
	if err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Set) openIndex() (bool, error) {
	path := filepath.Join(s.Dir, IndexFile)
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return true, fmt.Errorf("safetensors: %w", err)
	}
	var idx hfIndex
	if err := json.Unmarshal(raw, &idx); err != nil {
		return true, fmt.Errorf("safetensors: %s: %w", path, err)
	}
	if len(idx.WeightMap) == 0 {
		return true, fmt.Errorf("safetensors: %s: empty or missing weight_map", path)
	}
	s.Layout = LayoutHFIndex
	byFile := map[string]*File{}
	var names []string
	for _, fn := range idx.WeightMap {
		if _, ok := byFile[fn]; !ok {
			byFile[fn] = nil
			names = append(names, fn)
		}
	}
	sort.Strings(names)
	for _, fn := range names {
		if filepath.Base(fn) != fn {
			return true, fmt.Errorf("safetensors: %s: shard name %q must be a plain file name", path, fn)
		}
		f, err := OpenFile(filepath.Join(s.Dir, fn))
		if err != nil {
			return true, fmt.Errorf("%w (listed in %s)", err, IndexFile)
		}
		byFile[fn] = f
		s.Files = append(s.Files, f)
	}
	for name, fn := range idx.WeightMap {
		f := byFile[fn]
		if _, ok := f.Header.Lookup(name); !ok {
			return true, fmt.Errorf("safetensors: %s maps tensor %q to %s, which does not hold it", IndexFile, name, fn)
		}
		s.byName[name] = f
	}
	return true, nil
}

func (s *Set) openMP(names []string, n int) error {
	s.Layout, s.MP = LayoutMP, n
	if n < 1 || len(names) != n {
		return fmt.Errorf("safetensors: %s: found %d of the %d files model{0..%d}-mp%d.safetensors", s.Dir, len(names), n, n-1, n)
	}
	s.Files = make([]*File, n)
	for r := range n {
		fn := fmt.Sprintf("model%d-mp%d.safetensors", r, n)
		f, err := OpenFile(filepath.Join(s.Dir, fn))
		if err != nil {
			return err
		}
		s.Files[r] = f
	}
	for _, t := range s.Files[0].Header.Tensors {
		s.byName[t.Name] = s.Files[0]
	}
	return nil
}

// Close unmaps every file of the set.
func (s *Set) Close() error {
	var errs []error
	for _, f := range s.Files {
		errs = append(errs, f.Close())
	}
	return errors.Join(errs...)
}

// Tensor returns the named tensor. For LayoutMP with more than one rank it is an error
// (names repeat across ranks): use RankTensor.
func (s *Set) Tensor(name string) (Tensor, error) {
	if s.Layout == LayoutMP && s.MP > 1 {
		return Tensor{}, fmt.Errorf("safetensors: %s is sharded over %d ranks: ask for tensor %q of one rank", s.Dir, s.MP, name)
	}
	f, ok := s.byName[name]
	if !ok {
		return Tensor{}, fmt.Errorf("safetensors: %s: no tensor %q", s.Dir, name)
	}
	return f.Tensor(name)
}

// Has reports whether the set holds the named tensor (in rank 0 for LayoutMP).
func (s *Set) Has(name string) bool { _, ok := s.byName[name]; return ok }

// RankTensor returns rank r's shard of the named tensor; for layouts other than
// LayoutMP only rank 0 exists and it is the same as Tensor.
func (s *Set) RankTensor(r int, name string) (Tensor, error) {
	if s.Layout != LayoutMP {
		if r != 0 {
			return Tensor{}, fmt.Errorf("safetensors: %s is not rank-sharded: no rank %d", s.Dir, r)
		}
		return s.Tensor(name)
	}
	if r < 0 || r >= s.MP {
		return Tensor{}, fmt.Errorf("safetensors: %s: rank %d out of range [0, %d)", s.Dir, r, s.MP)
	}
	return s.Files[r].Tensor(name)
}

// FileOf returns the file holding the named tensor (rank 0's for LayoutMP).
func (s *Set) FileOf(name string) (*File, bool) { f, ok := s.byName[name]; return f, ok }

// Entries lists every tensor of the set, by file then data offset (every rank's for
// LayoutMP).
func (s *Set) Entries() []Entry {
	var out []Entry
	for i, f := range s.Files {
		r := 0
		if s.Layout == LayoutMP {
			r = i
		}
		for _, t := range f.Header.Tensors {
			if s.Layout == LayoutHFIndex {
				if g := s.byName[t.Name]; g != f {
					continue // present in the file but not mapped to it by the index
				}
			}
			out = append(out, Entry{TensorInfo: t, File: filepath.Base(f.Path), Rank: r})
		}
	}
	return out
}

// Names returns the distinct tensor names, sorted (rank 0's for LayoutMP).
func (s *Set) Names() []string {
	out := make([]string, 0, len(s.byName))
	for n := range s.byName {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
