package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
)

// DeleteRecords (Kafka API key 21) moves the log start offset of partitions
// forward: every record below the given offset is deleted, for good, and
// readers start at the new log start. kafka-go v0.4.51 knows the API key
// but has no request or response type for it, so this file registers one
// pair with kafka-go's protocol package (which encodes it, versions 0 to 2,
// the last one flexible) and sends it over our own broker connections
// (wire.go): to each partition's leader, with the cluster's TLS and SASL.
//
// If a later kafka-go registers its own DeleteRecords types, the init order
// of the two packages decides which pair is used; both encode the same
// wire format.

func init() {
	protocol.Register(&deleteRecordsRequest{}, &deleteRecordsResponse{})
}

type deleteRecordsRequest struct {
	// At least one tagged field marks v2 as flexible (compact strings and
	// arrays, tag buffers).
	_ struct{} `kafka:"min=v2,max=v2,tag"`

	Topics    []deleteRecordsTopic `kafka:"min=v0,max=v2"`
	TimeoutMs int32                `kafka:"min=v0,max=v2"`
}

func (r *deleteRecordsRequest) ApiKey() protocol.ApiKey { return protocol.DeleteRecords }

type deleteRecordsTopic struct {
	Name       string                   `kafka:"min=v0,max=v2"`
	Partitions []deleteRecordsPartition `kafka:"min=v0,max=v2"`
}

type deleteRecordsPartition struct {
	PartitionIndex int32 `kafka:"min=v0,max=v2"`
	Offset         int64 `kafka:"min=v0,max=v2"`
}

type deleteRecordsResponse struct {
	_ struct{} `kafka:"min=v2,max=v2,tag"`

	ThrottleTimeMs int32                        `kafka:"min=v0,max=v2"`
	Topics         []deleteRecordsResponseTopic `kafka:"min=v0,max=v2"`
}

func (r *deleteRecordsResponse) ApiKey() protocol.ApiKey { return protocol.DeleteRecords }

type deleteRecordsResponseTopic struct {
	Name       string                           `kafka:"min=v0,max=v2"`
	Partitions []deleteRecordsResponsePartition `kafka:"min=v0,max=v2"`
}

type deleteRecordsResponsePartition struct {
	PartitionIndex int32 `kafka:"min=v0,max=v2"`
	LowWatermark   int64 `kafka:"min=v0,max=v2"`
	ErrorCode      int16 `kafka:"min=v0,max=v2"`
}

// ErrDeleteRecords wraps every error of DeleteRecords about one partition
// (the broker refused, or the offset was invalid); errors.Is also matches
// the broker's error (e.g. kafka.OffsetOutOfRange).
var ErrDeleteRecords = errors.New("kafka: delete records")

// ErrNoPartition is returned for a partition the topic does not have.
var ErrNoPartition = errors.New("kafka: no such partition")

// deleteRecordsAttempts bounds how often DeleteRecords asks again after a
// moved leader or a broken connection (with a backoff of up to 1s between
// attempts, so about half a minute).
const deleteRecordsAttempts = 40

// deleteRecordsTimeout is how long the leader may wait for its followers
// to move their log start too.
const deleteRecordsTimeout = 30 * time.Second

