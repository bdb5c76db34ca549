// Package sinktest builds the events and rulesets the sink and store tests
// share: canonical user events in single-object framing, as the router
// republishes them to a pinned topic, with the residency headers set.
package sinktest

import (
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/linkedin/goavro/v2"

	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
)

var (
	codecOnce sync.Once
	codec     *goavro.Codec
	fp        uint64
	codecErr  error
)

// EventID is the event_id of test event i.
func EventID(i int) string { return fmt.Sprintf("6f1c2a4e-0000-4000-8000-%012d", i) }

// UserID is the user_id of test event i.
func UserID(i int) string { return "u-" + strconv.Itoa(1000+i) }

// OccurredAt is the occurred_at of test event i.
func OccurredAt(i int) time.Time { return time.UnixMilli(1_763_800_000_000 + int64(i)*1000).UTC() }

// Event returns test event i encoded in single-object framing with the
// embedded UserEvent schema.
func Event(i int, country string) []byte {
	codecOnce.Do(func() {
		codec, codecErr = goavro.NewCodec(schemas.UserEventSchema)
		if codecErr == nil {
			fp, codecErr = schemas.Fingerprint(schemas.UserEventSchema)
		}
	})
	if codecErr != nil {
		panic(codecErr)
	}
	ev := map[string]any{
		"event_id":    EventID(i),
		"user_id":     UserID(i),
		"occurred_at": OccurredAt(i),
		"event_type":  "VIDEO_VIEW",
		"session_id":  goavro.Union("string", "s-"+strconv.Itoa(i)),
		"device": map[string]any{
			"device_id":     "d-8c1f",
			"os":            "ANDROID",
			"os_version":    goavro.Union("string", "14"),
			"model":         goavro.Union("string", "Pixel 8"),
			"app_version":   "34.1.2",
			"screen_width":  goavro.Union("int", int32(1080)),
			"screen_height": goavro.Union("int", int32(2400)),
		},
		"network":           "WIFI",
		"locale":            goavro.Union("string", "en-US"),
		"timezone":          goavro.Union("string", "America/Chicago"),
		"video_id":          goavro.Union("string", "v-7301"),
		"creator_id":        goavro.Union("string", "c-42"),
		"watch_time_ms":     goavro.Union("long", int64(15_300)),
		"video_duration_ms": goavro.Union("long", int64(31_000)),
		"position_ms":       nil,
		"muted":             false,
		"geo_lat":           goavro.Union("double", 41.88),
		"geo_lon":           goavro.Union("double", -87.63),
		"country":           goavro.Union("string", country),
		"tags":              []any{"fyp", "cooking"},
		"properties":        map[string]any{"source": "for_you", "ab_bucket": "b7"},
		"client_ip_hash":    goavro.Union("io.residency.events.Sha256", make([]byte, 32)),
		"schema_version":    int32(3),
	}
	body, err := codec.BinaryFromNative(nil, ev)
	if err != nil {
		panic(err)
	}
	return schemas.AppendSingleObject(nil, fp, body)
}

// Message returns test event i as the router writes it to topic: keyed by
// user id, with the residency headers of jurisdiction and region (no region
// header when region is "").
func Message(topic string, i int, jurisdiction, region, country string) router.Message {
	hs := []router.Header{{Key: "traceparent", Value: []byte("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")}}
	if jurisdiction != "" {
		hs = append(hs, router.Header{Key: router.HeaderJurisdiction, Value: []byte(jurisdiction)})
	}
	if region != "" {
		hs = append(hs, router.Header{Key: router.HeaderRegion, Value: []byte(region)})
	}
	hs = append(hs,
		router.Header{Key: router.HeaderRulesetVersion, Value: []byte("7")},
		router.Header{Key: router.HeaderSourceTopic, Value: []byte("events")},
		router.Header{Key: router.HeaderSourcePartition, Value: []byte(strconv.Itoa(i % 3))},
		router.Header{Key: router.HeaderSourceOffset, Value: []byte(strconv.Itoa(10_000 + i))},
		router.Header{Key: router.HeaderRouter, Value: []byte("router-0")},
	)
	return router.Message{Topic: topic, Key: []byte(UserID(i)), Value: Event(i, country), Headers: hs, Time: OccurredAt(i).Add(time.Second)}
}

// Ruleset returns a ruleset of the given version with regions us (pinned
// topic usTopic) and eu (euTopic), where the store named store is approved
// for regions; with no regions the store is not listed at all.
func Ruleset(version int64, usTopic, euTopic, store string, regions ...string) *rules.Ruleset {
	y := fmt.Sprintf(`
jurisdictions:
  - {name: US, region: us, countries: [US]}
  - {name: EU, region: eu, countries: [DE, FR]}
regions:
  - {name: us, cluster: ingest, topic: %q}
  - {name: eu, cluster: ingest, topic: %q}
stores:
  - {name: other-store, regions: [us, eu]}
`, usTopic, euTopic)
	if len(regions) > 0 {
		y += fmt.Sprintf("  - {name: %q, regions: [", store)
		for i, g := range regions {
			if i > 0 {
				y += ", "
			}
			y += g
		}
		y += "]}\n"
	}
	rs, err := rules.Parse([]byte(y))
	if err != nil {
		panic(err)
	}
	rs.SetVersion(version)
	return rs
}

// Rules is a RulesSource whose ruleset a test swaps, as `rules apply` would
// make a rules cache do.
type Rules struct {
	p atomic.Pointer[rules.Ruleset]
}

// NewRules returns a source holding rs.
func NewRules(rs *rules.Ruleset) *Rules {
	r := &Rules{}
	r.p.Store(rs)
	return r
}

// Set makes rs the ruleset in force (nil: none, Current fails).
func (r *Rules) Set(rs *rules.Ruleset) { r.p.Store(rs) }

// Current returns the ruleset in force.
func (r *Rules) Current() (*rules.Ruleset, error) {
	rs := r.p.Load()
	if rs == nil {
		return nil, rules.ErrNoRuleset
	}
	return rs, nil
}
