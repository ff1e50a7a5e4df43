// Package services starts PRIVATE endpoint servers (PostgreSQL, MariaDB,
// NATS with JetStream) inside a lab host, normally the lab's "svc" host
// (192.0.2.20), for chaos tests in which daemons running in hosts a and b
// reach their endpoints over the lab LAN. The machine's own servers listen
// on the root namespace's loopback, which no lab namespace can reach.
//
// Each server gets its own data directory under a directory the caller
// gives (a fresh temporary directory per test), listens on the host's LAN
// address only, and is stopped by PID (Stop, or the lab's Close: the lab
// records every process it started). Nothing outside that directory and
// the lab's namespaces is touched.
//
// Access, for tests only: PostgreSQL trusts the lab LAN (user postgres,
// database test); MariaDB's root has no password from anywhere (database
// test); NATS has no authentication.
//
// Dialer returns a dial function whose sockets live in a lab host's
// namespace, so Go clients in the test process (pgx, go-sql-driver/mysql,
// nats.go all accept one) can reach the servers as that host would.
//
// Goroutines: none of its own; server processes belong to the lab.
package services

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tandem-ha/tandem/connectors"
	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/test/lab"
)

// ErrNotReady is returned when a server did not answer in time.
var ErrNotReady = errors.New("services: server did not become ready")

// Server is one private server in a lab host.
type Server struct {
	Name string
	Proc *lab.Process
	Addr netip.AddrPort // where clients connect
	Dir  string         // its data directory
	// Settings are the connector settings reaching it.
	Settings connectors.Settings
}

// Stop stops the server by its PID: SIGTERM, then SIGKILL after grace.
func (s *Server) Stop(grace time.Duration) error {
	err := s.Proc.Stop(syscall.SIGTERM, grace)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return nil // a signalled exit is the expected end
	}
	return err
}

// Dialer returns a DialContext whose sockets belong to h's namespace.
func Dialer(h *lab.Host) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var (
			c   net.Conn
			err error
		)
		derr := h.Do(func() error {
			var d net.Dialer
			c, err = d.DialContext(ctx, network, addr)
			return nil
		})
		if derr != nil {
			return nil, derr
		}
		return c, err
	}
}

// ownedDir makes dir/name owned by the named system user, and makes dir
// traversable so that user can reach it.
func ownedDir(dir, name, owner string) (string, error) {
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", err
	}
	u, err := user.Lookup(owner)
	if err != nil {
		return "", fmt.Errorf("services: user %s: %w", owner, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(p, 0o700); err != nil {
		return "", err
	}
	if err := os.Chown(p, uid, gid); err != nil {
		return "", err
	}
	return p, nil
}

// waitUntil retries check until it succeeds or ctx ends.
func waitUntil(ctx context.Context, what string, proc *lab.Process, check func() error) error {
	var last error
	for {
		if last = check(); last == nil {
			return nil
		}
		if proc.Exited() {
			return fmt.Errorf("%w: %s exited: %v", ErrNotReady, what, last)
		}
		if err := clock.Sleep(ctx, clock.Real(), 100*time.Millisecond); err != nil {
			return fmt.Errorf("%w: %s: %v (last: %v)", ErrNotReady, what, err, last)
		}
	}
}

func pgBin(name string) (string, error) {
	m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name)
	if len(m) == 0 {
		return "", fmt.Errorf("services: no PostgreSQL %s under /usr/lib/postgresql (apt-get install postgresql)", name)
	}
	return m[len(m)-1], nil
}