// DeleteRecords deletes, for each partition p of topic, every record below
// before[p]: the partition's log start offset becomes before[p] (it never
// moves back: an offset at or below the log start deletes nothing). It
// returns each partition's log start offset (low watermark) afterwards, as
// the leader reports it once its in-sync followers have moved theirs.
//
// An offset must be between 0 and the partition's high-water mark; an
// offset above it fails (kafka.OffsetOutOfRange), a negative one is refused
// here (Kafka reads -1 as "the high-water mark", which would delete
// everything: callers must name the offset). Partitions are sent to their
// leaders; a moved leader is found again and asked again, until ctx ends or for
// about half a minute.
// Errors about single partitions are joined, each wrapping
// ErrDeleteRecords and naming topic and partition; the low watermarks of
// the partitions that succeeded are returned with them.
func (a *Admin) DeleteRecords(ctx context.Context, topic string, before map[int]int64) (map[int]int64, error) {
	out := make(map[int]int64, len(before))
	if len(before) == 0 {
		return out, nil
	}
	for p, o := range before {
		if o < 0 {
			return out, fmt.Errorf("%w: %s/%d: offset %d is negative", ErrDeleteRecords, topic, p, o)
		}
	}
	cd, err := a.cluster.connDialer(nil)
	if err != nil {
		return out, err
	}
	w := newWire(cd, a.cluster.Brokers, slog.Default())
	defer w.close()

	pending := make(map[int]int64, len(before))
	for p, o := range before {
		pending[p] = o
	}
	var failed []error
	var last error // the last transient failure
	giveUp := func(cause error) (map[int]int64, error) {
		for p := range pending {
			failed = append(failed, fmt.Errorf("%w: %s/%d: %w", ErrDeleteRecords, topic, p, cause))
		}
		return out, errors.Join(failed...)
	}
	for attempt := 0; len(pending) > 0; attempt++ {
		if attempt > 0 {
			if attempt >= deleteRecordsAttempts {
				return giveUp(fmt.Errorf("no answer after %d attempts: %w", attempt, last))
			}
			select {
			case <-ctx.Done():
				return giveUp(errors.Join(ctx.Err(), last))
			case <-time.After(min(time.Duration(attempt)*100*time.Millisecond, time.Second)):
			}
		}
		leaders, err := a.leaders(ctx, w, topic)
		if err != nil {
			last = err
			continue // a transient metadata failure: ask again
		}
		byLeader := map[int32][]deleteRecordsPartition{}
		for p, o := range pending {
			id, ok := leaders[p]
			if !ok {
				failed = append(failed, fmt.Errorf("%w: %s/%d: %w", ErrDeleteRecords, topic, p, ErrNoPartition))
				delete(pending, p)
				continue
			}
			if id < 0 {
				last = fmt.Errorf("%s/%d: %w", topic, p, kafka.LeaderNotAvailable)
				continue // no leader now: ask again
			}
			byLeader[id] = append(byLeader[id], deleteRecordsPartition{PartitionIndex: int32(p), Offset: o})
		}
		ids := make([]int32, 0, len(byLeader))
		for id := range byLeader {
			ids = append(ids, id)
		}
		sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
		var belowStart map[int]bool // partitions answered OffsetOutOfRange
		for _, id := range ids {
			parts := byLeader[id]
			resp, err := a.deleteOn(ctx, w, id, topic, parts)
			if err != nil {
				last = err
				continue // connection trouble: metadata again, then retry
			}
			for _, t := range resp.Topics {
				if t.Name != topic {
					continue
				}
				for _, rp := range t.Partitions {
					p := int(rp.PartitionIndex)
					if _, ok := pending[p]; !ok {
						continue
					}
					switch code := kafka.Error(rp.ErrorCode); {
					case rp.ErrorCode == 0:
						out[p] = rp.LowWatermark
						delete(pending, p)
					case code.Temporary() || errors.Is(code, kafka.NotLeaderForPartition) || errors.Is(code, kafka.LeaderNotAvailable):
						last = fmt.Errorf("%s/%d: %w", topic, p, code) // retried after a metadata refresh
					case errors.Is(code, kafka.OffsetOutOfRange) && belowStart == nil:
						belowStart = map[int]bool{p: true}
					case errors.Is(code, kafka.OffsetOutOfRange):
						belowStart[p] = true
					default:
						failed = append(failed, fmt.Errorf("%w: %s/%d to offset %d: %w", ErrDeleteRecords, topic, p, pending[p], code))
						delete(pending, p)
					}
				}
			}
		}
		if len(belowStart) > 0 {
			a.resolveOutOfRange(ctx, topic, belowStart, pending, out, &failed)
		}
	}
	return out, errors.Join(failed...)
}

// resolveOutOfRange settles the partitions a broker answered
// OffsetOutOfRange. Kafka answers it only for an offset past the high-water
// mark and moves nothing for one below the log start, but other brokers
// (franz-go's kfake) refuse that too: an offset at or below the log start
// is a success that deletes nothing, anything else a failure.
func (a *Admin) resolveOutOfRange(ctx context.Context, topic string, parts map[int]bool, pending, out map[int]int64, failed *[]error) {
	low, _, err := a.Watermarks(ctx, topic)
	for p := range parts {
		o := pending[p]
		delete(pending, p)
		if err == nil && o <= low[p] {
			out[p] = low[p]
			continue
		}
		*failed = append(*failed, fmt.Errorf("%w: %s/%d to offset %d: %w", ErrDeleteRecords, topic, p, o, errors.Join(kafka.OffsetOutOfRange, err)))
	}
}

// leaders returns the leader id of each partition of topic (-1 when it has
// none now).
func (a *Admin) leaders(ctx context.Context, w *wire, topic string) (map[int]int32, error) {
	md, err := w.metadata(ctx, []string{topic}, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("kafka: cluster %s: %w", a.cluster.Name, err)
	}
	for _, t := range md.Topics {
		if t.Name != topic {
			continue
		}
		if t.ErrorCode != 0 {
			return nil, fmt.Errorf("kafka: cluster %s: topic %s: %w", a.cluster.Name, topic, kafka.Error(t.ErrorCode))
		}
		out := make(map[int]int32, len(t.Partitions))
		for _, p := range t.Partitions {
			id := p.LeaderID
			if p.ErrorCode != 0 {
				id = -1
			}
			out[int(p.PartitionIndex)] = id
		}
		return out, nil
	}
	return nil, fmt.Errorf("kafka: cluster %s: topic %s: %w", a.cluster.Name, topic, kafka.UnknownTopicOrPartition)
}

// deleteOn sends one DeleteRecords request to broker id.
func (a *Admin) deleteOn(ctx context.Context, w *wire, id int32, topic string, parts []deleteRecordsPartition) (*deleteRecordsResponse, error) {
	c, err := w.conn(ctx, id, kindControl)
	if err != nil {
		return nil, err
	}
	req := &deleteRecordsRequest{
		Topics:    []deleteRecordsTopic{{Name: topic, Partitions: parts}},
		TimeoutMs: int32(deleteRecordsTimeout / time.Millisecond),
	}
	r, err := c.roundTrip(ctx, req, 0, 2, deleteRecordsTimeout+5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("kafka: cluster %s: delete records on broker %d: %w", a.cluster.Name, id, err)
	}
	return r.(*deleteRecordsResponse), nil
}
