package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// usageError is bad input on the command line: exit 2, with the usage.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// flagSpec is one flag the command line accepts.
type flagSpec struct {
	// value is true when the flag takes a value (--to v41, --to=v41).
	value bool
	// commands lists the subcommands that accept it; nil means every one
	// (the global flags).
	commands []string
}

// lookupFlag returns the spec of a flag by its name without dashes.
func lookupFlag(name string) (flagSpec, bool) {
	changes := []string{"rollback", "promote"}
	switch name {
	case "json", "verbose", "help":
		return flagSpec{}, true
	case "timeout":
		return flagSpec{value: true}, true
	case "to":
		return flagSpec{value: true, commands: []string{"rollback"}}, true
	case "expect-rev", "reason":
		return flagSpec{value: true, commands: changes}, true
	case "force-cold":
		return flagSpec{commands: changes}, true
	case "dry-run":
		return flagSpec{commands: append(changes, "drill")}, true
	case "chart":
		return flagSpec{value: true, commands: []string{"drill"}}, true
	case "limit":
		return flagSpec{value: true, commands: []string{"history"}}, true
	}
	return flagSpec{}, false
}

// invocation is a parsed command line.
type invocation struct {
	command string
	// args are the positional arguments after the command.
	args    []string
	json    bool
	verbose bool
	help    bool
	timeout time.Duration

	to        string
	expectRev int64
	forceCold bool
	dryRun    bool
	reason    string
	// reasonSet is true when --reason was given (even empty).
	reasonSet bool
	limit     int
	// chart is where drill history writes its PNG.
	chart string
}

// defaultTimeout bounds a whole invocation unless --timeout says otherwise.
const defaultTimeout = 60 * time.Second

// parseArgs reads the command line. Flags may come anywhere, before or after
// the subcommand and its arguments, as --name, -name, --name value or
// --name=value; "--" ends them (what follows is positional, e.g. a reason
// that starts with a dash).
func parseArgs(args []string) (invocation, error) {
	inv := invocation{timeout: defaultTimeout}
	// --json is looked for first, so that even a mistake elsewhere on the
	// line is reported as JSON to the script that asked for it.
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "--json" || a == "-json" {
			inv.json = true
		}
	}
	type setFlag struct{ name, value string }
	var (
		set        []setFlag
		positional []string
	)
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			positional = append(positional, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			positional = append(positional, a)
			continue
		}
		name := strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		name, value, hasValue := strings.Cut(name, "=")
		if name == "h" {
			name = "help"
		}
		spec, ok := lookupFlag(name)
		if !ok {
			return inv, usagef("unknown flag %s", flagText(a))
		}
		switch {
		case spec.value && !hasValue:
			if i+1 >= len(args) {
				return inv, usagef("--%s needs a value", name)
			}
			i++
			value = args[i]
		case !spec.value && hasValue:
			return inv, usagef("--%s takes no value", name)
		}
		set = append(set, setFlag{name, value})
	}
	if len(positional) > 0 {
		inv.command, inv.args = positional[0], positional[1:]
	}
	for _, f := range set {
		spec, _ := lookupFlag(f.name)
		if cmds := spec.commands; cmds != nil && !slices.Contains(cmds, inv.command) {
			if inv.command == "" {
				return inv, usagef("--%s needs a command (%s)", f.name, strings.Join(cmds, ", "))
			}
			return inv, usagef("%s does not take --%s", inv.command, f.name)
		}
		if err := inv.set(f.name, f.value); err != nil {
			return inv, err
		}
	}
	return inv, nil
}

// set applies one flag.
func (inv *invocation) set(name, value string) error {
	switch name {
	case "json":
		inv.json = true
	case "verbose":
		inv.verbose = true
	case "help":
		inv.help = true
	case "force-cold":
		inv.forceCold = true
	case "dry-run":
		inv.dryRun = true
	case "timeout":
		d, err := time.ParseDuration(value)
		if err != nil || d <= 0 {
			return usagef("--timeout wants a positive duration such as 30s or 2m, got %q", value)
		}
		inv.timeout = d
	case "to":
		inv.to = value
	case "reason":
		inv.reason, inv.reasonSet = value, true
	case "expect-rev":
		n, err := strconv.ParseInt(value, 10, 64)
		if err != nil || n < 1 {
			return usagef("--expect-rev wants the route's revision as shown by status (a whole number from 1), got %q", value)
		}
		inv.expectRev = n
	case "chart":
		if strings.TrimSpace(value) == "" {
			return usagef("--chart wants a file name for the PNG")
		}
		inv.chart = value
	case "limit":
		n, err := strconv.Atoi(value)
		if err != nil || n < 1 {
			return usagef("--limit wants a whole number from 1, got %q", value)
		}
		inv.limit = n
	}
	return nil
}

// reasonFrom returns the reason: --reason, or the words left after the
// positional arguments a command takes; both at once is ambiguous.
func (inv *invocation) reasonFrom(rest []string) (string, error) {
	words := strings.TrimSpace(strings.Join(rest, " "))
	switch {
	case inv.reasonSet && words != "":
		return "", usagef("give the reason either with --reason or as the remaining words, not both (unexpected %q)", clip(words, 40))
	case inv.reasonSet:
		return strings.TrimSpace(inv.reason), nil
	}
	return words, nil
}

// flagText shows an unknown flag as typed, clipped.
func flagText(a string) string {
	name, _, _ := strings.Cut(a, "=")
	return strconv.Quote(clip(name, 40))
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + "…"
}
