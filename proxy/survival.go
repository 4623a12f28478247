package proxy

// Did a batch refused after its append survive the leader change?
//
// A leader that loses its leadership while an acks=all batch is being
// replicated answers NOT_LEADER_OR_FOLLOWER with the offset it appended the
// batch at (resend.go). Whether the batch is in the new leader's log
// depends on whether the new leader had replicated it: Kafka's logs agree
// up to where the new leader's epoch starts, so the batch is either at that
// very offset on the new leader or nowhere. A batch with a producer id is
// simply sent again (the new leader recognises it if it has it); one
// without would be written twice if it had survived. So the proxy asks the
// new leader:
//
//   - OffsetForLeaderEpoch for the leader's current epoch (named as the
//     current epoch, so a stale one is fenced): its log end offset. At or
//     below the append's offset, the batch is not there and never will be —
//     it is sent again.
//   - Otherwise a Fetch at that offset. A batch written in the leader's
//     current epoch is there: the epoch began at or before the offset, so
//     the old leader's batch was not replicated before it — gone, sent
//     again. A batch of an earlier epoch, compared with the one sent from
//     its last-offset delta on (timestamps, producer fields, count and
//     records; the broker may rewrite only the fields before them, and the
//     log-append-time fields): the same, it survived — the client is
//     answered with its offset, as the broker would have; another, the
//     outcome is unknown (a topic that recompresses rewrites the records):
//     the client gets the refusal. Nothing visible yet at that offset (the
//     high watermark has not passed it): asked again next round.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// survival is what the new leader says of a batch refused after its append.
type survival int

const (
	survivalUnknown survival = iota // cannot tell: the refusal is the answer
	survivalPresent                 // in the new leader's log: answered as written
	survivalAbsent                  // not in it: sent again
	survivalPending                 // not visible yet, or the leader is not settled: ask again
)

// survivalCorrID is the correlation id of the proxy's own requests on a
// writer link (nothing else is in flight on it).
const survivalCorrID = 0x53595244 // "SYRD"

// survived asks broker l (the partition's leader now, with leader epoch
// epoch) whether the batch batch, appended by the previous leader at
// offset at, is in its log. On survivalPresent it returns the answer to
// give for the partition.
func (c *clientConn) survived(ctx context.Context, l *upConn, topic string, partition, epoch int32, at int64, batch []byte, deadline time.Time) (survival, *kmsg.ProduceResponseTopicPartition, error) {
	u := l.u
	if epoch < 0 {
		return survivalPending, nil, nil // the leader's epoch is not known yet
	}
	// The log end offset: the end of the current epoch.
	ofe := kmsg.NewPtrOffsetForLeaderEpochRequest()
	ofe.Version = u.pickVersion(keyOffsetForLeaderEpoch, 3, 4)
	ofe.ReplicaID = -1
	ot := kmsg.NewOffsetForLeaderEpochRequestTopic()
	ot.Topic = topic
	op := kmsg.NewOffsetForLeaderEpochRequestTopicPartition()
	op.Partition, op.CurrentLeaderEpoch, op.LeaderEpoch = partition, epoch, epoch
	ot.Partitions = append(ot.Partitions, op)
	ofe.Topics = append(ofe.Topics, ot)
	oresp := kmsg.NewPtrOffsetForLeaderEpochResponse()
	if err := c.askLink(l, ofe, oresp, deadline); err != nil {
		return survivalUnknown, nil, err
	}
	if len(oresp.Topics) != 1 || len(oresp.Topics[0].Partitions) != 1 {
		return survivalUnknown, nil, errors.New("the OffsetForLeaderEpoch answer lacks the partition asked")
	}
	end := oresp.Topics[0].Partitions[0]
	switch {
	case end.ErrorCode != 0 && kerr.IsRetriable(kerr.ErrorForCode(end.ErrorCode)):
		// FENCED/UNKNOWN_LEADER_EPOCH, NOT_LEADER: the proxy's view of
		// the leader is behind or ahead; the next round refreshes it.
		return survivalPending, nil, nil
	case end.ErrorCode != 0, end.LeaderEpoch != epoch, end.EndOffset < 0:
		// Not authorized, unknown topic, or an answer that does not
		// name the epoch asked.
		return survivalUnknown, nil, nil
	case end.EndOffset <= at:
		return survivalAbsent, nil, nil
	}

	// Something is at the offset: the batch, if it is visible yet.
	f := kmsg.NewPtrFetchRequest()
	f.Version = u.pickVersion(keyFetch, 4, 12) // by topic name
	f.ReplicaID, f.MaxWaitMillis, f.MinBytes = -1, 0, 0
	f.MaxBytes = int32(len(batch) + 4096)
	f.SessionEpoch = -1
	ft := kmsg.NewFetchRequestTopic()
	ft.Topic = topic
	fp := kmsg.NewFetchRequestTopicPartition()
	fp.Partition, fp.CurrentLeaderEpoch, fp.FetchOffset = partition, epoch, at
	fp.LogStartOffset = -1
	fp.PartitionMaxBytes = f.MaxBytes
	ft.Partitions = append(ft.Partitions, fp)
	f.Topics = append(f.Topics, ft)
	fresp := kmsg.NewPtrFetchResponse()
	if err := c.askLink(l, f, fresp, deadline); err != nil {
		return survivalUnknown, nil, err
	}
	if len(fresp.Topics) != 1 || len(fresp.Topics[0].Partitions) != 1 {
		return survivalUnknown, nil, errors.New("the Fetch answer lacks the partition asked")
	}
	got := fresp.Topics[0].Partitions[0]
	if got.ErrorCode != 0 {
		if kerr.IsRetriable(kerr.ErrorForCode(got.ErrorCode)) {
			return survivalPending, nil, nil
		}
		return survivalUnknown, nil, nil
	}
	stored := firstBatch(got.RecordBatches)
	switch {
	case stored == nil && len(got.RecordBatches) == 0:
		return survivalPending, nil, nil // not replicated far enough yet
	case stored == nil, int64(binary.BigEndian.Uint64(stored)) != at:
		return survivalUnknown, nil, nil // an older format, or not a batch at the offset
	case int32(binary.BigEndian.Uint32(stored[batchLeaderEpochOff:])) >= epoch:
		// Written in the current epoch: the old leader's batch was not
		// in this leader's log when its epoch began.
		return survivalAbsent, nil, nil
	case !sameBatch(stored, batch):
		return survivalUnknown, nil, nil
	}
	answer := kmsg.NewProduceResponseTopicPartition()
	answer.Partition, answer.BaseOffset, answer.LogStartOffset = partition, at, got.LogStartOffset
	if stored[batchAttrsOff+1]&0x08 != 0 { // log append time: the broker's timestamp
		answer.LogAppendTime = int64(binary.BigEndian.Uint64(stored[batchMaxTimestampOff:]))
	}
	return survivalPresent, &answer, nil
}

