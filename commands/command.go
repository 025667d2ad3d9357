package commands

import "context"

// Command is one parsed chat command. Every command renders back to chat
// text (String) that parses to an equal command.
type Command interface {
	// Verb names the command for authorization and audit, e.g. "rollback",
	// "status", "drill.run".
	Verb() Verb
	// String renders the command as the text a person would type after
	// the slash, e.g. `chat-70b --to v41 --now "latency spike"`; prefixed
	// with Slash() it is a whole chat command.
	String() string
	// Slash is "/rollback" or "/drill".
	Slash() string
}

// Verb is what a command does.
type Verb string

// The verbs of the chat grammar and of backflipctl.
const (
	VerbHelp          Verb = "help"
	VerbStatus        Verb = "status"
	VerbHistory       Verb = "history"
	VerbRollback      Verb = "rollback"
	VerbPromote       Verb = "promote"
	VerbDrillHelp     Verb = "drill.help"
	VerbDrillRun      Verb = "drill.run"
	VerbDrillSchedule Verb = "drill.schedule"
	VerbDrillCancel   Verb = "drill.cancel"
	VerbDrillSkip     Verb = "drill.skip"
	VerbDrillList     Verb = "drill.list"
	VerbDrillHistory  Verb = "drill.history"
)

// Acts reports whether the verb changes something (and so needs
// authorization); reading verbs are open to everyone who can type them.
func (v Verb) Acts() bool {
	switch v {
	case VerbRollback, VerbPromote, VerbDrillRun, VerbDrillSchedule, VerbDrillCancel, VerbDrillSkip:
		return true
	}
	return false
}

// IsDrill reports whether the verb is one of /drill's.
func (v Verb) IsDrill() bool {
	switch v {
	case VerbDrillHelp, VerbDrillRun, VerbDrillSchedule, VerbDrillCancel, VerbDrillSkip, VerbDrillList, VerbDrillHistory:
		return true
	}
	return false
}

// Usage lines of the contract's chat grammar, shown with every EINVALID
// error of the grammar.
const (
	RollbackUsage = "/rollback <route> [--to <version>] [--now] [--dry-run] [--force-cold] <reason ...>\n" +
		"/rollback status [<route>] · /rollback history [<route>] [--limit N] · /rollback help"
	DrillUsage = "/drill run <route> [--dry-run] · /drill schedule <route> \"<cron>\" · /drill cancel <route> · " +
		"/drill skip <route> · /drill list · /drill history [<route>]"
)

// DefaultHistoryLimit and MaxHistoryLimit bound `/rollback history --limit`.
const (
	DefaultHistoryLimit = 20
	MaxHistoryLimit     = 500
)

// HelpCmd is `/rollback help` or `/drill help`.
type HelpCmd struct {
	// Drill is true for `/drill help`.
	Drill bool
}

// StatusCmd is `/rollback status [<route>]`; Route "" means every route.
type StatusCmd struct{ Route string }

// HistoryCmd is `/rollback history [<route>] [--limit N]`; Route "" means
// every route; Limit 0 means DefaultHistoryLimit.
type HistoryCmd struct {
	Route string
	Limit int
}

// RollbackCmd is `/rollback <route> [--to <version>] [--now] [--dry-run]
// [--force-cold] <reason ...>`. To "" means the route's previous version.
type RollbackCmd struct {
	Route     string
	To        string
	Now       bool
	DryRun    bool
	ForceCold bool
	Reason    string
}

// DrillCommand is one of the /drill commands, executed by a DrillService.
type DrillCommand interface {
	Command
	drill()
}

// DrillRunCmd is `/drill run <route> [--dry-run]`.
type DrillRunCmd struct {
	Route  string
	DryRun bool
}

// DrillScheduleCmd is `/drill schedule <route> "<cron>"`. Cron is the
// expression as typed (quotes removed); the drills package parses it.
type DrillScheduleCmd struct {
	Route string
	Cron  string
}

// DrillCancelCmd is `/drill cancel <route>`.
type DrillCancelCmd struct{ Route string }

// DrillSkipCmd is `/drill skip <route>`: skip the next scheduled run.
type DrillSkipCmd struct{ Route string }

// DrillListCmd is `/drill list`.
type DrillListCmd struct{}

// DrillHistoryCmd is `/drill history [<route>]`.
type DrillHistoryCmd struct{ Route string }

func (c HelpCmd) Verb() Verb {
	if c.Drill {
		return VerbDrillHelp
	}
	return VerbHelp
}
func (StatusCmd) Verb() Verb        { return VerbStatus }
func (HistoryCmd) Verb() Verb       { return VerbHistory }
func (RollbackCmd) Verb() Verb      { return VerbRollback }
func (DrillRunCmd) Verb() Verb      { return VerbDrillRun }
func (DrillScheduleCmd) Verb() Verb { return VerbDrillSchedule }
func (DrillCancelCmd) Verb() Verb   { return VerbDrillCancel }
func (DrillSkipCmd) Verb() Verb     { return VerbDrillSkip }
func (DrillListCmd) Verb() Verb     { return VerbDrillList }
func (DrillHistoryCmd) Verb() Verb  { return VerbDrillHistory }

func (c HelpCmd) Slash() string {
	if c.Drill {
		return "/drill"
	}
	return "/rollback"
}
func (StatusCmd) Slash() string        { return "/rollback" }
func (HistoryCmd) Slash() string       { return "/rollback" }
func (RollbackCmd) Slash() string      { return "/rollback" }
func (DrillRunCmd) Slash() string      { return "/drill" }
func (DrillScheduleCmd) Slash() string { return "/drill" }
func (DrillCancelCmd) Slash() string   { return "/drill" }
func (DrillSkipCmd) Slash() string     { return "/drill" }
func (DrillListCmd) Slash() string     { return "/drill" }
func (DrillHistoryCmd) Slash() string  { return "/drill" }

func (DrillRunCmd) drill()      {}
func (DrillScheduleCmd) drill() {}
func (DrillCancelCmd) drill()   {}
func (DrillSkipCmd) drill()     {}
func (DrillListCmd) drill()     {}
func (DrillHistoryCmd) drill()  {}

// DrillService runs the /drill commands. The drills package implements it;
// commands only parses, authorizes and dispatches, so neither imports the
// other's internals. Errors should be *Error values with the codes of this
// package.
type DrillService interface {
	Drill(ctx context.Context, origin Origin, cmd DrillCommand, progress ProgressFunc) (DrillReply, error)
}

// DrillReply is what a drill command answers.
type DrillReply struct {
	// Text is the answer for a person (plain text, may span lines).
	Text string
	// Chart, when set, is a PNG to attach (drill history trend).
	Chart []byte
	// Result is the drill's rollback and return, when one ran.
	Result *DrillResult
}

// DrillResult is what a drill run reports: both directions' results.
type DrillResult struct {
	Rollback   *Result
	Return     *Result
	Outcome    string
	Regression string
}
