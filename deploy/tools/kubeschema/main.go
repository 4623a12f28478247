// Command kubeschema writes Kubernetes JSON schemas for kubeconform from the
// OpenAPI document of a Kubernetes release, taken from the k8s.io/kubernetes
// Go module (api/openapi-spec/swagger.json) through the Go module proxy.
// kubeconform's default schema source is a GitHub repository that CI
// cannot reach; this makes the same kind of schemas locally.
//
//	go run ./deploy/tools/kubeschema -kubernetes v1.37.0 -out bin/tools/kube-schemas/v1.37.0
//	kubeconform -strict -schema-location 'bin/tools/kube-schemas/v1.37.0/{{.ResourceKind}}{{.KindSuffix}}.json' ...
//
// The schemas are "standalone strict", as openapi2jsonschema makes them:
// every $ref inlined, additionalProperties false on every object with
// properties, int-or-string and Quantity accept a string or a number,
// optional fields accept null, apiVersion and kind are pinned per kind.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

func main() {
	version := flag.String("kubernetes", "", "Kubernetes `version` (a k8s.io/kubernetes module version, e.g. v1.37.0)")
	spec := flag.String("spec", "", "swagger.json `file` to read instead of downloading the module")
	out := flag.String("out", "", "output `directory`")
	flag.Parse()
	if err := run(*version, *spec, *out); err != nil {
		fmt.Fprintln(os.Stderr, "kubeschema:", err)
		os.Exit(1)
	}
}

func run(version, spec, out string) error {
	if out == "" || (version == "") == (spec == "") {
		return errors.New("want -out and one of -kubernetes or -spec")
	}
	if spec == "" {
		dir, err := download(version)
		if err != nil {
			return err
		}
		spec = filepath.Join(dir, "api", "openapi-spec", "swagger.json")
	}
	raw, err := os.ReadFile(spec)
	if err != nil {
		return err
	}
	var doc struct {
		Definitions map[string]map[string]any `json:"definitions"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return fmt.Errorf("%s: %w", spec, err)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	g := &generator{defs: doc.Definitions}
	n := 0
	for name, def := range doc.Definitions {
		gvks, _ := def["x-kubernetes-group-version-kind"].([]any)
		if len(gvks) != 1 {
			continue // not a kind, or a shared type (DeleteOptions, WatchEvent)
		}
		gvk := gvks[0].(map[string]any)
		group, ver, kind := gvk["group"].(string), gvk["version"].(string), gvk["kind"].(string)
		if strings.HasSuffix(kind, "List") {
			continue
		}
		schema := g.resolve(def, []string{name})
		props := schema["properties"].(map[string]any)
		apiVersion := ver
		if group != "" {
			apiVersion = group + "/" + ver
		}
		props["apiVersion"] = map[string]any{"type": "string", "enum": []any{apiVersion}}
		props["kind"] = map[string]any{"type": "string", "enum": []any{kind}}
		schema["required"] = union(schema["required"], "apiVersion", "kind")
		schema["$schema"] = "http://json-schema.org/draft-07/schema#"
		// kubeconform's file name: kind, then "-" + the group's first label
		// (if any), then "-" + version, lower case.
		file := strings.ToLower(kind)
		if group != "" {
			file += "-" + strings.ToLower(strings.Split(group, ".")[0])
		}
		file += "-" + strings.ToLower(ver) + ".json"
		b, err := json.Marshal(schema)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(out, file), b, 0o644); err != nil {
			return err
		}
		n++
	}
	fmt.Printf("kubeschema: %d schemas from %s in %s\n", n, spec, out)
	return nil
}

// download fetches k8s.io/kubernetes@version into the module cache and
// returns its directory. It runs outside any module so that no go.mod is
// touched.
func download(version string) (string, error) {
	tmp, err := os.MkdirTemp("", "kubeschema")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.Command("go", "mod", "download", "-json", "k8s.io/kubernetes@"+version)
	cmd.Dir = tmp
	cmd.Env = append(os.Environ(), "GOFLAGS=", "GOWORK=off")
	cmd.Stderr = os.Stderr
	b, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go mod download k8s.io/kubernetes@%s: %w", version, err)
	}
	var m struct{ Dir, Error string }
	if err := json.Unmarshal(b, &m); err != nil {
		return "", err
	}
	if m.Error != "" {
		return "", errors.New(m.Error)
	}
	return m.Dir, nil
}

type generator struct {
	defs map[string]map[string]any
}

// resolve returns a deep copy of s with every $ref inlined; a reference
// back into a definition being inlined (recursive types) becomes {}.
func (g *generator) resolve(s map[string]any, stack []string) map[string]any {
	if ref, ok := s["$ref"].(string); ok {
		name := strings.TrimPrefix(ref, "#/definitions/")
		if slices.Contains(stack, name) {
			return map[string]any{}
		}
		out := g.resolve(g.defs[name], append(stack, name))
		if d, ok := s["description"]; ok {
			out["description"] = d
		}
		return out
	}
	switch s["format"] {
	case "int-or-string":
		return map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "integer"}}}
	}
	if len(stack) > 0 && stack[len(stack)-1] == "io.k8s.apimachinery.pkg.api.resource.Quantity" {
		return map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "number"}}}
	}
	out := map[string]any{}
	for k, v := range s {
		switch k {
		case "x-kubernetes-group-version-kind", "x-kubernetes-list-map-keys", "x-kubernetes-list-type",
			"x-kubernetes-patch-merge-key", "x-kubernetes-patch-strategy", "x-kubernetes-map-type", "x-kubernetes-unions":
			continue
		}
		out[k] = v
	}
	if props, ok := s["properties"].(map[string]any); ok {
		required := map[string]bool{}
		if r, ok := s["required"].([]any); ok {
			for _, x := range r {
				required[x.(string)] = true
			}
		}
		np := map[string]any{}
		for name, p := range props {
			ps := g.resolve(p.(map[string]any), stack)
			if !required[name] {
				nullable(ps)
			}
			np[name] = ps
		}
		out["properties"] = np
		if _, ok := out["additionalProperties"]; !ok {
			out["additionalProperties"] = false
		}
	}
	if items, ok := s["items"].(map[string]any); ok {
		out["items"] = g.resolve(items, stack)
	}
	if ap, ok := s["additionalProperties"].(map[string]any); ok {
		out["additionalProperties"] = g.resolve(ap, stack)
	}
	return out
}

// nullable lets an optional field be null, as the API server accepts.
func nullable(s map[string]any) {
	switch t := s["type"].(type) {
	case string:
		s["type"] = []any{t, "null"}
	case nil:
		if one, ok := s["oneOf"].([]any); ok {
			s["oneOf"] = append(one, map[string]any{"type": "null"})
		}
	}
}

func union(r any, names ...string) []any {
	out, _ := r.([]any)
	for _, n := range names {
		if !slices.Contains(out, any(n)) {
			out = append(out, n)
		}
	}
	return out
}
