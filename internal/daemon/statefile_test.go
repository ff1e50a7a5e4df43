package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type testState struct {
	Epoch       uint64
	Maintenance bool
}

func TestStateFileRoundTripAndCorruption(t *testing.T) {
	dir := t.TempDir()
	var s testState
	if ok, err := loadState(dir, &s); ok || err != nil {
		t.Fatalf("fresh dir: ok=%v err=%v", ok, err)
	}
	if err := saveState(dir, testState{Epoch: 7, Maintenance: true}); err != nil {
		t.Fatal(err)
	}
	if err := saveState(dir, testState{Epoch: 9}); err != nil {
		t.Fatal(err)
	}
	if ok, err := loadState(dir, &s); !ok || err != nil || s.Epoch != 9 || s.Maintenance {
		t.Fatalf("load = %+v ok=%v err=%v", s, ok, err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("temporary files left: %v", ents)
	}
	os.WriteFile(filepath.Join(dir, stateFile), []byte("{\"Epoch\": 1"), 0o600)
	if _, err := loadState(dir, &s); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Errorf("torn file: err = %v, want a refusal", err)
	}
}
