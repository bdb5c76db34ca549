package router

import (
	"strconv"
	"strings"
)

// Residency headers added to every event the router writes. Incoming headers
// whose names start with HeaderPrefix are dropped first, so a producer (or an
// earlier routing, when replaying) cannot forge or confuse them.
const (
	// HeaderPrefix starts the name of every residency header.
	HeaderPrefix = "residency-"
	// HeaderJurisdiction is the jurisdiction the event belongs to.
	HeaderJurisdiction = "residency-jurisdiction"
	// HeaderRegion is the region whose pinned topic holds the event.
	HeaderRegion = "residency-region"
	// HeaderRulesetVersion is the version of the ruleset that placed it.
	HeaderRulesetVersion = "residency-ruleset-version"
	// HeaderDecidedBy is "country" or "pin": what chose the jurisdiction.
	HeaderDecidedBy = "residency-decided-by"
	// HeaderSourceTopic is the ingest topic the event was read from.
	HeaderSourceTopic = "residency-source-topic"
	// HeaderSourcePartition is its partition in the ingest topic.
	HeaderSourcePartition = "residency-source-partition"
	// HeaderSourceOffset is its offset in that partition.
	HeaderSourceOffset = "residency-source-offset"
	// HeaderRouter is the instance name of the router that wrote it.
	HeaderRouter = "residency-router"
	// HeaderReason is the quarantine or dead-letter reason.
	HeaderReason = "residency-reason"
	// HeaderError is, on dead-letter only, a short description of the
	// decode error (never the payload).
	HeaderError = "residency-error"
)

// maxErrorHeader bounds the length of the residency-error header.
const maxErrorHeader = 200

// outHeaders returns the original headers (minus residency ones) followed by
// the residency headers for decision d.
func outHeaders(m *Message, d *Decision, rulesetVersion, instance string, decodeErr error) []Header {
	hs := make([]Header, 0, len(m.Headers)+9)
	for _, h := range m.Headers {
		if !strings.HasPrefix(h.Key, HeaderPrefix) {
			hs = append(hs, h)
		}
	}
	if d.Jurisdiction != "" {
		hs = append(hs, Header{HeaderJurisdiction, []byte(d.Jurisdiction)})
	}
	if d.Region != "" {
		hs = append(hs, Header{HeaderRegion, []byte(d.Region)})
	}
	if d.Outcome != DeadLettered {
		hs = append(hs, Header{HeaderRulesetVersion, []byte(rulesetVersion)})
		if d.Jurisdiction != "" {
			by := "country"
			if d.Pinned {
				by = "pin"
			}
			hs = append(hs, Header{HeaderDecidedBy, []byte(by)})
		}
	}
	hs = append(hs,
		Header{HeaderSourceTopic, []byte(m.Topic)},
		Header{HeaderSourcePartition, strconv.AppendInt(nil, int64(m.Partition), 10)},
		Header{HeaderSourceOffset, strconv.AppendInt(nil, m.Offset, 10)},
		Header{HeaderRouter, []byte(instance)},
	)
	if d.Reason != "" {
		hs = append(hs, Header{HeaderReason, []byte(d.Reason)})
	}
	if decodeErr != nil {
		msg := decodeErr.Error()
		if len(msg) > maxErrorHeader {
			msg = msg[:maxErrorHeader]
		}
		hs = append(hs, Header{HeaderError, []byte(msg)})
	}
	return hs
}

// HeaderValue returns the value of the last header named key, and whether
// there is one.
func HeaderValue(hs []Header, key string) ([]byte, bool) {
	for i := len(hs) - 1; i >= 0; i-- {
		if hs[i].Key == key {
			return hs[i].Value, true
		}
	}
	return nil, false
}
