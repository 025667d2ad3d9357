// Package heapsample reads the Go heap in use without stopping the world,
// and samples its peak while a benchmark runs. Benchmarks that report
// memory (fleet/warm, commands) share it.
//
// It only reads runtime/metrics: it must not trigger a GC or stop the
// world, so sampling does not change what it measures.
package heapsample
