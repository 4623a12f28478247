package control

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
)

func TestStoreRoundTripAndAtomicity(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range []string{"b", "a"} {
		c := &switchyardv1.Cutover{Id: id, Step: switchyardv1.CutoverStep(i + 1), Error: "x"}
		if err := s.Put("cutovers", id, c); err != nil {
			t.Fatal(err)
		}
	}
	// Overwrite: the reader sees the new record whole.
	if err := s.Put("cutovers", "a", &switchyardv1.Cutover{Id: "a", Step: switchyardv1.CutoverStep_CUTOVER_STEP_DONE}); err != nil {
		t.Fatal(err)
	}
	// A temporary file left by a crash mid-write is ignored.
	if err := os.WriteFile(filepath.Join(dir, "cutovers", ".a.123.tmp"), []byte("{half"), 0o600); err != nil {
		t.Fatal(err)
	}
	ms, err := s.List("cutovers", func() proto.Message { return &switchyardv1.Cutover{} })
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || ms[0].(*switchyardv1.Cutover).GetStep() != switchyardv1.CutoverStep_CUTOVER_STEP_DONE || ms[1].(*switchyardv1.Cutover).GetId() != "b" {
		t.Fatalf("listed %v", ms)
	}
	var st registryState
	if ok, err := s.Get("registry", "state", &st); ok || err != nil {
		t.Fatalf("missing record: %v %v", ok, err)
	}
	if err := s.Put("registry", "state", registryState{Counter: 7, Rules: []rule{{ID: "c", Apps: []string{"x"}, Active: "t", Version: 7}}}); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.Get("registry", "state", &st); !ok || err != nil || st.Counter != 7 || st.Rules[0].Active != "t" {
		t.Fatalf("get: %v %v %+v", ok, err, st)
	}
	if err := s.Put("../etc", "x", &st); err == nil {
		t.Error("a record name with a path: no error")
	}
}

func TestStoreRefusesACorruptRecord(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "cutovers"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cutovers", "c1.json"), []byte(`{"id": "c1", "step": `), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = s.List("cutovers", func() proto.Message { return &switchyardv1.Cutover{} })
	if err == nil || !strings.Contains(err.Error(), "c1.json") {
		t.Fatalf("corrupt record: %v, want an error naming the file", err)
	}
}
