package commands

// RollbackRequest asks for a route to be rolled back.
type RollbackRequest struct {
	Origin Origin
	Route  string
	// To is the target version; "" or "previous" means the route's
	// previous version.
	To     string
	Reason string
	// ForceCold rolls back even when the warm check finds the target not
	// warm (audited as such). A target no node serves is refused anyway.
	ForceCold bool
	// DryRun runs the resolve and warm phases only and reports what would
	// happen.
	DryRun bool
	// Preflight is a dry run for a pre-flight card: the person asked for a
	// rollback, so a refusal is audited like one (an explicit --dry-run's
	// is not).
	Preflight bool
	// ExpectRev is the route revision the operator saw (the confirm
	// button's value, backflipctl --expect-rev). If the route has moved
	// since, the rollback is refused and the operator told what changed;
	// it is never re-targeted. Zero means "the revision read now" (a
	// rollback typed with --now).
	ExpectRev int64
	// Op, when set, is the op id minted earlier (for a pre-flight card);
	// "" mints one.
	Op string
}

// PromoteRequest asks for a route to move forward to a new version (what a
// deploy pipeline calls). A route that does not exist is created.
type PromoteRequest struct {
	Origin  Origin
	Route   string
	Version string
	Reason  string
	// ExpectRev as in RollbackRequest; for a route that does not exist yet
	// it must be 0.
	ExpectRev int64
	// ForceCold promotes even when the new version is not warm.
	ForceCold bool
	DryRun    bool
	Op        string
}
