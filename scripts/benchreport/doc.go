// Command benchreport turns the output of `make bench` (bench.txt: go test
// -bench output with the machine it ran on in "# key: value" lines) into
// BENCHMARKS.md: the machine, then every figure the issue asks for with
// the floor or anchor it is judged against, the ratio, the target and a
// verdict, and the command that reproduces it.
//
//	go run ./scripts/benchreport bench.txt > BENCHMARKS.md
//	go run ./scripts/benchreport -readme bench.txt   # the README's figures table
//
// When the benchmarks ran with -count n, each metric is the median of its n runs, with the range
// when they differ. A figure whose benchmark is not in the file is listed
// as not run.
//
// It only reads the file it is given and writes to stdout: it runs no
// benchmark and must not import backflip's packages.
package main
