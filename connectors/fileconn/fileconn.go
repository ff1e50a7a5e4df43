// Package fileconn is the file connector (kind "file"): writes that land
// once under a name derived from the activity's key, and a
// directory-poll starter.
//
// # Operations
//
//	write  data (string as is, anything else JSON), name (optional pattern,
//	       must contain {key}; default setting name-pattern, "{key}.out")
//	       -> Values{"path", "bytes"}; ExactlyOnce
//	put    name (required, no {key}), data -> Values{"path", "bytes"};
//	       AtLeastOnce: the file is atomically replaced, so a repeat
//	       rewrites the same content
//
// write is exactly-once because the name is a function of the key: the
// data goes to a temporary file in the same directory, is fsynced, and is
// then hard-linked (link(2)) to its final name, which fails if that name
// exists. A repeat finds the name taken and returns Replayed without
// touching the file; concurrent duplicates race on link and exactly one
// wins. The directory is fsynced so the name survives a power loss. {key}
// expands to the first 32 hex digits of SHA-256(key), safe in any file
// name whatever the key holds.
//
// # Starter
//
// NewStarter (the runtime's engine.StarterSource) has one operation, for
// an orchestration's `starter: connector:` block; its params override the
// settings of the same names:
//
//	poll  pattern (glob), done-dir (path), settle (duration string, >= 0),
//	      interval (duration string, >= 1ms)
//
//	starter: {connector: {connection: inbox, operation: poll, params: {pattern: "*.csv"}}}
//
// It is a Poller (Conn.Poller): it lists the directory's regular files
// matching pattern (hidden files and the connector's own temporaries
// excluded), in name order, once they are settle old (by file time, so a
// producer still writing is left alone). Trigger.Key =
// "<name>:<size>:<mtime ns>", so a redelivered file has the same key and a
// new file reusing a name does not; the variables are name, path, data
// (string), json (data parsed, when it is JSON) and size. After StartFunc
// returned nil the file is moved into done-dir (the acknowledgement); a
// crash before that move redelivers the same key.
//
// # Settings
//
//	dir            the directory, required, must exist
//	name-pattern   default "{key}.out"
//	mode           octal file mode, default 0644
//	pattern        Poller's glob, default "*"
//	done-dir       where Poller moves started files, default <dir>/.done;
//	               a relative path is taken under dir, not the daemon's cwd
//	settle         Poller's minimum file age, default 2s
//	interval       Poller's listing period, default 1s
//
// # Goroutines
//
// None: Poller.Run runs on its caller's goroutine.
package fileconn

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/tandem-ha/tandem/connectors"
	"github.com/tandem-ha/tandem/internal/clock"
	"github.com/tandem-ha/tandem/internal/durable"
)

// Kind is the connector kind.
const Kind = "file"

// tmpPrefix marks the connector's temporary files (skipped by Poller).
const tmpPrefix = ".tandem-tmp-"

// Errors.
var (
	ErrSetting = errors.New("fileconn: bad setting")
	ErrParam   = errors.New("fileconn: bad parameter")
)

// Register adds kind "file" to r.
func Register(r *connectors.Registry) {
	r.Register(Kind, func(name string, s connectors.Settings) (connectors.Connector, error) {
		return Open(s, Options{Name: name})
	})
}

// Options are the parts of a Conn that are not settings.
type Options struct {
	Name   string
	Logger *zap.Logger
	Clock  clock.Clock // nil: clock.Real(); Poller's settle and interval
}

// Conn is a directory endpoint. It implements connectors.Connector.
type Conn struct {
	dir      string
	pattern  string // name pattern of write
	mode     fs.FileMode
	glob     string
	doneDir  string
	settle   time.Duration
	interval time.Duration
	clk      clock.Clock
	log      *zap.Logger
}

var _ connectors.Connector = (*Conn)(nil)

// Open validates s.
func Open(s connectors.Settings, o Options) (*Conn, error) {
	dir, err := s.Require("dir")
	if err != nil {
		return nil, err
	}
	c := &Conn{dir: dir, pattern: "{key}.out", mode: 0o644, glob: "*", settle: 2 * time.Second, interval: time.Second, clk: o.Clock}
	if v := s["name-pattern"]; v != "" {
		if !strings.Contains(v, "{key}") || strings.ContainsRune(v, '/') {
			return nil, fmt.Errorf("%w \"name-pattern\": %q must contain {key} and no /", ErrSetting, v)
		}
		c.pattern = v
	}
	if v := s["mode"]; v != "" {
		m, err := strconv.ParseUint(v, 8, 32)
		if err != nil || m > 0o777 {
			return nil, fmt.Errorf("%w \"mode\": %q is not an octal mode like 0644", ErrSetting, v)
		}
		c.mode = fs.FileMode(m)
	}
	if v := s["pattern"]; v != "" {
		if _, err := filepath.Match(v, ""); err != nil {
			return nil, fmt.Errorf("%w \"pattern\": %w", ErrSetting, err)
		}
		c.glob = v
	}
	c.doneDir = underDir(dir, s["done-dir"])
	if c.doneDir == "" {
		c.doneDir = filepath.Join(dir, ".done")
	}
	for _, d := range []struct {
		name string
		p    *time.Duration
	}{{"settle", &c.settle}, {"interval", &c.interval}} {
		if v := s[d.name]; v != "" {
			x, err := time.ParseDuration(v)
			if err != nil || x < 0 || (d.name == "interval" && x == 0) {
				return nil, fmt.Errorf("%w %q: %q is not a valid duration", ErrSetting, d.name, v)
			}
			*d.p = x
		}
	}
	if c.clk == nil {
		c.clk = clock.Real()
	}
	log := o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	c.log = log.Named("fileconn").With(zap.String("connection", o.Name))
	return c, nil
}

