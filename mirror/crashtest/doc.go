// Package crashtest holds one test, and only that: the proof that the mirror
// is crash-safe. TestMirrorSurvivesKill9 builds the switchyard binary, runs
// `switchyard mirror` against a source and a target cluster (kfake, or the
// real-Kafka test bed with SWITCHYARD_TEST_KAFKA=real) while a producer keeps
// writing — keys, null and empty values, headers, explicit timestamps,
// committed and aborted transactions — and kills the mirror with SIGKILL at
// least 20 times, at seeded random points: during startup and restore,
// mid-transaction and between transactions. After one last clean run it
// reads every record on both sides and checks that each committed source
// record is on the target exactly once, in the same partition and order,
// byte for byte; that no aborted record was copied; and that the offset map
// the mirror persisted translates every source offset to where the record
// really is. mirror/verify is run as an independent second opinion.
//
// The test is skipped with -short. Replay a kill schedule with
//
//	go test ./mirror/crashtest -run TestMirrorSurvivesKill9 -v -args -crashtest.seed=N
//
// (N is logged by every run; the timing of the processes is not replayed,
// only the schedule and the workload's choices).
package crashtest
