package durable

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFileAndSyncDir(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := WriteFile(p, []byte("one two"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(p, []byte("three"), 0o640); err != nil { // truncates
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil || string(b) != "three" {
		t.Fatalf("read back %q, %v", b, err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v", fi.Mode().Perm())
	}
	if err := SyncDir(dir); err != nil {
		t.Fatal(err)
	}
	if err := SyncDir(filepath.Join(dir, "missing")); err == nil {
		t.Error("SyncDir of a missing directory succeeded")
	}
	if err := WriteFile(filepath.Join(dir, "missing", "f"), nil, 0o640); err == nil {
		t.Error("WriteFile into a missing directory succeeded")
	}
}
