// Package differential holds the differential test of the routing promise
// (issue 12): random events — valid ones in older, current and newer
// writer schemas, with nested field paths, in every framing, and random
// corruptions of them; null and empty keys and header values, repeated
// headers — are read four ways, which must agree on every decision:
//
//  1. the router's pipeline (router.Pipeline, in memory, and router.Router
//     on the dev stack's real Kafka with its real schema registry);
//  2. `residency explain`'s decision (router.Pipeline.DecideOne, the code
//     explain runs);
//  3. the sink's re-derivation: the event read the way its
//     residency-schema header says, then sink.CheckContent (and, for the
//     in-memory run, a real sink.Sink draining the pinned topics);
//  4. a reference reading written in the test: goavro's full decode of the
//     framed value with its writer schema, no bytes left over, then
//     router.Decide on the decoded country and user id with a pin map.
//
// The router's output must also hold the input's key, value and headers
// byte for byte (null kept apart from empty, order and repeats kept),
// followed by the residency headers the decision calls for.
//
// FuzzDifferential drives the same comparison with the fuzzer
// (`go test ./internal/differential -run '^$' -fuzz FuzzDifferential`);
// its corpus in testdata/fuzz/FuzzDifferential holds a seed for every
// reason the router gives, and `go test` runs it. The package has no code
// but its tests.
package differential
