// Package erasure closes the copies left behind: it deletes ingest,
// quarantine and dead-letter records that are safely placed (purge),
// removes one user's data from every store and keeps it from coming back
// (erasure), and shows where a jurisdiction's data still sits outside its
// approved places (residue).
//
// Moving data to the right region is half of the residency promise; the
// other half is that the copies left elsewhere go, and that anyone can
// check they are gone. The copies left behind are the ingest topic (every
// event of every jurisdiction, until retention ends), the quarantine and
// dead-letter topics, the stores of a region a jurisdiction has left, and a
// user's rows after they asked to be forgotten.
//
//   - Purger plans and runs purges: per partition of the ingest topics, up
//     to the router group's committed offset, held back by a minimum age,
//     by the sinks' progress (AfterSinks: the lowest ingest offset some
//     sink has not stored yet, read from the unstored tails of the pinned
//     topics) and by unfinished replays; never past a committed offset; a
//     partition the group never committed is left alone and reported. The
//     quarantine and dead-letter topics are purged over the ranges that a
//     finished replay moved elsewhere entirely; with Pinned, the pinned
//     topics up to what every sink draining them committed. Each deleted range leaves an
//     audit leaf (audit.KindPurge) before it is deleted.
//   - Eraser removes a user's rows from every store, records an erasure
//     marker first (Markers: keyed hashes of user ids with the time of
//     their erasure, which every sink checks before writing, see Guard), erases
//     twice (a second pass after sinks in flight have landed), appends an
//     audit leaf per store and pass (audit.KindErasure) and returns a
//     Receipt: what was removed where, counts, no payloads. A Locator lists
//     where the user's events still sit in Kafka topics and when retention
//     removes them.
//   - ResidueScanner reads every topic and store the config knows and
//     reports each event whose own content (decided again with
//     router.Decide under the ruleset in force, with the user's pin) belongs
//     to a jurisdiction but sits outside its approved places: coordinates
//     and counts, never payloads.
//
// The package owns small ports (Admin, TopicReader, Store, Markers, Locker,
// Ledger, ReplaySource, EventReader) so its tests run on in-memory fakes;
// connectors/kafka's Admin and RangeReader, connectors/postgres and
// connectors/objectstore satisfy them. See docs/erasure.md.
package erasure
