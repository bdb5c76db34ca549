// Package layout holds the test that checks the import rules of
// docs/package-layout.md (layout_test.go): which package of the module may
// import which, which client libraries stay out of the routing decision,
// and that the residency binary links no test code. It has no code of its
// own.
package layout
