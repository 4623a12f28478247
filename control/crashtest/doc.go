// Package crashtest holds one test, and only that: the proof that a
// control plane killed with SIGKILL in the middle of a cutover, and
// restarted on the same store, resumes the cutover or rolls it back, and
// never lifts a gate on a state it cannot prove.
//
// TestControlPlaneSurvivesKill9 builds the switchyard binary and, for each
// step a cutover enters — in a cutover of one application that produces
// and consumes, moved in the groups' phase alone: preflight, group-drain,
// quiesce, sync-groups, group-flip, group-release, verify and
// groups-rolling-back; and, in a two-phase cutover (the "2p-"
// transitions), gate, drain, flip and release of the producers,
// group-drain, quiesce, sync-groups, group-flip and group-release of the
// group, verify, rolling-back and groups-rolling-back — runs one cutover
// under load: a
// `switchyard control` process (its own control.yaml, store and port, one
// mirror between a source and a target cluster: kfake, or the real-Kafka
// test bed with SWITCHYARD_TEST_KAFKA=real), five in-process proxy sidecars
// following it through proxy/controlclient (three in front of franz-go
// producers writing keyed records continuously, two in front of a consumer
// group), and a cutover started and watched through the gRPC API with the
// bearer token. The sidecars are one application (a pipeline: its
// Produce is held from the group drain on), moved without a producer
// phase; in the two-phase transitions the producers' sidecars are one application
// and the group's another, so the cutover moves the producers first and
// the group after them (control/phases.go; the test fails if the cutover
// does not make two phases of them). As soon as the cutover enters the step (or at a seeded
// random moment inside it) the process is killed with SIGKILL, then
// started again on the same store and port; the sidecars reconnect on
// their own. The test then checks, by what the store held at the kill:
//
//   - the cutover ends ROLLED_BACK when killed before release and DONE
//     when killed at or after it (Start's rule), never FAILED — except a
//     two-phase cutover killed while its group rolls back
//     (groups-rolling-back, after an abort in quiesce), which ends FAILED
//     with the producers on the target and the group on the source, each
//     unit's outcome saying so (the one-application cutover: ROLLED_BACK);
//     killed while its group drained, quiesced or synced, a cutover goes
//     on to DONE;
//   - every sidecar ends on the cluster of the outcome (source after a
//     rollback, target when done; a failed two-phase cutover's group on
//     the source) with no gate, and the producers go on producing there;
//   - no acknowledged record is lost or duplicated: after a rollback every
//     one is on the source exactly once, in order per key, and the target
//     holds only the mirror's copy (a prefix of each source partition);
//     when done every one is on the target exactly once, in order per key,
//     each target partition continuing its source partition; the consumer
//     group reads every acknowledged record (a group left on the source:
//     every one the source holds), and unless the cutover rolled back,
//     none twice and each member every key in order (records read twice
//     while the group formed, before the cutover, are only reported);
//   - no sidecar routed to a cluster, or lifted a gate, on a state the
//     control plane had not stored first (invariant 5): each sidecar's
//     proxy is wrapped in a recorder of every switch and gate change it
//     applied, checked against the stored history — a switch to the target
//     only after flip was stored (and, in a rolled-back cutover, undone
//     after rolling-back was stored), a gate lifted on the target only
//     after release was stored, on the source only after rolling-back was;
//     a group member's sidecar in a two-phase cutover is held to the
//     group's steps: gated only after quiesce, switched only after
//     group-flip, released only after group-release, ungated on the
//     source only after groups-rolling-back was stored.
//
// Steps are made long enough to be killed in without sleeps standing in
// for synchronisation: a step waits on something the test holds and lets
// go after the kill — one sidecar's proxy that has not yet applied
// (or acknowledged) the gate, the switch, the release or the rollback; a
// consumer group that has not committed the source's end, or a source
// whose end offsets the control plane cannot read yet (drain; a
// two-phase cutover's producers wait only for the latter, its
// group-drain for the former); a group member's sidecar that has not
// applied the quiesce gate (quiesce, and groups-rolling-back after an
// abort in quiesce); a commit of group offsets on the target that is
// held (sync-groups); the final end-offset check (verify). The control plane reaches its clusters
// through in-process proxies the test gates for those last three. The
// kill lands at a seeded moment after the store holds the step; in rounds
// after the first, sometimes as soon as the watch shows the step (which
// can be before it is stored: the outcome then goes by what was stored).
// For release and verify the restarted mirror's start is sometimes held
// for a while too (the fencing of the killed instance's transactional
// producer), as a slow target would: the resumed cutover must wait for its
// mirror. Preflight waits on nothing the test could hold (it lasts a few
// milliseconds): cutovers are started one after the other, each killed at
// a seeded moment after CreateCutover is sent (or when it returns), until
// a kill lands with the store holding preflight; every attempt, wherever
// it landed (nothing stored yet, gate, ...), is checked like the others.
//
// A failure names the transition, the seed, what was expected and what
// happened, and logs the plan, each sidecar's switches and gates, the
// consumer group members' client logs, the store's records and the
// control plane's logs.
//
// The test is skipped with -short. Its flags:
//
//	-crashtest.seed=N    replay the plans (N is logged; process timing is
//	                     not replayed)
//	-crashtest.steps=a,b run only these transitions (default: all)
//	-crashtest.rounds=R  run every transition R times (default 1)
//	-crashtest.bin=PATH  run this switchyard binary instead of building one
//
// for example
//
//	go test ./control/crashtest -run TestControlPlaneSurvivesKill9 -v -args -crashtest.seed=N
package crashtest
