package router

import (
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
)

// Outcome says where a decision sends an event.
type Outcome uint8

// Outcomes of a decision.
const (
	// Routed: the event goes to its region's pinned topic.
	Routed Outcome = iota + 1
	// Quarantined: the event could be read but not placed; it goes to the
	// quarantine topic on the ingest cluster.
	Quarantined
	// DeadLettered: the event could not be decoded; it goes to the
	// dead-letter topic on the ingest cluster.
	DeadLettered
)

// String returns "routed", "quarantined" or "dead-lettered".
func (o Outcome) String() string {
	switch o {
	case Routed:
		return "routed"
	case Quarantined:
		return "quarantined"
	case DeadLettered:
		return "dead-lettered"
	default:
		return "undecided"
	}
}

// Quarantine reasons, used in the residency-reason header and metric labels.
const (
	// ReasonNoCountry: the event has no country (absent or null) and its
	// user has no pin.
	ReasonNoCountry = "no_country"
	// ReasonUnknownCountry: the country belongs to no jurisdiction of the
	// ruleset (or is not a two-letter code).
	ReasonUnknownCountry = "unknown_country"
	// ReasonNoRule: the jurisdiction (from a pin) is not in the ruleset, or
	// its region's cluster is not one the router can write to.
	ReasonNoRule = "no_rule"
)

// Decision is where one event goes, and why.
type Decision struct {
	// Outcome is Routed, Quarantined or DeadLettered.
	Outcome Outcome
	// Jurisdiction is the jurisdiction the event belongs to ("" if none).
	Jurisdiction string
	// Region is the jurisdiction's region ("" unless Routed).
	Region string
	// Cluster is the Kafka cluster of the region's pinned topic ("" unless
	// Routed).
	Cluster string
	// Topic is the region's pinned topic ("" unless Routed).
	Topic string
	// Reason is the quarantine or dead-letter reason ("" when Routed).
	Reason string
	// Pinned is true when a per-user pin, not the country, chose the
	// jurisdiction.
	Pinned bool
}

// Decide places one event. pin is the jurisdiction the event's user is
// pinned to ("" for none); a pin overrides the country. The result is
// Routed with the region's cluster and pinned topic, or Quarantined with a
// reason; Decide never guesses. It does no I/O and does not allocate.
func Decide(f schemas.Fields, pin string, rs *rules.Ruleset) Decision {
	var j *rules.Jurisdiction
	var d Decision
	switch {
	case pin != "":
		var ok bool
		if j, ok = rs.Jurisdiction(pin); !ok {
			return Decision{Outcome: Quarantined, Reason: ReasonNoRule, Jurisdiction: pin, Pinned: true}
		}
		d.Pinned = true
	case !f.HasCountry || len(f.Country) == 0:
		return Decision{Outcome: Quarantined, Reason: ReasonNoCountry}
	default:
		var ok bool
		if j, ok = rs.JurisdictionOf(f.Country); !ok {
			return Decision{Outcome: Quarantined, Reason: ReasonUnknownCountry}
		}
	}
	d.Jurisdiction = j.Name
	g := j.RegionRef()
	if g == nil || g.Topic == "" || g.Cluster == "" {
		d.Outcome, d.Reason = Quarantined, ReasonNoRule
		return d
	}
	d.Outcome, d.Region, d.Cluster, d.Topic = Routed, g.Name, g.Cluster, g.Topic
	return d
}

// DeadLetter is the decision for an event that could not be decoded; err is
// the decode error and the reason is schemas.Reason(err).
func DeadLetter(err error) Decision {
	return Decision{Outcome: DeadLettered, Reason: schemas.Reason(err)}
}
