package wip

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/tandem-ha/tandem/internal/durable"
)

// BackupManifest is BACKUP.json.
type BackupManifest struct {
	Format  int       `json:"format"` // 1
	Created time.Time `json:"created"`
	Node    string    `json:"node,omitempty"`
	Epoch   uint64    `json:"epoch"`
	LSN     uint64    `json:"lsn"`
	// Checksum is the rolling checksum at LSN (hex), as in the marker.
	Checksum string `json:"checksum"`
	Bytes    int64  `json:"bytes"` // size of the backup's files
}

// Backup is one complete backup.
type Backup struct {
	Path string
	BackupManifest
}

const (
	backupManifest = "BACKUP.json"
	backupPrefix   = "wip-"
	backupPartial  = ".partial-"
	backupFormat   = 1
	partialGrace   = 30 * time.Minute
)

// ErrBackup is wrapped by the errors of Backup, ListBackups and Restore.
var ErrBackup = errors.New("wip: backup")

// ErrBackupInconsistent: Backup refused a store whose snapshot transfer is
// not complete (its data is no state the pair ever had).
var ErrBackupInconsistent = errors.New("the store is inconsistent (a snapshot transfer is not complete)")

// Backup writes a backup of the store under parent (created if missing) and
// returns it. node is recorded in the manifest. It runs beside commits and
// replication; a store that is Inconsistent (mid-snapshot) is refused: its
// data is not a state the pair ever had.
func (s *Store) Backup(parent, node string) (Backup, error) {
	s.backupMu.Lock()
	defer s.backupMu.Unlock()
	s.mu.Lock()
	inc, closed := s.inconsistent, s.closed
	s.mu.Unlock()
	if closed {
		return Backup{}, ErrClosed
	}
	if inc {
		return Backup{}, fmt.Errorf("%w: %w", ErrBackup, ErrBackupInconsistent)
	}
	if s.o.FS != vfs.Default {
		return Backup{}, fmt.Errorf("%w: the store is not on the operating system's file system", ErrBackup)
	}
	if err := os.MkdirAll(parent, 0o750); err != nil {
		return Backup{}, fmt.Errorf("%w: %v", ErrBackup, err)
	}
	now := s.clk.Now().UTC()
	tmp := filepath.Join(parent, fmt.Sprintf("%s%s-%d", backupPartial, now.Format("20060102T150405.000Z"), os.Getpid()))
	if err := s.db.Checkpoint(tmp, pebble.WithFlushedWAL()); err != nil {
		_ = os.RemoveAll(tmp)
		return Backup{}, fmt.Errorf("%w: checkpoint into %s: %v", ErrBackup, tmp, err)
	}
	fail := func(err error) (Backup, error) {
		_ = os.RemoveAll(tmp)
		return Backup{}, fmt.Errorf("%w: %v", ErrBackup, err)
	}
	epoch, lsn, csum, err := readMarker(tmp, s.po)
	if err != nil {
		return fail(err)
	}
	size, err := dirSize(tmp)
	if err != nil {
		return fail(err)
	}
	m := BackupManifest{Format: backupFormat, Created: now, Node: node, Epoch: epoch, LSN: lsn,
		Checksum: fmt.Sprintf("%016x", csum), Bytes: size}
	b, _ := json.MarshalIndent(m, "", "  ")
	if err := durable.WriteFile(filepath.Join(tmp, backupManifest), append(b, '\n'), 0o640); err != nil {
		return fail(err)
	}
	if err := durable.SyncDir(tmp); err != nil {
		return fail(err)
	}
	name := fmt.Sprintf("%s%s-e%d-l%d", backupPrefix, now.Format("20060102T150405.000Z"), epoch, lsn)
	final := filepath.Join(parent, name)
	if err := os.Rename(tmp, final); err != nil {
		return fail(err)
	}
	if err := durable.SyncDir(parent); err != nil {
		return Backup{}, fmt.Errorf("%w: %v", ErrBackup, err)
	}
	return Backup{Path: final, BackupManifest: m}, nil
}

