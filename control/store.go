package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Store keeps the control plane's state as one JSON file per record under
// a directory: <dir>/<kind>/<id>.json. A write goes to a temporary file
// that is synced and renamed over the old one (then the directory is
// synced), so a crash leaves either the old record or the new one, never a
// torn file.
type Store struct {
	dir string
	mu  sync.Mutex
}

var storeID = regexp.MustCompile(`^[A-Za-z0-9._-]{1,200}$`)

// OpenStore opens (creating it if needed) a store in dir.
func OpenStore(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("store %s: %w", dir, err)
	}
	return &Store{dir: dir}, nil
}

// Put writes a record atomically: a proto message as protojson, anything
// else as encoding/json.
func (s *Store) Put(kind, id string, v any) error {
	if !storeID.MatchString(kind) || !storeID.MatchString(id) {
		return fmt.Errorf("store: invalid record name %q/%q", kind, id)
	}
	var (
		b   []byte
		err error
	)
	if m, ok := v.(proto.Message); ok {
		b, err = protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(m)
	} else {
		b, err = json.MarshalIndent(v, "", "  ")
	}
	if err != nil {
		return fmt.Errorf("store %s/%s: encode: %w", kind, id, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	dir := filepath.Join(s.dir, kind)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("store %s/%s: %w", kind, id, err)
	}
	tmp, err := os.CreateTemp(dir, "."+id+".*.tmp")
	if err != nil {
		return fmt.Errorf("store %s/%s: %w", kind, id, err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("store %s/%s: write: %w", kind, id, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("store %s/%s: sync: %w", kind, id, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("store %s/%s: %w", kind, id, err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, id+".json")); err != nil {
		return fmt.Errorf("store %s/%s: rename: %w", kind, id, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("store %s/%s: %w", kind, id, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("store %s/%s: sync directory: %w", kind, id, err)
	}
	return nil
}

// Get reads one record written with a non-proto value into v. It reports
// false when there is none.
func (s *Store) Get(kind, id string, v any) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, err := os.ReadFile(filepath.Join(s.dir, kind, id+".json"))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("store %s/%s: %w", kind, id, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("store %s/%s: decode: %w", kind, id, err)
	}
	return true, nil
}

// List reads every record of a kind, in id order, decoding each into a
// message from newMsg. A record that does not decode is an error naming
// its file: the store never guesses.
func (s *Store) List(kind string, newMsg func() proto.Message) ([]proto.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	dir := filepath.Join(s.dir, kind)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", kind, err)
	}
	var names []string
	for _, e := range entries {
		if n := e.Name(); strings.HasSuffix(n, ".json") && !strings.HasPrefix(n, ".") {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	out := make([]proto.Message, 0, len(names))
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			return nil, fmt.Errorf("store %s/%s: %w", kind, n, err)
		}
		m := newMsg()
		if err := protojson.Unmarshal(b, m); err != nil {
			return nil, fmt.Errorf("store %s/%s: decode: %w", kind, n, err)
		}
		out = append(out, m)
	}
	return out, nil
}
