package control

import (
	"fmt"
	"sync"
	"testing"

	"go.uber.org/zap"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
)

// TestAbortSurvivesProgressUpdates: the driver publishes progress (a
// step's detail, timestamps) while an operator aborts; the abort — its
// flag and its reason — must not be overwritten by a progress update
// that copied the cutover before the abort and published after it. The
// lost abort reason made a rolled-back cutover carry no error
// (TestPhaseTwoOnly/abort failed once in a fresh clone).
func TestAbortSurvivesProgressUpdates(t *testing.T) {
	store, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	reg, err := NewRegistry(store, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	ct := NewController(reg, store, testClusters, nil, zap.NewNop())
	for i := range 200 {
		id := fmt.Sprintf("c-%d", i)
		c := &switchyardv1.Cutover{Id: id, Step: switchyardv1.CutoverStep_CUTOVER_STEP_QUIESCE,
			History: []*switchyardv1.StepRecord{{Step: switchyardv1.CutoverStep_CUTOVER_STEP_QUIESCE}}}
		run := &cutoverRun{id: id, c: c, abort: make(chan struct{})}
		ct.mu.Lock()
		ct.cutovers[id] = run
		ct.mu.Unlock()
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				ct.setDetail(run, fmt.Sprintf("waiting (%d)", n))
			}
		})
		if _, err := ct.Abort(id, "commit stuck"); err != nil {
			t.Fatal(err)
		}
		close(stop)
		wg.Wait()
		got, _ := ct.Get(id)
		if !got.GetAbortRequested() || got.GetError() != "commit stuck" {
			t.Fatalf("cutover %d after an abort beside progress updates: abort requested %v, error %q; want true, \"commit stuck\"",
				i, got.GetAbortRequested(), got.GetError())
		}
	}
}