// Kind implements connectors.Connector.
func (c *Conn) Kind() string { return Kind }

// Guarantee implements connectors.Connector.
func (c *Conn) Guarantee(op string) connectors.Guarantee {
	if op == "write" {
		return connectors.ExactlyOnce
	}
	return connectors.AtLeastOnce
}

// Test implements connectors.Connector: dir is a writable directory.
func (c *Conn) Test(context.Context) error {
	st, err := os.Stat(c.dir)
	if err != nil {
		return connectors.Permanent(fmt.Errorf("fileconn: dir: %w", err))
	}
	if !st.IsDir() {
		return connectors.Permanent(fmt.Errorf("fileconn: dir %s is not a directory", c.dir))
	}
	f, err := os.CreateTemp(c.dir, tmpPrefix+"test-*")
	if err != nil {
		return connectors.Permanent(fmt.Errorf("fileconn: dir %s is not writable: %w", c.dir, err))
	}
	f.Close()
	return os.Remove(f.Name())
}

// Close implements connectors.Connector; there is nothing to release.
func (c *Conn) Close() error { return nil }

// KeyName is the file name write uses for key under pattern.
func KeyName(pattern, key string) string {
	sum := sha256.Sum256([]byte(key))
	return strings.ReplaceAll(pattern, "{key}", hex.EncodeToString(sum[:16]))
}

// Invoke implements connectors.Connector.
func (c *Conn) Invoke(ctx context.Context, r connectors.Request) (connectors.Result, error) {
	if err := ctx.Err(); err != nil {
		return connectors.Result{}, err
	}
	data, err := payload(r.Params["data"])
	if err != nil {
		return connectors.Result{}, connectors.Permanent(err)
	}
	name, _ := r.Params["name"].(string)
	if v, ok := r.Params["name"]; ok && name == "" {
		return connectors.Result{}, connectors.Permanent(fmt.Errorf("%w \"name\": a non-empty string is required, got %T", ErrParam, v))
	}
	if strings.ContainsRune(name, '/') || name == "." || name == ".." || strings.HasPrefix(name, tmpPrefix) {
		return connectors.Result{}, connectors.Permanent(fmt.Errorf("%w \"name\": %q must be a plain file name", ErrParam, name))
	}
	switch r.Operation {
	case "write":
		if r.Key == "" {
			return connectors.Result{}, connectors.Permanent(fmt.Errorf("%w: write needs an idempotency key", ErrParam))
		}
		pattern := c.pattern
		if name != "" {
			if !strings.Contains(name, "{key}") {
				return connectors.Result{}, connectors.Permanent(fmt.Errorf("%w \"name\": %q must contain {key} for write (use put for a fixed name)", ErrParam, name))
			}
			pattern = name
		}
		return c.write(KeyName(pattern, r.Key), data)
	case "put":
		if name == "" {
			return connectors.Result{}, connectors.Permanent(fmt.Errorf("%w \"name\": required by put", ErrParam))
		}
		return c.put(name, data)
	}
	return connectors.Result{}, connectors.Permanent(fmt.Errorf("%w: %q (file has write, put)", connectors.ErrUnknownOperation, r.Operation))
}

func payload(v any) ([]byte, error) {
	switch d := v.(type) {
	case nil:
		return nil, nil
	case string:
		return []byte(d), nil
	case []byte:
		return d, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("%w \"data\": %w", ErrParam, err)
	}
	return b, nil
}

// temp writes data to a synced temporary file in c.dir.
func (c *Conn) temp(data []byte) (string, error) {
	var rnd [8]byte
	rand.Read(rnd[:])
	p := filepath.Join(c.dir, tmpPrefix+hex.EncodeToString(rnd[:]))
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, c.mode)
	if err != nil {
		return "", fmt.Errorf("fileconn: %w", err)
	}
	_, werr := f.Write(data)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(p)
		return "", fmt.Errorf("fileconn: write %s: %w", p, err)
	}
	return p, nil
}

