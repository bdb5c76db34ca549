// Package replay re-routes ranges of events after a rule change or a fix:
// it reads a range of the ingest topic, the quarantine topic, the
// dead-letter topic or a sink quarantine topic and runs every event through
// the router's own pipeline (router.Pipeline: the same field reading,
// pins, decision, refused destinations and headers) under a chosen
// ruleset, republishing it with the router's residency headers plus replay
// provenance (router.HeaderReplayID, the coordinates it was read from,
// router.HeaderReplayCount). Planning a replay (NewPlan, Rulesets) lives
// here too; cmd/residency only parses the flags and wires.
//
// A dry run (Config.DryRun) reads the same range and produces the same
// Report without writing anything: how many events would go where, which
// would move (from → to, with counts and sample event ids) and which stay
// unplaceable and why.
//
// The residency invariant holds for replays as for the router: an event is
// written only to the pinned topic of its decided region, or to quarantine
// or dead-letter on the ingest cluster. An event read from quarantine that
// is still unplaceable stays where it is (no new copy), as does one read
// from dead-letter that still cannot be decoded. Every destination the
// router refuses is refused (Config.IngestTopics), so a replay never writes
// where the router reads. A loop guard refuses events already replayed
// Plan.MaxReplays times. Offsets an earlier replay already replayed under
// the same ruleset version are skipped (Config.Checkpoints, Plan.Again).
// The residency-* headers of an ingest topic's records are ignored:
// producers, not residency, set them.
//
// A real run publishes only while its ruleset is the one in force
// (Config.InForce, a rules.Cache): it checks before every batch and stops
// with ErrRulesetChanged, checkpointed, when another version is applied or
// the ruleset in force cannot be confirmed. A dry run may use any ruleset.
//
// Progress is checkpointed per partition (Checkpoints: connectors/redis's
// in Redis, or FileCheckpoints) after every published batch, keyed by the
// replay id, so an interrupted replay resumes where it stopped. Events published but not
// yet checkpointed when a replay dies are published again on resume; sinks
// are idempotent on event_id, so stores still hold each event once.
package replay
