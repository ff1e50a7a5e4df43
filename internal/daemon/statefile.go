package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// The node's pair state (epoch, maintenance, last role) is one small JSON
// file in the data directory, replaced atomically: written to a temporary
// file, fsynced, renamed over the old one, and the directory fsynced, so
// a crash leaves either the old or the new state, never a torn one. It is
// written before any outward act that depends on it (I1, I3).
const stateFile = "pair-state.json"

// saveState makes v durable as dir/pair-state.json.
func saveState(dir string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, stateFile+".tmp*")
	if err != nil {
		return fmt.Errorf("persist pair state: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename: already gone
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("persist pair state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("persist pair state: fsync: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("persist pair state: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, stateFile)); err != nil {
		return fmt.Errorf("persist pair state: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("persist pair state: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("persist pair state: fsync %s: %w", dir, err)
	}
	return nil
}

// loadState reads dir/pair-state.json into v; a missing file leaves v
// untouched and returns false (a new node).
func loadState(dir string, v any) (bool, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("load pair state: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("load pair state %s: %w (the file is corrupt; refusing to guess the epoch)", filepath.Join(dir, stateFile), err)
	}
	return true, nil
}
