// Command mirrorbench is the Go half of `make bench-mirror`
// (bench/mirror/bench-mirror.sh): it fills a source topic, runs one mirror
// tool (MirrorMaker 2 or `switchyard mirror`) as a child process until the
// target holds every record, verifies the copies and prints the report. The
// script runs the subcommands one after the other; each prints or writes
// one JSON object.
//
//	mirrorbench ping    -source A -target B
//	    exit 0 when both clusters answer Metadata (within -timeout).
//
//	mirrorbench fill    -source A -topic T -partitions 8 -mib 512 -record 1024
//	                    -compression lz4 -batch-bytes 16384 -linger 5ms -group G -json F
//	    creates T and produces -mib MiB of record values (-record bytes each,
//	    plus a 16-byte key) with franz-go: acks=all, idempotent, the codec
//	    given, batches of at most -batch-bytes before compression. Values are
//	    JSON-like event text with random ids, numbers and words from a
//	    512-word vocabulary (seeded, so every run writes the same bytes): lz4
//	    finds repeats, as in real event streams, but they are not trivially
//	    compressible (1.8× in 16 KiB batches, 2.2× in 64 KiB ones). Then it commits offsets for group G at half of every
//	    partition, so both tools have a consumer group to sync.
//
//	mirrorbench run     -source A -target B -topic T -target-topic T2
//	                    [-status URL] [-perf FILE] -log F -json F -- COMMAND ARGS...
//	    starts COMMAND in a process group of its own and polls, every -poll
//	    (50 ms), the target topic's high watermarks and last stable offsets
//	    and, with -status, the mirror's GET /v1/status. Start-up ends when the
//	    first record is written to the target (a high watermark moves); the
//	    first record visible to read_committed consumers is reported too (for
//	    a transactional copy, when its first transaction commits). The copy
//	    is complete when every target partition's last stable offset reaches
//	    its source partition's end offset. For a target written with
//	    transactions (switchyard), offsets also count commit markers, so
//	    completion is read from the status instead: every source partition's
//	    Next at its end offset, and no open transaction left on the target
//	    (last stable offset = high watermark). At start-up end and at
//	    completion it reads the CPU time (utime+stime, plus that of reaped
//	    children) of every process in COMMAND's tree from /proc, and at
//	    completion the tree's RSS and the broker processes' CPU (-source-pids,
//	    -target-pids). Then it stops the process group (SIGTERM, SIGKILL after
//	    -stop-timeout), also waiting for members that outlive the leader.
//	    -perf samples the tool with `perf record -g` from start-up end to
//	    completion.
//
//	mirrorbench verify  -source A -target B -topic T -copies mm2=T,switchyard=P.T -json F
//	    reads the source topic and every copy to its end (read_committed)
//	    and compares, per partition, the record count and a SHA-256 over
//	    keys and values in offset order (and, reported but not required,
//	    headers and timestamps). It also counts batches, compressed and
//	    uncompressed bytes and codecs. Exit 1 if a copy differs.
//
//	mirrorbench report  -fill F -verify F -run mm2=F -run switchyard=F
//	    prints the Markdown tables of the report.
//
//	mirrorbench cleanup -source A -target B -source-topics a,b -target-topics c,d
//	                    -source-match RE -target-match RE -groups RE
//	    deletes the benchmark's topics and groups (exact names, or whole-name
//	    regexps for MirrorMaker 2's internal topics of this run's aliases).
//
//	mirrorbench port
//	    prints a free TCP port on 127.0.0.1.
//
// MB is 10^6 bytes and GB 10^9 bytes of record values (keys, 16 bytes a
// record, are counted apart); -mib is MiB (2^20) of values.
package main
