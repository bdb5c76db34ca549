package sink

import (
	"errors"
	"fmt"

	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/stream"
)

// ErrContentMismatch is wrapped by CheckContent's errors: the event's own
// fields do not give the placement its residency headers claim.
var ErrContentMismatch = errors.New("the event's content does not match its residency headers")

// Values of the residency-decided-by header.
const (
	decidedByCountry = "country"
	decidedByPin     = "pin"
)

// CheckContent re-derives where a routed event belongs from its own
// content and compares it with what its residency headers claim. hs are the
// event's headers; f its fields, read from its value (schemas.Extractor's
// ExtractRef: country and user id); placedBy the ruleset version its
// residency-ruleset-version header names; pin the jurisdiction its user is
// pinned to now ("" for none).
//
// The decision is router.Decide's, made the way the residency-decided-by
// header says it was:
//
//   - "country": by the event's country alone (pin is not used: a pin set
//     after the event was routed does not make its placement wrong then;
//     the sink's check under the ruleset in force sees it).
//   - "pin": by the user's pin, which must still be there and name the
//     header's jurisdiction. A pin removed or changed since the event was
//     routed cannot be told from a forged header, so such events are
//     refused (fail closed); replay routes them again.
//
// It must be Routed, to the jurisdiction and region of the
// residency-jurisdiction and residency-region headers. Otherwise the error
// wraps ErrContentMismatch and says what disagrees, naming jurisdictions,
// regions and the ruleset version, never a field's value. The decision is
// returned either way.
func CheckContent(hs []stream.Header, f schemas.Fields, pin string, placedBy *rules.Ruleset) (router.Decision, error) {
	if placedBy == nil {
		return router.Decision{}, errors.New("sink: no ruleset to check the event's content against")
	}
	jur, _ := router.HeaderValue(hs, router.HeaderJurisdiction)
	region, _ := router.HeaderValue(hs, router.HeaderRegion)
	by, ok := router.HeaderValue(hs, router.HeaderDecidedBy)
	var d router.Decision
	switch string(by) {
	case decidedByCountry:
		d = router.Decide(f, "", placedBy)
	case decidedByPin:
		if pin == "" {
			return router.Decision{}, fmt.Errorf("%w: decided by pin, but the user has no pin now", ErrContentMismatch)
		}
		if pin != string(jur) {
			return router.Decision{}, fmt.Errorf("%w: decided by pin, but the user is pinned to %q now, not %s", ErrContentMismatch, pin, short(jur))
		}
		d = router.Decide(f, pin, placedBy)
	default:
		if !ok {
			return router.Decision{}, fmt.Errorf("%w: no residency-decided-by header", ErrContentMismatch)
		}
		return router.Decision{}, fmt.Errorf("%w: residency-decided-by is %s, neither country nor pin", ErrContentMismatch, short(by))
	}
	if d.Outcome != router.Routed {
		return d, fmt.Errorf("%w: under ruleset version %s the event's fields route it nowhere (%s), not to jurisdiction %s, region %s",
			ErrContentMismatch, placedBy.VersionString(), d.Reason, short(jur), short(region))
	}
	if d.Jurisdiction != string(jur) || d.Region != string(region) {
		return d, fmt.Errorf("%w: under ruleset version %s the event's fields give jurisdiction %q, region %q; its headers say %s, %s",
			ErrContentMismatch, placedBy.VersionString(), d.Jurisdiction, d.Region, short(jur), short(region))
	}
	return d, nil
}

// short quotes a header value for an error message, cut to 32 bytes: header
// values are not payload, but they are not bounded either.
func short(v []byte) string {
	if len(v) > 32 {
		return fmt.Sprintf("%q...", v[:32])
	}
	return fmt.Sprintf("%q", v)
}
