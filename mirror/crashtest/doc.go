// Package crashtest holds the proofs that the mirror is crash-safe, and
// only those: two tests that build the switchyard binary, run `switchyard
// mirror` against a source and a target cluster (kfake, or the real-Kafka
// test bed with SWITCHYARD_TEST_KAFKA=real) while a producer keeps writing
// — keys, null and empty values, headers, explicit timestamps, committed
// and aborted transactions, compressed and plain batches — kill it with
// SIGKILL at seeded random points, and then read every record on both
// sides. Each committed source record must be on the target exactly once,
// in the same partition and order, byte for byte; no aborted record may
// have been copied; the offset map the mirror committed must never have
// gone backwards across a kill and must translate every source offset to
// where the record really is. mirror/verify is run as an independent
// second opinion.
//
// TestMirrorSurvivesKill9 kills a single mirror process at least 20 times:
// during startup (fencing the previous instance, restore, topic sync),
// mid-transaction and between transactions, then lets one last run, stopped
// with SIGTERM, finish the copy.
//
// TestScaleOutSurvivesKill9 scales the mirror out: two processes (instances
// "a" and "b") with the same name and scaleOut share the partitions of an
// 8-partition topic through the consumer group switchyard-mirror-<name> on
// the target — their /v1/status must list disjoint, non-empty sets that
// together cover the topic. One of them, at random, is killed 5 times
// mid-copy, at a transaction of its open on the target. It is restarted at
// once with the same instance name (which settles its open transaction),
// except once: then it stays down until the other has taken its partitions
// over, which waits for the group session timeout and for the broker to
// abort the transaction it left open. The group's committed positions must
// match the offset maps at the end.
//
// The tests are skipped with -short. Their flags:
//
//	-crashtest.seed=N    replay a kill schedule and workload (N is logged;
//	                     process timing is not replayed)
//	-crashtest.kills=K   number of kills of TestMirrorSurvivesKill9
//	                     (default 30)
//	-crashtest.scaleout.kills=K      number of kills of
//	                                 TestScaleOutSurvivesKill9 (default 5)
//	-crashtest.scaleout.processes=P  processes it scales out to (default 2)
//	-crashtest.bin=PATH  kill this switchyard binary instead of building one
//
// for example
//
//	go test ./mirror/crashtest -run TestMirrorSurvivesKill9 -v -args -crashtest.seed=N
package crashtest
