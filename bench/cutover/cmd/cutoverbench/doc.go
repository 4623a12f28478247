// Command cutoverbench is `make bench-cutover`: it measures how long a
// cutover blocks producers, with 1, 10 and 50 sidecars under load, and
// checks that the cutover lost and duplicated nothing.
//
// Everything runs in this one process, as in control/e2e_test.go, so it runs
// anywhere without setup:
//
//   - two Kafka clusters: in-process kfake clusters (source 3 brokers, target
//     2), or with -kafka real the test bed's clusters from -env
//     (testbed/.state/env: SWITCHYARD_TEST_SOURCE and SWITCHYARD_TEST_TARGET);
//   - a control plane built by control.NewPlane (file store in a temporary
//     directory, registry, cutover controller, gRPC/REST server on a
//     loopback port) running a mirror from source to target;
//   - N sidecars: a proxy (proxy.New + Run, active on the source) and its
//     controlclient following the control plane (app "bench", instances
//     sidecar-00…), with the controlclient's default settings
//     (-status-interval changes its status report interval);
//   - one franz-go producer per sidecar, with franz-go's defaults (idempotent,
//     acks=all, 10 ms linger), producing keyed records (8 keys per producer)
//     open-loop at -rate records per second, asynchronously: a record is
//     handed to the client when it is due, whether or not earlier ones were
//     acknowledged, so a blocked sidecar shows as latency, not as a producer
//     that quietly slowed down.
//
// Two details keep the timing honest. Each controlclient starts after a
// random delay below its status interval, so the sidecars' report tickers
// have random phases, as those of sidecars started at different times do
// (started back to back they would report almost together). And the
// warm-up has a random part below the status interval, so the gate does not
// always land just after the last sidecar's report (the worst case).
//
// One run: start all of the above, produce for -warmup, start a cutover
// through the API (POST via gRPC CreateCutover: HOLD gate on Produce,
// default policy), wait until it ends, produce for -after more, stop the
// producers and wait for every outstanding acknowledgement, then read the
// target topic to its end and check it. Every run starts from scratch:
// fresh kfake clusters (with -kafka real: fresh topics, deleted afterwards),
// a fresh control plane, fresh proxies and producers. Why not alternate
// source→target and target→source on one setup: the mirror copies one way
// and has no loop prevention, so a reverse mirror of the same topic would
// copy the forward mirror's copies back; a reverse mirror of a fresh topic
// would work, but the runs would then share registry rules, proxy switch
// history and producer sequence state, and one bad run would spoil the
// next. Independent runs make the percentiles percentiles of one thing.
// The set-up is not measured.
//
// Measured per run:
//
//   - the block window as the control plane measures it
//     (Cutover.block_window: from the gate being issued to every sidecar
//     having acknowledged the release), and the duration of every step from
//     Cutover.history;
//   - the producers' own view: for each producer, the longest gap between
//     two consecutive acknowledgements from one second before the gate to
//     one second after the release, and the latency (hand-over to
//     acknowledgement) of the records handed over while the gate was in
//     force (gate to release), against a baseline of the last second before
//     the cutover;
//   - where the window goes, from timestamps taken in a thin wrapper around
//     each proxy (the controlclient.Proxy interface: SetGate, Switch,
//     ClearGate and the Status calls that build each status report):
//     gate issued → last sidecar applied it → every ack in (gate step end);
//     drain start → last sidecar's first status report after the gate acks
//     (the controller waits for one, to see no Produce in flight) → mirror
//     caught up (drain end); flip start → every switch applied (and each
//     switch's own duration); release start → every gate lifted → every ack
//     in (released_at);
//   - CPU seconds of the whole process (getrusage) from the cutover's
//     creation to its end, and the same process's CPU rate under load
//     without a cutover (second half of the warm-up), so the extra cost of
//     the cutover shows;
//   - once per process: how long one write to the control plane's file
//     store takes here (it fsyncs the file and its directory; a cutover
//     writes it at every step and rule change), and how long one
//     Mirror.CaughtUp call takes (the drain polls it every 100 ms).
//
// Checked per run, so a fast but wrong cutover cannot look good: the cutover
// ended DONE; every acknowledged record is on the target exactly once
// (counted per producer and sequence number); no record is there that was
// not produced; per key, the records are in the order produced; and none
// was refused. A run that fails a check is reported as failed and the exit
// status is 1.
//
// Output: Markdown tables on standard output, and the same report plus a
// JSON file of every run in -out (bench/out/cutover/<UTC time>.md and
// .json, and latest.md). With -cpuprofile, a CPU profile of the runs.
//
// Every goroutine the driver starts is stopped before it exits (it reports
// the goroutine count at start and at exit); SIGINT and SIGTERM stop the
// current run and tear it down.
//
// Usage:
//
//	cutoverbench [-sidecars 1,10,50] [-runs 10] [-rate 100] [-partitions 6]
//	             [-value-bytes 100] [-warmup 3s] [-after 1s]
//	             [-status-interval 1s] [-mirror-txn-interval 500ms]
//	             [-gate-mode HOLD] [-kafka kfake|real] [-env testbed/.state/env]
//	             [-out bench/out/cutover] [-cpuprofile FILE] [-v]
package main
