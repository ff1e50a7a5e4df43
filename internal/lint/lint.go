// Package lint holds the project's own static rules, run as an ordinary Go
// test (lint_test.go) so that `make check` and CI enforce them like any other
// test. The rules exist because breaking them makes the pair unsafe or its
// tests unreliable:
//
//   - time: no time.Now, time.Sleep, time.After, time.Since, time.Until,
//     time.Tick, time.NewTimer, time.NewTicker or time.AfterFunc outside
//     internal/clock and the lab under test/. Every component takes a
//     clock.Clock so failure detection and schedules are tested on a manual
//     clock, and performance is never asserted with timers in tests.
//   - doc: every package has a package doc comment stating its contract.
//   - log: no standard library "log" import; zap is the only logger.
//   - skip: no direct t.Skip/Skipf/SkipNow outside internal/testenv, whose
//     helpers turn a missing prerequisite into a failure under CI=true.
//
// Check walks a module tree and returns every violation with its position;
// the test fails on any.
package lint

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Violation is one broken rule at one place.
type Violation struct {
	File      string // relative to the root, slash-separated; the directory for "doc"
	Line, Col int    // zero for "doc"
	Rule      string // "time", "doc", "log", "skip"
	Msg       string
}

func (v Violation) String() string {
	if v.Line == 0 {
		return fmt.Sprintf("%s: [%s] %s", v.File, v.Rule, v.Msg)
	}
	return fmt.Sprintf("%s:%d:%d: [%s] %s", v.File, v.Line, v.Col, v.Rule, v.Msg)
}

// bannedTime lists the package time functions that read or wait for the
// real clock.
var bannedTime = map[string]bool{
	"Now": true, "Sleep": true, "After": true, "Since": true, "Until": true,
	"Tick": true, "NewTimer": true, "NewTicker": true, "AfterFunc": true,
}

// Exempt directories (slash-separated, relative to the module root) for the
// time rule: the clock itself, and the network lab that measures real outages.
var timeExempt = []string{"internal/clock", "test"}

// skipAllowed is the one package that may call t.Skip.
var skipAllowed = []string{"internal/testenv"}

func under(rel string, dirs []string) bool {
	for _, d := range dirs {
		if rel == d || strings.HasPrefix(rel, d+"/") {
			return true
		}
	}
	return false
}

// Check applies every rule to the Go files under root, skipping testdata,
// hidden and vendor directories.
func Check(root string) ([]Violation, error) {
	var out []Violation
	type pkgInfo struct {
		files  int  // non-test files
		hasDoc bool // some non-test file has a package comment
	}
	pkgs := map[string]*pkgInfo{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (name == "testdata" || name == "vendor" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		dir := filepath.ToSlash(filepath.Dir(rel))
		f, err := parser.ParseFile(fset, path, nil, parser.ParseComments)
		if err != nil {
			return fmt.Errorf("lint: parse %s: %w", rel, err)
		}
		isTest := strings.HasSuffix(name, "_test.go")
		if !isTest {
			p := pkgs[dir]
			if p == nil {
				p = &pkgInfo{}
				pkgs[dir] = p
			}
			p.files++
			if f.Doc != nil && strings.TrimSpace(f.Doc.Text()) != "" {
				p.hasDoc = true
			}
		}
		out = append(out, checkFile(fset, root, dir, f, isTest)...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	for dir, p := range pkgs {
		if p.files > 0 && !p.hasDoc {
			out = append(out, Violation{File: dir, Rule: "doc", Msg: "package has no doc comment stating its contract"})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Col < b.Col
	})
	return out, nil
}

func checkFile(fset *token.FileSet, root, dir string, f *ast.File, isTest bool) []Violation {
	var out []Violation
	at := func(p token.Pos, rule, msg string) Violation {
		position := fset.Position(p)
		rel, err := filepath.Rel(root, position.Filename)
		if err != nil {
			rel = position.Filename
		}
		return Violation{File: filepath.ToSlash(rel), Line: position.Line, Col: position.Column, Rule: rule, Msg: msg}
	}
	// Local names under which the time and testing packages are imported.
	timeNames := map[string]bool{}
	for _, imp := range f.Imports {
		path, _ := strconv.Unquote(imp.Path.Value)
		local := ""
		if imp.Name != nil {
			local = imp.Name.Name
		}
		switch path {
		case "time":
			if local == "" {
				local = "time"
			}
			if local == "." {
				out = append(out, at(imp.Pos(), "time", `dot-import of "time" hides clock reads from this check`))
			}
			timeNames[local] = true
		case "log":
			if !isTest {
				out = append(out, at(imp.Pos(), "log", `standard "log" imported: use an injected *zap.Logger`))
			}
		}
	}
	timeOK := under(dir, timeExempt)
	skipOK := under(dir, skipAllowed)
	ast.Inspect(f, func(n ast.Node) bool {
		sel, ok := n.(*ast.SelectorExpr)
		if !ok {
			return true
		}
		x, ok := sel.X.(*ast.Ident)
		if !ok {
			return true
		}
		if !timeOK && timeNames[x.Name] && x.Obj == nil && bannedTime[sel.Sel.Name] {
			out = append(out, at(sel.Pos(), "time", fmt.Sprintf("%s.%s reads the real clock: take a clock.Clock", x.Name, sel.Sel.Name)))
		}
		if isTest && !skipOK {
			switch sel.Sel.Name {
			case "Skip", "Skipf", "SkipNow":
				out = append(out, at(sel.Pos(), "skip", fmt.Sprintf("%s.%s: skip only through internal/testenv (a missing prerequisite fails under CI=true)", x.Name, sel.Sel.Name)))
			}
		}
		return true
	})
	return out
}

// ModuleRoot finds the directory holding go.mod, starting at dir and walking up.
func ModuleRoot(dir string) (string, error) {
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("lint: no go.mod above %s", dir)
		}
		dir = parent
	}
}
