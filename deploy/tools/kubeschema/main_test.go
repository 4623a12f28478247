package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestRunWritesStrictStandaloneSchemas(t *testing.T) {
	dir := t.TempDir()
	spec := filepath.Join(dir, "swagger.json")
	doc := `{"definitions": {
	  "io.k8s.api.apps.v1.Deployment": {"type": "object", "required": ["spec"],
	    "x-kubernetes-group-version-kind": [{"group": "apps", "kind": "Deployment", "version": "v1"}],
	    "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
	      "spec": {"$ref": "#/definitions/io.k8s.api.apps.v1.DeploymentSpec"}}},
	  "io.k8s.api.apps.v1.DeploymentList": {"type": "object",
	    "x-kubernetes-group-version-kind": [{"group": "apps", "kind": "DeploymentList", "version": "v1"}]},
	  "io.k8s.api.apps.v1.DeploymentSpec": {"type": "object",
	    "properties": {"replicas": {"type": "integer"},
	      "maxSurge": {"$ref": "#/definitions/io.k8s.apimachinery.pkg.util.intstr.IntOrString"},
	      "cpu": {"$ref": "#/definitions/io.k8s.apimachinery.pkg.api.resource.Quantity"},
	      "self": {"$ref": "#/definitions/io.k8s.api.apps.v1.DeploymentSpec"}}},
	  "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {"type": "string", "format": "int-or-string"},
	  "io.k8s.apimachinery.pkg.api.resource.Quantity": {"type": "string"}
	}}`
	if err := os.WriteFile(spec, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	if err := run("", spec, out); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(out)
	if len(entries) != 1 || entries[0].Name() != "deployment-apps-v1.json" {
		t.Fatalf("files %v, want only deployment-apps-v1.json (lists skipped)", entries)
	}
	raw, err := os.ReadFile(filepath.Join(out, "deployment-apps-v1.json"))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	spec2 := got["properties"].(map[string]any)["spec"].(map[string]any)
	props := spec2["properties"].(map[string]any)
	checks := []struct {
		name      string
		got, want any
	}{
		{"top level strict", got["additionalProperties"], false},
		{"nested strict", spec2["additionalProperties"], false},
		{"apiVersion pinned", got["properties"].(map[string]any)["apiVersion"], map[string]any{"type": "string", "enum": []any{"apps/v1"}}},
		{"required kept", got["required"], []any{"spec", "apiVersion", "kind"}},
		{"optional nullable", props["replicas"], map[string]any{"type": []any{"integer", "null"}}},
		{"int-or-string", props["maxSurge"], map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "integer"}, map[string]any{"type": "null"}}}},
		{"quantity", props["cpu"], map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "number"}, map[string]any{"type": "null"}}}},
		{"recursion cut", props["self"], map[string]any{}},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: got %#v, want %#v", c.name, c.got, c.want)
		}
	}
}
