package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tandem-ha/tandem/internal/durable"
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
	if err := replaceFile(dir, stateFile, append(b, '\n')); err != nil {
		return fmt.Errorf("persist pair state: %w", err)
	}
	return nil
}

// replaceFile makes b durable as dir/name: written and fsynced as
// dir/name.tmp (durable.WriteFile), renamed over the old one, and the
// directory fsynced. Each file has one writer at a time (the data
// directory is tandemd's alone), so a fixed temporary name is enough; one
// a crash left behind is truncated by the next write.
func replaceFile(dir, name string, b []byte) error {
	tmp := filepath.Join(dir, name+".tmp")
	if err := durable.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if err := durable.SyncDir(dir); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// bootIDFile holds the last heartbeat boot id this node used.
const bootIDFile = "boot-id"

// nextBootID returns this run's heartbeat boot id and makes it durable
// before any heartbeat carries it. The peer refuses a boot id smaller than
// the last it saw (a replay), so it must grow from run to run: the wall
// clock's nanoseconds, but at least one more than the last run's, so that
// a clock stepped back across a restart (an appliance without a battery-
// backed clock, booting before NTP) cannot silence the node. An unreadable
// file is reported (warning) and replaced: the clock alone is the old
// behaviour. err: the new id could not be made durable.
func nextBootID(dir string, now time.Time) (id uint64, warning string, err error) {
	id = uint64(now.UnixNano())
	path := filepath.Join(dir, bootIDFile)
	b, rerr := os.ReadFile(path)
	switch {
	case errors.Is(rerr, fs.ErrNotExist):
	case rerr != nil:
		warning = fmt.Sprintf("read %s: %v; using the clock", path, rerr)
	default:
		last, perr := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if perr != nil {
			warning = fmt.Sprintf("%s is corrupt (%v); using the clock", path, perr)
		} else {
			id = max(id, last+1)
		}
	}
	if err := persistBootID(dir, id); err != nil {
		return 0, warning, err
	}
	return id, warning, nil
}

// persistBootID makes id the boot id the next run starts above: at start,
// and when the heartbeat raises this run's past the one the peer last
// accepted from this node (heartbeat.Config.PersistBootID).
func persistBootID(dir string, id uint64) error {
	if err := replaceFile(dir, bootIDFile, []byte(strconv.FormatUint(id, 10)+"\n")); err != nil {
		return fmt.Errorf("persist boot id in %s: %w", filepath.Join(dir, bootIDFile), err)
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