func (c *Conn) write(name string, data []byte) (connectors.Result, error) {
	final := filepath.Join(c.dir, name)
	vals := map[string]any{"path": final, "bytes": int64(len(data))}
	if _, err := os.Lstat(final); err == nil {
		return connectors.Result{Values: vals, Replayed: true}, nil
	}
	tmp, err := c.temp(data)
	if err != nil {
		return connectors.Result{}, err
	}
	defer os.Remove(tmp)
	// link(2), not rename(2): rename would replace a file a concurrent
	// duplicate put there; link refuses, and exactly one attempt wins.
	if err := os.Link(tmp, final); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return connectors.Result{Values: vals, Replayed: true}, nil
		}
		return connectors.Result{}, fmt.Errorf("fileconn: publish %s: %w", final, err)
	}
	if err := durable.SyncDir(c.dir); err != nil {
		return connectors.Result{}, fmt.Errorf("fileconn: sync %s: %w", c.dir, err)
	}
	return connectors.Result{Values: vals}, nil
}

func (c *Conn) put(name string, data []byte) (connectors.Result, error) {
	final := filepath.Join(c.dir, name)
	tmp, err := c.temp(data)
	if err != nil {
		return connectors.Result{}, err
	}
	if err := os.Rename(tmp, final); err != nil {
		os.Remove(tmp)
		return connectors.Result{}, fmt.Errorf("fileconn: publish %s: %w", final, err)
	}
	if err := durable.SyncDir(c.dir); err != nil {
		return connectors.Result{}, fmt.Errorf("fileconn: sync %s: %w", c.dir, err)
	}
	return connectors.Result{Values: map[string]any{"path": final, "bytes": int64(len(data))}}, nil
}

// Poller is the directory-poll starter. It implements connectors.Starter.
type Poller struct {
	c        *Conn
	glob     string
	doneDir  string
	settle   time.Duration
	interval time.Duration
}

var _ connectors.Starter = (*Poller)(nil)

// Poller returns the starter watching c's directory.
func (c *Conn) Poller() *Poller {
	return &Poller{c: c, glob: c.glob, doneDir: c.doneDir, settle: c.settle, interval: c.interval}
}

// OpPoll is the starter operation of NewStarter.
const OpPoll = "poll"

// NewStarter implements the runtime's StarterSource (engine.StarterSource)
// for an orchestration's `starter: connector:` block: operation "poll" is
// a Poller whose params "pattern", "done-dir", "settle" and "interval"
// override the settings of the same names. It checks the params but does
// no I/O.
func (c *Conn) NewStarter(operation string, params map[string]any) (connectors.Starter, error) {
	if operation != OpPoll {
		return nil, connectors.UnknownStarter(Kind, operation, OpPoll)
	}
	s := c.Poller()
	p := connectors.NewStarterParams("fileconn: "+Kind, operation, params)
	if g := p.String("pattern", ""); g != "" {
		if _, err := filepath.Match(g, ""); err != nil {
			p.Fail("pattern", "%q is not a glob: %v", g, err)
		} else {
			s.glob = g
		}
	}
	s.doneDir = underDir(s.c.dir, p.String("done-dir", s.doneDir))
	s.settle = p.Duration("settle", s.settle, 0)
	s.interval = p.Duration("interval", s.interval, time.Millisecond)
	if err := p.Err(); err != nil {
		return nil, err
	}
	return s, nil
}

// Run implements connectors.Starter.
func (p *Poller) Run(ctx context.Context, start connectors.StartFunc) error {
	c := p.c
	if err := os.MkdirAll(p.doneDir, 0o755); err != nil {
		return connectors.Permanent(fmt.Errorf("fileconn: done-dir: %w", err))
	}
	for {
		if err := p.scan(ctx, start); err != nil {
			return err
		}
		if err := clock.Sleep(ctx, c.clk, p.interval); err != nil {
			return nil
		}
	}
}

func (p *Poller) scan(ctx context.Context, start connectors.StartFunc) error {
	c := p.c
	entries, err := os.ReadDir(c.dir)
	if err != nil {
		return fmt.Errorf("fileconn: list %s: %w", c.dir, err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if ok, _ := filepath.Match(p.glob, e.Name()); ok {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	for _, name := range names {
		if ctx.Err() != nil {
			return nil
		}
		path := filepath.Join(c.dir, name)
		st, err := os.Lstat(path)
		if err != nil {
			continue // taken by another poller, or removed
		}
		if c.clk.Since(st.ModTime()) < p.settle {
			continue
		}
		data, err := os.ReadFile(path)
		if err != nil {
			c.log.Warn("cannot read file", zap.String("path", path), zap.Error(err))
			continue
		}
		t := connectors.Trigger{
			Key:   name + ":" + strconv.FormatInt(st.Size(), 10) + ":" + strconv.FormatInt(st.ModTime().UnixNano(), 10),
			Input: map[string]any{"name": name, "path": path, "data": string(data), "size": st.Size()},
		}
		var j any
		if json.Unmarshal(data, &j) == nil {
			t.Input["json"] = j
		}
		if err := start(ctx, t); err != nil {
			c.log.Warn("start refused; the file stays", zap.String("key", t.Key), zap.Error(err))
			continue
		}
		if err := os.Rename(path, filepath.Join(p.doneDir, name)); err != nil {
			return fmt.Errorf("fileconn: move %s to %s: %w", path, p.doneDir, err)
		}
	}
	return nil
}

// underDir resolves a relative path p under dir (tandemd's working
// directory means nothing to an operator); "" stays "".
func underDir(dir, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}
