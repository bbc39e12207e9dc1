package layoutcheck

import (
	"bufio"
	"fmt"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// maxLines is the longest a non-test Go file under internal/ may be.
const maxLines = 600

// repoRoot is the module root, two levels above this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("no go.mod at %s: %v", root, err)
	}
	return root
}

// goDirs lists the directories under root holding non-test Go files, skipping testdata and
// hidden directories.
func goDirs(t *testing.T, root string) map[string][]string {
	t.Helper()
	dirs := map[string][]string{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			name := d.Name()
			if path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
			dirs[filepath.Dir(path)] = append(dirs[filepath.Dir(path)], path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return dirs
}

// undocumented returns the package directories under root none of whose non-test files carries
// a "// Package name" (or, for a main package, "// Command name") doc comment.
func undocumented(t *testing.T, root string) []string {
	t.Helper()
	var missing []string
	for dir, files := range goDirs(t, root) {
		documented := false
		for _, f := range files {
			af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ParseComments|parser.PackageClauseOnly)
			if err != nil {
				t.Fatalf("parse %s: %v", f, err)
			}
			if af.Doc == nil {
				continue
			}
			text := af.Doc.Text()
			if strings.HasPrefix(text, "Package "+af.Name.Name+" ") || (af.Name.Name == "main" && strings.HasPrefix(text, "Command ")) {
				documented = true
				break
			}
		}
		if !documented {
			rel, _ := filepath.Rel(root, dir)
			missing = append(missing, rel)
		}
	}
	sort.Strings(missing)
	return missing
}

// tooLong returns the non-test Go files under root longer than maxLines, with their lengths.
func tooLong(t *testing.T, root string) []string {
	t.Helper()
	var long []string
	for _, files := range goDirs(t, root) {
		for _, f := range files {
			n := countLines(t, f)
			if n > maxLines {
				rel, _ := filepath.Rel(root, f)
				long = append(long, fmt.Sprintf("%s: %d lines", rel, n))
			}
		}
	}
	sort.Strings(long)
	return long
}

func countLines(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	n := 0
	for sc.Scan() {
		n++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestEveryPackageHasADoc(t *testing.T) {
	if missing := undocumented(t, repoRoot(t)); len(missing) > 0 {
		t.Errorf("packages without a // Package doc comment: %v", missing)
	}
}

func TestNoLongFiles(t *testing.T) {
	if long := tooLong(t, filepath.Join(repoRoot(t), "internal")); len(long) > 0 {
		t.Errorf("non-test Go files over %d lines (split them by concern): %v", maxLines, long)
	}
}

// TestChecksCanFail runs both checks over testdata/bad: a package without a doc and a file one
// line over the limit.
func TestChecksCanFail(t *testing.T) {
	bad, err := filepath.Abs("testdata/bad")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(bad)); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString("// Package long is one line too long.\npackage long\n")
	for i := 2; i <= maxLines; i++ {
		b.WriteString("\n")
	}
	if err := os.MkdirAll(filepath.Join(dir, "long"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "long", "long.go"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := undocumented(t, dir); strings.Join(got, ",") != "nodoc" {
		t.Errorf("undocumented(testdata/bad) = %v, want [nodoc]", got)
	}
	if got := tooLong(t, dir); len(got) != 1 || !strings.HasPrefix(got[0], filepath.Join("long", "long.go")+": 601") {
		t.Errorf("tooLong = %v, want long/long.go at 601 lines", got)
	}
}

// deps lists the packages pkgs depend on (go list -deps), the packages themselves included.
func deps(t *testing.T, pkgs ...string) []string {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list", "-deps"}, pkgs...)...)
	cmd.Dir = repoRoot(t)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps %v: %v", pkgs, err)
	}
	d := strings.Fields(string(out))
	if len(d) < 10 {
		t.Fatalf("go list -deps printed %d packages; want the real list", len(d))
	}
	return d
}

// TestProcessorTakesRecords: the processor and the SQS consumer work on decoded records, not
// on the spool's entries: neither depends on the spool.
func TestProcessorTakesRecords(t *testing.T) {
	for _, p := range deps(t, "./internal/processor", "./internal/consume") {
		if strings.HasSuffix(p, "/internal/spool") {
			t.Errorf("internal/processor or internal/consume depends on %s", p)
		}
	}
}

// TestGatewayBinaryDeps: the production binary links neither the load generator nor test
// helpers.
func TestGatewayBinaryDeps(t *testing.T) {
	for _, p := range deps(t, "./cmd/coapgw") {
		if !strings.HasPrefix(p, "github.com/coapgw/coapgw/") {
			continue
		}
		if strings.HasSuffix(p, "/internal/loadgen") || strings.HasSuffix(p, "test") {
			t.Errorf("cmd/coapgw links %s", p)
		}
	}
}
