//go:build !unix

package bench

// cpuSeconds is not measured on this platform.
func cpuSeconds() float64 { return 0 }

// peakRSS is not measured on this platform.
func peakRSS() int64 { return 0 }

// loadAverage is not measured on this platform.
func loadAverage() [3]float64 { return [3]float64{} }
