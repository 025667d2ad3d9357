package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

func main() {
	readme := flag.Bool("readme", false, "print only the README's figures table")
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "usage: benchreport [-readme] bench.txt")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	f, err := os.Open(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
	defer f.Close()
	res, err := parse(f)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
	w := bufio.NewWriter(os.Stdout)
	if *readme {
		writeReadme(w, res)
	} else {
		writeReport(w, res, flag.Arg(0))
	}
	if err := w.Flush(); err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
}

// results is what bench.txt holds.
type results struct {
	// info is the "# key: value" lines, in order.
	info []kv
	// runs maps a benchmark's name (without the -GOMAXPROCS suffix) to its
	// runs, each a map from unit to value.
	runs map[string][]map[string]float64
	// procs is the GOMAXPROCS suffix seen, "" if none.
	procs string
}

type kv struct{ key, value string }

func (r *results) infoValue(key string) string {
	for _, p := range r.info {
		if p.key == key {
			return p.value
		}
	}
	return ""
}

var (
	infoLine  = regexp.MustCompile(`^#\s*([a-zA-Z][a-zA-Z0-9 /=,_.-]*):\s*(.*)$`)
	benchLine = regexp.MustCompile(`^(Benchmark\S+?)(-(\d+))?\s+(\d+)\s+(.+)$`)
)

func parse(r io.Reader) (*results, error) {
	res := &results{runs: map[string][]map[string]float64{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if m := infoLine.FindStringSubmatch(line); m != nil {
			res.info = append(res.info, kv{m[1], strings.TrimSpace(m[2])})
			continue
		}
		if cpu, ok := strings.CutPrefix(line, "cpu: "); ok && res.infoValue("go test cpu") == "" {
			res.info = append(res.info, kv{"go test cpu", strings.TrimSpace(cpu)})
			continue
		}
		m := benchLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		fields := strings.Fields(m[5])
		if len(fields)%2 != 0 {
			continue
		}
		run := map[string]float64{}
		for i := 0; i < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				continue
			}
			run[fields[i+1]] = v
		}
		if n, err := strconv.ParseFloat(m[4], 64); err == nil {
			run["iterations"] = n
		}
		res.runs[m[1]] = append(res.runs[m[1]], run)
		if m[3] != "" {
			res.procs = m[3]
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(res.runs) == 0 {
		return nil, errors.New("no benchmark results in the file")
	}
	return res, nil
}

// stat is one metric over the runs of a benchmark.
type stat struct {
	med, lo, hi float64
	n           int
}

func (r *results) stat(bench, unit string) (stat, bool) {
	var xs []float64
	for _, run := range r.runs[bench] {
		if v, ok := run[unit]; ok {
			xs = append(xs, v)
		}
	}
	if len(xs) == 0 {
		return stat{}, false
	}
	sort.Float64s(xs)
	med := xs[len(xs)/2]
	if len(xs)%2 == 0 {
		med = (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
	}
	return stat{med: med, lo: xs[0], hi: xs[len(xs)-1], n: len(xs)}, true
}

// scaled multiplies a stat by k (k == 0: unchanged).
func (s stat) scaled(k float64) stat {
	if k == 0 {
		return s
	}
	return stat{med: s.med * k, lo: s.lo * k, hi: s.hi * k, n: s.n}
}

// num formats a value with about three significant digits.
func num(v float64) string {
	a := math.Abs(v)
	switch {
	case v == 0:
		return "0"
	case v == math.Trunc(v) && a < 1e15:
		return addCommas(strconv.FormatFloat(v, 'f', 0, 64))
	case a >= 1000:
		return addCommas(strconv.FormatFloat(math.Round(v), 'f', 0, 64))
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	case a >= 0.01:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
	return strconv.FormatFloat(v, 'g', 2, 64)
}

func addCommas(s string) string {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// show formats a stat: the median, and the range when the runs differ.
func (s stat) show(suffix string) string {
	out := num(s.med) + suffix
	if s.n > 1 && num(s.lo) != num(s.hi) {
		out += " (" + num(s.lo) + "–" + num(s.hi) + ")"
	}
	return out
}
