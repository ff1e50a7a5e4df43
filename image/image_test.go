package image

import (
	"bufio"
	"os"
	"strings"
	"testing"

	"github.com/tandem-ha/tandem/internal/daemon"
)

// TestUnitCommandsExist: every tandemd command the unit runs is one
// tandemd has (a renamed subcommand must not break images silently).
func TestUnitCommandsExist(t *testing.T) {
	f, err := os.Open("tandemd.service")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		i := strings.Index(line, "/usr/sbin/tandemd ")
		if i < 0 || strings.HasPrefix(line, "#") {
			continue
		}
		args := strings.Fields(line[i+len("/usr/sbin/tandemd "):])
		var out, errb strings.Builder
		code := daemon.Main(append([]string{args[0], "--help"}, args[1:]...), &out, &errb)
		if code != 0 {
			t.Errorf("%s: tandemd %s --help exits %d: %s", strings.SplitN(line, "=", 2)[0], args[0], code, errb.String())
		}
		n++
	}
	if n != 3 {
		t.Errorf("found %d tandemd commands in the unit, want 3 (check-config, run, cleanup)", n)
	}
}
