// Package routertest builds sample user events for tests and the demo
// (Encoder). The in-memory broker and the adapter conformance suite moved to
// stream/streamtest.
package routertest
