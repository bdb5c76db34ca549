package erasure

import (
	"context"
	"fmt"
	"strconv"

	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/stream"
)

// How a purge knows that the sinks stored an ingest offset
// (PurgeOptions.AfterSinks).
//
// A sink's consumer group commits offsets of its pinned topic, not of the
// ingest topic; but every record the router (or replay) writes to a pinned
// topic carries the ingest coordinates it came from
// (residency-source-topic/-partition/-offset). So, per pinned-topic
// partition, the records at or past a sink group's committed offset are
// exactly the ones that sink has not stored yet (its unstored tail), and
// the lowest ingest offset among them, per ingest partition, is where the
// sinks' progress stops. The purge deletes an ingest partition only below
// min(router commit, that lowest unstored offset).
//
// Why it is sound: the router commits an ingest offset only after the
// records before it were acknowledged by their pinned topic, and the purge
// reads the router's commits before it reads the pinned topics' high-water
// marks, so every routed record below the commit is in some pinned topic
// below the high-water mark read: either below its sinks' commits (stored)
// or in a tail that was read. Quarantined and dead-lettered events never
// reach a sink and hold nothing back.
//
// Cost: one read of every pinned topic's unstored tail (from the lowest
// commit of the groups reading it to the high-water mark) per purge:
// records times the sinks' lag, which is small while the sinks keep up. A
// tail longer than MaxScan records, a sink group that never committed a
// partition whose log no longer starts at 0, or a commit below the log
// start (the sink missed records retention deleted) make the progress
// unknown, and the purge then holds every ingest partition
// (HoldSinksUnknown): it never guesses.

// srcKey is an ingest topic partition.
type srcKey struct {
	topic     string
	partition int
}

// sinkProgress is what the sinks' tails say.
type sinkProgress struct {
	low     map[srcKey]int64  // lowest unstored ingest offset
	who     map[srcKey]string // which sink holds it
	states  []DownstreamState
	unknown string // why the progress is unknown ("" when known)
}

func (p *Purger) sinksProgress(ctx context.Context) (*sinkProgress, error) {
	out := &sinkProgress{low: map[srcKey]int64{}, who: map[srcKey]string{}}
	ingest := map[string]bool{}
	for _, t := range p.cfg.IngestTopics {
		ingest[t] = true
	}
	// Per topic partition: the lowest commit among its groups, and who.
	type part struct {
		cluster, topic string
		partition      int
	}
	type tail struct {
		start, end int64
		names      []string
	}
	tails := map[part]*tail{}
	var order []part
	for _, d := range p.cfg.Downstream {
		adm := p.cfg.Clusters[d.Topic.Cluster].Admin
		committed, err := adm.CommittedOffsets(ctx, d.Group, d.Topic.Name)
		if err != nil {
			return nil, fmt.Errorf("erasure: purge: sink %s: %w", d.Name, err)
		}
		low, high, err := adm.Watermarks(ctx, d.Topic.Name)
		if err != nil {
			return nil, fmt.Errorf("erasure: purge: sink %s: %w", d.Name, err)
		}
		st := DownstreamState{Downstream: d}
		for _, q := range sortedKeys(high) {
			start, ok := committed[q]
			switch {
			case !ok && low[q] > 0:
				st.Problem = fmt.Sprintf("group %s has never committed %s/%d, whose log starts at %d: records before it may never have been stored", d.Group, d.Topic.Name, q, low[q])
			case !ok:
				start = 0
			case start < low[q]:
				st.Problem = fmt.Sprintf("group %s committed %s/%d at %d, below its log start %d: records it never stored are gone from the topic", d.Group, d.Topic.Name, q, start, low[q])
			}
			if start >= high[q] {
				continue
			}
			st.Unstored += high[q] - start
			if high[q]-start > p.cfg.MaxScan {
				st.Problem = fmt.Sprintf("%d records of %s/%d are not stored yet, more than the %d a purge reads (max scan)", high[q]-start, d.Topic.Name, q, p.cfg.MaxScan)
			}
			k := part{d.Topic.Cluster, d.Topic.Name, q}
			t, ok := tails[k]
			if !ok {
				t = &tail{start: start, end: high[q]}
				tails[k] = t
				order = append(order, k)
			}
			t.start = min(t.start, start)
			t.names = append(t.names, d.Name)
		}
		if st.Problem != "" && out.unknown == "" {
			out.unknown = "sink " + d.Name + ": " + st.Problem
		}
		out.states = append(out.states, st)
	}
	if out.unknown != "" {
		p.log.Warn("purge: the sinks' progress is unknown; ingest partitions are held", "reason", out.unknown)
		return out, nil
	}
	for _, k := range order {
		t := tails[k]
		rd := p.cfg.Clusters[k.cluster].Reader
		err := rd.ReadRange(ctx, k.topic, k.partition, max(t.start, 0), t.end, p.cfg.Batch, func(ms []stream.Message) error {
			for i := range ms {
				src, off, ok := sourceOf(&ms[i])
				if !ok || !ingest[src.topic] {
					continue
				}
				if cur, has := out.low[src]; !has || off < cur {
					out.low[src] = off
					out.who[src] = fmt.Sprintf("sink %s (%s/%d offset %d)", joinNames(t.names), k.topic, k.partition, ms[i].Offset)
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("erasure: purge: read %s/%d: %w", k.topic, k.partition, err)
		}
	}
	return out, nil
}

// sourceOf reads a routed record's ingest coordinates from its headers.
func sourceOf(m *stream.Message) (srcKey, int64, bool) {
	var topic string
	part, off := int64(-1), int64(-1)
	for _, h := range m.Headers {
		switch h.Key {
		case router.HeaderSourceTopic:
			topic = string(h.Value)
		case router.HeaderSourcePartition:
			if v, err := strconv.ParseInt(string(h.Value), 10, 32); err == nil {
				part = v
			}
		case router.HeaderSourceOffset:
			if v, err := strconv.ParseInt(string(h.Value), 10, 64); err == nil {
				off = v
			}
		}
	}
	if topic == "" || part < 0 || off < 0 {
		return srcKey{}, 0, false
	}
	return srcKey{topic, int(part)}, off, true
}

func joinNames(ns []string) string {
	if len(ns) == 1 {
		return ns[0]
	}
	s := ""
	for i, n := range ns {
		if i > 0 {
			s += " or "
		}
		s += n
	}
	return s
}
