package deploy

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	line int
	cmd  string // upper case
	args string
}

// stage is one FROM and what follows it.
type stage struct {
	from, name string
	insns      []instruction
}

// parseDockerfile is a small Dockerfile reader: comments, parser
// directives and line continuations (backslash), instructions split into
// stages. Enough for the checks below; it does not expand variables.
func parseDockerfile(t *testing.T, path string) []stage {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		stages  []stage
		pending strings.Builder
		start   int
	)
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if pending.Len() == 0 && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if pending.Len() == 0 {
			start = n
		}
		if strings.HasSuffix(line, "\\") {
			pending.WriteString(strings.TrimSuffix(line, "\\") + " ")
			continue
		}
		pending.WriteString(line)
		full := pending.String()
		pending.Reset()
		cmd, args, _ := strings.Cut(full, " ")
		in := instruction{line: start, cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		if in.cmd == "FROM" {
			fields := strings.Fields(in.args)
			fields = slices.DeleteFunc(fields, func(s string) bool { return strings.HasPrefix(s, "--platform=") })
			st := stage{from: fields[0]}
			if len(fields) == 3 && strings.EqualFold(fields[1], "AS") {
				st.name = fields[2]
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) == 0 {
			if in.cmd != "ARG" {
				t.Fatalf("%s:%d: %s before the first FROM", path, in.line, in.cmd)
			}
			continue
		}
		stages[len(stages)-1].insns = append(stages[len(stages)-1].insns, in)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if pending.Len() > 0 {
		t.Fatalf("%s: ends in a line continuation", path)
	}
	return stages
}

func (s stage) all(cmd string) []instruction {
	var out []instruction
	for _, in := range s.insns {
		if in.cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// TestDockerfile checks what the image promises: multi-stage, a static
// binary (CGO_ENABLED=0) built from ./cmd/switchyard, a minimal runtime
// base, a non-root user, the binary as the exec-form ENTRYPOINT.
func TestDockerfile(t *testing.T) {
	stages := parseDockerfile(t, "../Dockerfile")
	if len(stages) < 2 {
		t.Fatalf("%d stages, want a build stage and a runtime stage", len(stages))
	}
	build, runtime := stages[0], stages[len(stages)-1]

	t.Run("build stage", func(t *testing.T) {
		if !strings.HasPrefix(build.from, "golang:") || build.name == "" {
			t.Errorf("FROM %s AS %q: want a named golang stage", build.from, build.name)
		}
		var goBuild string
		for _, in := range build.all("RUN") {
			if strings.Contains(in.args, "go build") {
				goBuild = in.args
			}
		}
		for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "./cmd/switchyard", "-X main.version="} {
			if !strings.Contains(goBuild, want) {
				t.Errorf("the go build RUN lacks %q: %s", want, goBuild)
			}
		}
	})

	t.Run("runtime stage", func(t *testing.T) {
		if !regexp.MustCompile(`^(gcr\.io/distroless/static[-\w]*:[\w.-]+|scratch)$`).MatchString(runtime.from) {
			t.Errorf("runtime FROM %s: want distroless/static (pinned tag) or scratch", runtime.from)
		}
		for _, in := range runtime.insns {
			if in.cmd == "RUN" || in.cmd == "ADD" {
				t.Errorf("line %d: %s in the runtime stage: it has no shell; COPY --from the build stage", in.line, in.cmd)
			}
		}
		copies := runtime.all("COPY")
		if len(copies) != 1 || !strings.HasPrefix(copies[0].args, "--from="+build.name+" ") {
			t.Fatalf("runtime COPY %v: want exactly one, from the %s stage", copies, build.name)
		}
		binary := strings.Fields(copies[0].args)[2]

		users := runtime.all("USER")
		if len(users) == 0 {
			t.Fatal("no USER in the runtime stage: the image would run as root")
		}
		user, _, _ := strings.Cut(users[len(users)-1].args, ":")
		if user == "root" || user == "0" || user == "" {
			t.Errorf("USER %s: want a non-root user", users[len(users)-1].args)
		}

		eps := runtime.all("ENTRYPOINT")
		if len(eps) != 1 {
			t.Fatalf("%d ENTRYPOINTs, want 1", len(eps))
		}
		var argv []string
		if err := json.Unmarshal([]byte(eps[0].args), &argv); err != nil {
			t.Fatalf("ENTRYPOINT %s: want the exec (JSON) form, so signals reach the binary: %v", eps[0].args, err)
		}
		if len(argv) != 1 || argv[0] != binary {
			t.Errorf("ENTRYPOINT %q: want [%q], the binary copied in, so every subcommand is an argument", argv, binary)
		}
	})
}

// TestDockerignore checks that the build context keeps every package the
// binary needs and leaves out the large and local directories.
func TestDockerignore(t *testing.T) {
	raw, err := os.ReadFile("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, l := range strings.Split(string(raw), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			patterns = append(patterns, l)
		}
	}
	for _, must := range []string{".git", "bin"} {
		if !slices.Contains(patterns, must) {
			t.Errorf(".dockerignore lacks %q", must)
		}
	}
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.Dir}}{{end}}", "../cmd/switchyard").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range strings.Fields(string(out)) {
		rel, err := filepath.Rel(root, dir)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue // a dependency from the module cache
		}
		if p := ignored(patterns, rel); p != "" {
			t.Errorf("package directory %s is excluded by .dockerignore pattern %q", rel, p)
		}
	}
	for _, f := range []string{"go.mod", "go.sum"} {
		if p := ignored(patterns, f); p != "" {
			t.Errorf("%s is excluded by %q", f, p)
		}
	}
}

// ignored returns the pattern that excludes path or one of its parents
// (no "!" exceptions are used in .dockerignore; "**/" matches any depth).
func ignored(patterns []string, path string) string {
	parts := strings.Split(filepath.ToSlash(path), "/")
	for i := range parts {
		prefix := strings.Join(parts[:i+1], "/")
		for _, p := range patterns {
			if ok, _ := filepath.Match(p, prefix); ok {
				return p
			}
			if rest, ok := strings.CutPrefix(p, "**/"); ok {
				if m, _ := filepath.Match(rest, parts[i]); m {
					return p
				}
			}
		}
	}
	return ""
}