// firstBatch returns the first whole record batch of a Fetch answer's
// records, nil if there is none.
func firstBatch(records []byte) []byte {
	if len(records) < batchHeaderBytes {
		return nil
	}
	n := int(int32(binary.BigEndian.Uint32(records[batchLengthOff:]))) + 12
	if n < batchHeaderBytes || n > len(records) || records[batchMagicOff] != 2 {
		return nil
	}
	return records[:n]
}

// sameBatch reports whether a stored batch is the one sent: equal from the
// last-offset delta on (the broker sets the base offset and leader epoch,
// and with log append time the timestamp type and max timestamp, and the
// CRC with them), compression and transactional bits equal.
func sameBatch(stored, sent []byte) bool {
	if len(stored) != len(sent) || len(sent) < batchHeaderBytes {
		return false
	}
	const kept = 0x07 | 0x10 | 0x20          // compression, transactional, control
	lo, hi := batchAttrsOff, batchAttrsOff+1 // the attributes' two bytes
	// The last-offset delta and first timestamp, then (after the max
	// timestamp) the producer fields, count and records.
	return stored[hi]&kept == sent[hi]&kept && stored[lo] == sent[lo] &&
		bytes.Equal(stored[batchLastOffsetDeltaOff:batchMaxTimestampOff], sent[batchLastOffsetDeltaOff:batchMaxTimestampOff]) &&
		bytes.Equal(stored[batchPIDOff:], sent[batchPIDOff:])
}

// askLink sends one request of the proxy's own on a writer link and
// decodes the answer into resp.
func (c *clientConn) askLink(l *upConn, req kmsg.Request, resp kmsg.Response, deadline time.Time) error {
	id := "switchyard-proxy"
	frame := requestFrame(requestHeader{Key: req.Key(), Version: req.GetVersion(), CorrID: survivalCorrID,
		ClientID: &id, Flexible: req.IsFlexible()}, req.AppendTo(nil))
	answer, sent, err := c.resendOn(l, [][]byte{frame}, deadline)
	if err != nil {
		if !sent {
			return fmt.Errorf("%s to broker %d: %w", apiName(req.Key()), l.node, err)
		}
		return err
	}
	hl, err := responseHeaderLen(req.Key(), req.GetVersion(), answer)
	if err != nil || int32(binary.BigEndian.Uint32(answer[0:4])) != survivalCorrID {
		l.close()
		return fmt.Errorf("%s answer from broker %d does not fit the request", apiName(req.Key()), l.node)
	}
	if err := decodeResponse(resp, req.Key(), req.GetVersion(), answer[hl:]); err != nil {
		l.close()
		return fmt.Errorf("broker %d: %w", l.node, err)
	}
	return nil
}
