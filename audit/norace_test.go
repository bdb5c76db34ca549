//go:build !race

package audit

// raceOn: see race_test.go.
const raceOn = false