// logTo returns a file in dir for a server's output.
func logTo(dir, name string) (*os.File, error) {
	return os.OpenFile(filepath.Join(dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
}

// StartPostgres initialises a cluster in dir/postgres and runs it in h on
// h's LAN address, port 5432, trusting the lab LAN.
func StartPostgres(ctx context.Context, h *lab.Host, dir string) (*Server, error) {
	initdb, err := pgBin("initdb")
	if err != nil {
		return nil, err
	}
	postgres, _ := pgBin("postgres")
	data, err := ownedDir(dir, "postgres", "postgres")
	if err != nil {
		return nil, err
	}
	asPG := []string{"setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"}
	out, err := exec.CommandContext(ctx, asPG[0], append(asPG[1:], initdb, "-D", data, "-U", "postgres", "-A", "trust", "--no-sync")...).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("services: initdb: %w: %s", err, out)
	}
	hba := filepath.Join(data, "pg_hba.conf")
	f, err := os.OpenFile(hba, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(f, "host all all %s trust\nhost all all %s trust\n", lab.LAN4, lab.LAN6)
	f.Close()
	logf, err := logTo(dir, "postgres")
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	argv := append(asPG, postgres, "-D", data, "-k", data, "-p", "5432",
		"-c", "listen_addresses="+h.LAN4.String(), "-c", "fsync=off", "-c", "shared_buffers=16MB", "-c", "max_connections=200")
	p, err := h.Start("postgres", argv, lab.ProcOptions{Stdout: logf, Stderr: logf})
	if err != nil {
		return nil, err
	}
	s := &Server{Name: "postgres", Proc: p, Dir: data, Addr: netip.AddrPortFrom(h.LAN4, 5432),
		Settings: connectors.Settings{"host": h.LAN4.String(), "port": "5432", "user": "postgres", "database": "test"}}
	isready, _ := pgBin("pg_isready")
	if err := waitUntil(ctx, "postgres", p, func() error {
		_, err := h.Run(ctx, isready, "-q", "-h", h.LAN4.String(), "-p", "5432", "-U", "postgres")
		return err
	}); err != nil {
		p.Kill()
		return nil, err
	}
	if _, err := h.Run(ctx, "psql", "-h", h.LAN4.String(), "-U", "postgres", "-c", "CREATE DATABASE test"); err != nil {
		p.Kill()
		return nil, fmt.Errorf("services: create postgres database: %w", err)
	}
	return s, nil
}

// StartMariaDB initialises a data directory in dir/mariadb and runs
// mariadbd in h on h's LAN address, port 3306.
func StartMariaDB(ctx context.Context, h *lab.Host, dir string) (*Server, error) {
	data, err := ownedDir(dir, "mariadb", "mysql")
	if err != nil {
		return nil, err
	}
	out, err := exec.CommandContext(ctx, "mariadb-install-db", "--no-defaults", "--datadir="+data, "--user=mysql",
		"--auth-root-authentication-method=normal", "--skip-test-db").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("services: mariadb-install-db: %w: %s", err, out)
	}
	logf, err := logTo(dir, "mariadb")
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	sock := filepath.Join(data, "mysqld.sock")
	argv := []string{"/usr/sbin/mariadbd", "--no-defaults", "--datadir=" + data, "--user=mysql",
		"--socket=" + sock, "--pid-file=" + filepath.Join(data, "mysqld.pid"), "--port=3306",
		"--bind-address=" + h.LAN4.String(), "--skip-name-resolve", "--innodb-buffer-pool-size=32M",
		"--innodb-flush-log-at-trx-commit=2", "--max-connections=300"}
	p, err := h.Start("mariadbd", argv, lab.ProcOptions{Stdout: logf, Stderr: logf})
	if err != nil {
		return nil, err
	}
	client := func(sql string) error {
		_, err := h.Run(ctx, "mariadb", "--no-defaults", "--protocol=socket", "-S", sock, "-uroot", "-e", sql)
		return err
	}
	if err := waitUntil(ctx, "mariadbd", p, func() error { return client("SELECT 1") }); err != nil {
		p.Kill()
		return nil, err
	}
	if err := client("CREATE DATABASE IF NOT EXISTS test; CREATE USER IF NOT EXISTS 'root'@'%' IDENTIFIED BY ''; GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;"); err != nil {
		p.Kill()
		return nil, fmt.Errorf("services: mariadb grants: %w", err)
	}
	return &Server{Name: "mariadb", Proc: p, Dir: data, Addr: netip.AddrPortFrom(h.LAN4, 3306),
		Settings: connectors.Settings{"host": h.LAN4.String(), "port": "3306", "user": "root", "database": "test"}}, nil
}

// StartNATS runs nats-server with JetStream (store dir/nats) in h on h's
// LAN address, port 4222.
func StartNATS(ctx context.Context, h *lab.Host, dir string) (*Server, error) {
	data := filepath.Join(dir, "nats")
	if err := os.MkdirAll(data, 0o700); err != nil {
		return nil, err
	}
	logf, err := logTo(dir, "nats")
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	argv := []string{"/usr/sbin/nats-server", "-a", h.LAN4.String(), "-p", "4222", "-js", "-sd", data}
	p, err := h.Start("nats-server", argv, lab.ProcOptions{Stdout: logf, Stderr: logf})
	if err != nil {
		return nil, err
	}
	dial := Dialer(h)
	addr := netip.AddrPortFrom(h.LAN4, 4222)
	if err := waitUntil(ctx, "nats-server", p, func() error {
		c, err := dial(ctx, "tcp", addr.String())
		if err != nil {
			return err
		}
		defer c.Close()
		// The server speaks first: an INFO line means it is serving.
		buf := make([]byte, 4)
		if _, err := c.Read(buf); err != nil {
			return err
		}
		if !strings.HasPrefix(string(buf), "INFO") {
			return fmt.Errorf("unexpected greeting %q", buf)
		}
		return nil
	}); err != nil {
		p.Kill()
		return nil, err
	}
	return &Server{Name: "nats", Proc: p, Dir: data, Addr: addr,
		Settings: connectors.Settings{"url": "nats://" + addr.String()}}, nil
}
