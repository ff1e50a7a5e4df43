package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/tandem-ha/tandem/connectors"
	"github.com/tandem-ha/tandem/connectors/sqlconn"
	"github.com/tandem-ha/tandem/internal/testenv"
)

func TestConnectorInitCreatesControlTable(t *testing.T) {
	testenv.SkipIfShort(t, "needs the local postgres and mariadb servers")
	for _, tc := range []struct {
		kind     string
		settings []string
	}{
		{"postgres", []string{"user=postgres", "database=test"}},
		{"mysql", []string{"user=root", "database=test"}},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			b := make([]byte, 4)
			rand.Read(b)
			table := "tdctl_cli_" + hex.EncodeToString(b)
			d, _ := sqlconn.ParseDialect(tc.kind)
			s := connectors.Settings{"control-table": table, "purge-after": "0"}
			for _, kv := range tc.settings {
				k, v, _ := strings.Cut(kv, "=")
				s[k] = v
			}
			c, err := sqlconn.Open(d, s, sqlconn.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := c.DB().PingContext(ctx); err != nil {
				testenv.Missing(t, "%s on 127.0.0.1 unreachable: %v", tc.kind, err)
			}
			defer c.DB().ExecContext(context.Background(), "DROP TABLE IF EXISTS "+table)

			args := []string{"connector", "init", "--kind", tc.kind, "--setting", "control-table=" + table}
			for _, kv := range tc.settings {
				args = append(args, "--setting", kv)
			}
			for range 2 { // idempotent
				var out, errOut bytes.Buffer
				if code := Execute(args, &out, &errOut); code != ExitOK {
					t.Fatalf("exit %d: %s", code, errOut.String())
				}
				if !strings.Contains(out.String(), table+" ready") {
					t.Fatalf("output %q", out.String())
				}
			}
			if err := c.Test(ctx); err != nil {
				t.Fatalf("control table not usable: %v", err)
			}
		})
	}
}

func TestConnectorUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"connector", "init"},
		{"connector", "init", "--kind", "oracle"},
		{"connector", "init", "--kind", "postgres", "--setting", "novalue"},
		{"connector", "init", "--kind", "postgres", "--setting", "database=x", "--setting", "control-table=a;b"},
		{"connector", "buffer", "--kind", "postgres", "--setting", "database=x"},
	} {
		var out, errOut bytes.Buffer
		if code := Execute(args, &out, &errOut); code != ExitUsage {
			t.Errorf("%v: exit %d (%s), want %d", args, code, errOut.String(), ExitUsage)
		}
	}
	var out, errOut bytes.Buffer
	if code := Execute([]string{"connector", "init", "--kind", "mysql", "--print"}, &out, &errOut); code != ExitOK || !strings.Contains(out.String(), "CREATE TABLE IF NOT EXISTS `tandem_control`") {
		t.Errorf("--print: %d %q %q", code, out.String(), errOut.String())
	}
}

func TestConnectorTestCommand(t *testing.T) {
	dir := t.TempDir()
	var out, errOut bytes.Buffer
	if code := Execute([]string{"connector", "test", "--kind", "file", "--setting", "dir=" + dir}, &out, &errOut); code != ExitOK || !strings.Contains(out.String(), "file endpoint ok") {
		t.Fatalf("file: %d %q %q", code, out.String(), errOut.String())
	}
	out.Reset()
	errOut.Reset()
	code := Execute([]string{"connector", "test", "--kind", "file", "--setting", "dir=/nonexistent/tandem", "--setting", "password=hunter2"}, &out, &errOut)
	if code != ExitFailed || strings.Contains(out.String()+errOut.String(), "hunter2") {
		t.Fatalf("missing dir: %d %q %q", code, out.String(), errOut.String())
	}
	if code := Execute([]string{"connector", "test", "--kind", "ldap"}, &out, &errOut); code != ExitUsage {
		t.Fatalf("unknown kind: exit %d", code)
	}
}