// openReadOnly opens the store files in dir read-only, with the options
// the store uses (po; nil: the defaults).
func openReadOnly(dir string, po *pebble.Options) (*pebble.DB, error) {
	if po == nil {
		po = defaultPebbleOptions()
	}
	o := po.Clone()
	o.ReadOnly, o.FS, o.Logger = true, vfs.Default, quietLogger{}
	// The store's compaction scheduler serves its own DB only (one per
	// pebble.Open): pebble makes a default one for this.
	o.Experimental.CompactionScheduler = nil
	// Corruption is an error of the read that meets it, not a fatal log
	// (pebble's default): verifyAll reports it as the reason.
	o.EventListener = &pebble.EventListener{DataCorruption: func(pebble.DataCorruptionInfo) {}}
	o.EnsureDefaults()
	return pebble.Open(dir, o)
}

// readMarker opens a checkpoint read-only and returns its marker.
func readMarker(dir string, po *pebble.Options) (epoch, lsn, csum uint64, err error) {
	db, err := openReadOnly(dir, po)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("open %s: %v", dir, err)
	}
	defer db.Close()
	v, c, err := db.Get(keyMarker)
	if errors.Is(err, pebble.ErrNotFound) {
		return 0, 0, 0, nil // an empty store
	}
	if err != nil {
		return 0, 0, 0, fmt.Errorf("%s: marker: %v", dir, err)
	}
	defer c.Close()
	if len(v) != 24 {
		return 0, 0, 0, fmt.Errorf("%s: %w: marker has %d bytes", dir, ErrCorrupt, len(v))
	}
	return binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:]), binary.BigEndian.Uint64(v[16:]), nil
}

type quietLogger struct{}

func (quietLogger) Infof(string, ...any)  {}
func (quietLogger) Errorf(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	panic(fmt.Sprintf(format, args...))
}

// ReadBackup reads the manifest of the backup in dir.
func ReadBackup(dir string) (Backup, error) {
	b, err := os.ReadFile(filepath.Join(dir, backupManifest))
	if err != nil {
		return Backup{}, fmt.Errorf("%w: %s is not a backup: %v", ErrBackup, dir, err)
	}
	var m BackupManifest
	if err := json.Unmarshal(b, &m); err != nil {
		return Backup{}, fmt.Errorf("%w: %s: %v", ErrBackup, filepath.Join(dir, backupManifest), err)
	}
	if m.Format != backupFormat {
		return Backup{}, fmt.Errorf("%w: %s: format %d, this build reads %d", ErrBackup, filepath.Join(dir, backupManifest), m.Format, backupFormat)
	}
	return Backup{Path: dir, BackupManifest: m}, nil
}

// ListBackups returns the complete backups under parent, oldest first.
// Directories that are not backups are left out; a wip-* directory whose
// manifest cannot be read is an error naming it.
func ListBackups(parent string) ([]Backup, error) {
	ents, err := os.ReadDir(parent)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBackup, err)
	}
	var out []Backup
	for _, e := range ents {
		if !e.IsDir() || !strings.HasPrefix(e.Name(), backupPrefix) {
			continue
		}
		b, err := ReadBackup(filepath.Join(parent, e.Name()))
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	slices.SortFunc(out, func(a, b Backup) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.Path, b.Path)
	})
	return out, nil
}

// PruneBackups deletes all but the keep newest backups under parent, and
// the partial ones last modified more than partialGrace before the newest
// complete backup (abandoned by a crash; the grace spares one that another
// node sharing the directory is still writing). It returns the paths it
// removed.
func PruneBackups(parent string, keep int) ([]string, error) {
	if keep < 1 {
		return nil, fmt.Errorf("%w: keep %d: must be at least 1", ErrBackup, keep)
	}
	bs, err := ListBackups(parent)
	if err != nil || len(bs) == 0 {
		return nil, err
	}
	var removed []string
	for _, b := range bs[:max(len(bs)-keep, 0)] {
		if err := os.RemoveAll(b.Path); err != nil {
			return removed, fmt.Errorf("%w: %v", ErrBackup, err)
		}
		removed = append(removed, b.Path)
	}
	newest := bs[len(bs)-1]
	ents, err := os.ReadDir(parent)
	if err != nil {
		return removed, fmt.Errorf("%w: %v", ErrBackup, err)
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), backupPartial) {
			continue
		}
		fi, err := e.Info()
		if err != nil || !fi.ModTime().Before(newest.Created.Add(-partialGrace)) {
			continue
		}
		p := filepath.Join(parent, e.Name())
		if err := os.RemoveAll(p); err != nil {
			return removed, fmt.Errorf("%w: %v", ErrBackup, err)
		}
		removed = append(removed, p)
	}
	return removed, nil
}

