// Package crashtest holds one test, and only that: the proof that the mirror
// is crash-safe. TestMirrorSurvivesKill9 builds the switchyard binary, runs
// `switchyard mirror` against a source and a target cluster (kfake, or the
// real-Kafka test bed with SWITCHYARD_TEST_KAFKA=real) while a producer keeps
// writing — keys, null and empty values, headers, explicit timestamps,
// committed and aborted transactions, compressed and plain batches — and
// kills the mirror with SIGKILL at least 20 times, at seeded random points:
// during startup (fencing the previous instance, restore, topic sync),
// mid-transaction and between transactions. After one last run, stopped
// with SIGTERM, it reads every record on both sides and checks that each
// committed source record is on the target exactly once, in the same
// partition and order, byte for byte; that no aborted record was copied;
// that the offset map the mirror committed never went backwards across a
// kill; and that it translates every source offset to where the record
// really is. mirror/verify is run as an independent second opinion.
//
// The test is skipped with -short. Its flags:
//
//	-crashtest.seed=N    replay a kill schedule and workload (N is logged;
//	                     process timing is not replayed)
//	-crashtest.kills=K   number of kills (default 30)
//	-crashtest.bin=PATH  kill this switchyard binary instead of building one
//
// for example
//
//	go test ./mirror/crashtest -run TestMirrorSurvivesKill9 -v -args -crashtest.seed=N
package crashtest