// Restore copies the backup in src into dst, which must not exist or be
// empty, after reading every key of the copy (pebble verifies each block's
// checksum) and checking its marker against the manifest. The store must
// not be open at dst.
func Restore(src, dst string) (Backup, error) {
	b, err := ReadBackup(src)
	if err != nil {
		return Backup{}, err
	}
	if ents, err := os.ReadDir(dst); err == nil && len(ents) > 0 {
		return Backup{}, fmt.Errorf("%w: restore into %s: the directory is not empty (move the old store away first)", ErrBackup, dst)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return Backup{}, fmt.Errorf("%w: %v", ErrBackup, err)
	}
	tmp := strings.TrimRight(dst, "/") + ".restoring"
	if err := os.RemoveAll(tmp); err != nil {
		return Backup{}, fmt.Errorf("%w: %v", ErrBackup, err)
	}
	fail := func(err error) (Backup, error) {
		_ = os.RemoveAll(tmp)
		return Backup{}, fmt.Errorf("%w: restore %s: %v", ErrBackup, src, err)
	}
	if err := copyDir(src, tmp); err != nil {
		return fail(err)
	}
	if err := os.Remove(filepath.Join(tmp, backupManifest)); err != nil {
		return fail(err)
	}
	epoch, lsn, csum, err := readMarker(tmp, nil)
	if err != nil {
		return fail(err)
	}
	if got := fmt.Sprintf("%016x", csum); epoch != b.Epoch || lsn != b.LSN || got != b.Checksum {
		return fail(fmt.Errorf("the copy holds epoch %d LSN %d checksum %s, the manifest says epoch %d LSN %d checksum %s",
			epoch, lsn, got, b.Epoch, b.LSN, b.Checksum))
	}
	if err := verifyAll(tmp); err != nil {
		return fail(err)
	}
	_ = os.Remove(dst) // empty or absent
	if err := os.Rename(tmp, dst); err != nil {
		return fail(err)
	}
	if err := durable.SyncDir(filepath.Dir(dst)); err != nil {
		return Backup{}, fmt.Errorf("%w: %v", ErrBackup, err)
	}
	return b, nil
}

// verifyAll reads every key and value of the store in dir.
func verifyAll(dir string) error {
	db, err := openReadOnly(dir, nil)
	if err != nil {
		return fmt.Errorf("open %s: %v", dir, err)
	}
	defer db.Close()
	it, err := db.NewIter(nil)
	if err != nil {
		return err
	}
	for it.First(); it.Valid(); it.Next() {
		if _, err := it.ValueAndErr(); err != nil {
			_ = it.Close()
			return fmt.Errorf("reading %q: %v", it.Key(), err)
		}
	}
	if err := it.Close(); err != nil {
		return fmt.Errorf("reading the copy: %v", err)
	}
	return nil
}

func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err == nil {
			n += fi.Size()
		}
		return err
	})
	return n, err
}

// copyDir copies the regular files of src (no subdirectories: a
// checkpoint has none) into a new directory dst, each synced.
func copyDir(src, dst string) error {
	if err := os.Mkdir(dst, 0o750); err != nil {
		return err
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			return fmt.Errorf("%s: unexpected entry %s in a backup", src, e.Name())
		}
		if err := copyFile(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			return err
		}
	}
	return durable.SyncDir(dst)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}
