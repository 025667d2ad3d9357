package commands

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/fleet/routing"
)

// The environment variables a refusal names, so that the person reading it
// in an incident knows exactly what an operator has to change.
const (
	envIncidentChannels   = "BACKFLIP_INCIDENT_CHANNELS"
	envRollbackUsers      = "BACKFLIP_ROLLBACK_USERS"
	envRollbackUsergroups = "BACKFLIP_ROLLBACK_USERGROUPS"
	envDrillUsers         = "BACKFLIP_DRILL_USERS"
	envDrillUsergroups    = "BACKFLIP_DRILL_USERGROUPS"
)

// maxListed is how many users, groups or channels a message lists before it
// says "and N more": a refusal must stay readable in a chat reply.
const maxListed = 5

// Authorizer decides whether an actor may run a verb on a route from where
// they asked: the incident-channel guard, the BACKFLIP_*_USERS and
// *_USERGROUPS lists, and the route's owners in policies/<route>. It holds
// no mutable state and is safe for concurrent use.
type Authorizer struct {
	channels []channelEntry
	rollback accessPair
	drill    accessPair
	groups   GroupMembership
	kv       clientv3.KV
	keys     Keys
	log      *zap.Logger
}

// Decision is the answer for one request. A refusal is a Decision with
// Allowed false and a Message for the person who asked, never an error:
// errors are kept for when no decision could be made (etcd did not answer,
// the route name is invalid).
type Decision struct {
	Allowed bool
	// Message explains a refusal in plain words: who may do it and where.
	// It is empty when the request is allowed.
	Message string
	// Via says what allowed the request, for the audit trail, e.g.
	// "read-only", "BACKFLIP_ROLLBACK_USERS", "usergroup S012 and owners of
	// chat-70b".
	Via string
	// Owners are the route's owners from its policy when they narrowed the
	// decision (nil when the route has none or they were not consulted).
	Owners []string
}

// accessPair is one pair of lists (users, user groups) and the variables
// that set them.
type accessPair struct {
	users, groups       []string
	usersVar, groupsVar string
}

// channelEntry is one BACKFLIP_INCIDENT_CHANNELS entry, prepared once.
type channelEntry struct {
	// id is the entry as configured without a leading '#': it matches a
	// channel ID exactly.
	id string
	// glob is the lower-cased entry matched against a channel's name; it is
	// "" when the entry is not a valid path.Match pattern, and then the
	// entry matches by ID only.
	glob string
}

// NewAuthorizer returns an Authorizer for access. groups answers user-group
// membership; nil means groups cannot be checked, so only users listed by ID
// can act (refusals say so). kv reads route policies under prefix. A nil
// log means no logging.
func NewAuthorizer(access Access, groups GroupMembership, kv Etcd, prefix string, log *zap.Logger) *Authorizer {
	if log == nil {
		log = zap.NewNop()
	}
	a := &Authorizer{
		rollback: accessPair{users: cleanList(access.RollbackUsers), groups: cleanList(access.RollbackUsergroups),
			usersVar: envRollbackUsers, groupsVar: envRollbackUsergroups},
		drill: accessPair{users: cleanList(access.DrillUsers), groups: cleanList(access.DrillUsergroups),
			usersVar: envDrillUsers, groupsVar: envDrillUsergroups},
		groups: groups,
		kv:     kv,
		keys:   Keys{Prefix: prefix},
		log:    log,
	}
	for _, e := range cleanList(access.IncidentChannels) {
		e = strings.TrimPrefix(e, "#")
		if e == "" {
			continue
		}
		ce := channelEntry{id: e}
		if _, err := path.Match(e, ""); err == nil {
			ce.glob = strings.ToLower(e)
		} else {
			// Configuration validation refuses such entries at start-up; one
			// that gets here anyway still works as a channel ID.
			log.Warn("incident channel entry is not a valid name glob; it matches by channel ID only",
				zap.String("entry", e), zap.Error(err))
		}
		a.channels = append(a.channels, ce)
	}
	return a
}

// cleanList copies a configured list without blanks and surrounding
// spaces, so an empty variable (which some loaders turn into [""]) means an
// empty list and never matches an actor whose ID is unknown.
func cleanList(in []string) []string {
	var out []string
	for _, s := range in {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// Authorize decides whether o may run verb on route.
//
// Reading verbs are open to everyone, anywhere. backflipctl (o.Trusted) and
// backflip's own jobs (TransportSystem) are allowed: etcd roles are their
// gate. Everyone else must, for rollback and promote from chat, ask in an
// incident channel; must be listed in the verb's users or be a member of
// one of its user groups; and, when the route's policy names owners, must
// also be an owner or a member of an owning group.
//
// It returns an error only when it cannot decide: an invalid route name
// (EINVALID), etcd not answering while the policy is needed
// (EUNAVAILABLE), or an unknown verb (EINTERNAL). A malformed policy or a
// failed membership lookup is a refusal that says so, because the person
// asking needs to read why.
func (a *Authorizer) Authorize(ctx context.Context, o Origin, verb Verb, route string) (Decision, error) {
	d, err := a.decide(ctx, o, verb, route)
	if err == nil && verb.Acts() {
		// Refusals are audited by the caller; this line is for following a
		// decision in the bot's own logs.
		a.log.Debug("authorization decided", zap.String("actor", o.Actor.ID), zap.String("verb", string(verb)),
			zap.String("route", route), zap.String("channel_id", o.Channel.ID), zap.String("channel_name", o.Channel.Name),
			zap.String("transport", string(o.Transport)), zap.Bool("allowed", d.Allowed), zap.String("via", d.Via))
	}
	return d, err
}

func (a *Authorizer) decide(ctx context.Context, o Origin, verb Verb, route string) (Decision, error) {
	if !knownVerb(verb) {
		// Treating an unknown verb as read-only would open whatever a new
		// verb does to everyone; a bug must not widen access.
		return Decision{}, &Error{Code: EINTERNAL, Message: fmt.Sprintf("authorize: unknown verb %q", verb)}
	}
	if !verb.Acts() {
		return Decision{Allowed: true, Via: "read-only"}, nil
	}
	if err := routing.ValidateRoute(route); err != nil {
		return Decision{}, &Error{Code: EINVALID, Message: invalidMessage(err), Usage: usageOf(verb), Err: err}
	}
	switch {
	case o.Trusted:
		return Decision{Allowed: true, Via: "etcd credentials"}, nil
	case o.Transport == TransportSystem:
		return Decision{Allowed: true, Via: "system"}, nil
	}

	if (verb == VerbRollback || verb == VerbPromote) && fromChat(o.Transport) {
		if msg := a.channelRefusal(o.Channel, verb, route); msg != "" {
			return Decision{Message: msg}, nil
		}
	}

	w := a.rollback
	if verb.IsDrill() {
		w = a.drill
	}
	if len(w.users) == 0 && len(w.groups) == 0 {
		return Decision{Message: nobodyMessage(verb, w)}, nil
	}
	if o.Actor.ID == "" {
		// No list entry can name an unknown person; saying so beats a
		// refusal that lists people the asker may well be one of.
		return Decision{Message: fmt.Sprintf("you may not %s: backflip could not tell who you are; ask again from Slack or use backflipctl", actionText(verb, route))}, nil
	}

	global := a.match(ctx, o.Actor.ID, w.users, w.groups, w.usersVar)
	if !global.ok {
		if ctx.Err() != nil && len(global.failed) > 0 {
			return Decision{}, wrapf(ctx.Err(), EUNAVAILABLE, "checking who may %s was interrupted; nothing changed", actionText(verb, route))
		}
		// The owners only make the message more useful here, so a policy
		// that cannot be read does not turn a clear refusal into an error.
		owners, _ := a.readOwners(ctx, route)
		return Decision{Message: a.globalRefusal(verb, route, w, global, owners)}, nil
	}

	owners, err := a.readOwners(ctx, route)
	var malformed *routing.MalformedError
	switch {
	case errors.As(err, &malformed):
		a.log.Warn("policy is malformed; refusing to act on the route", zap.String("key", malformed.Key),
			zap.String("route", route), zap.Error(malformed.Err))
		return Decision{Message: fmt.Sprintf("you may not %s: its policy at %s is malformed (%s), so backflip will not act on %s until it is fixed; an operator can fix it, or act with backflipctl",
			actionText(verb, route), malformed.Key, Clip(chatSafe(malformed.Err.Error()), 160), route)}, nil
	case err != nil:
		return Decision{}, err
	case len(owners) == 0:
		return Decision{Allowed: true, Via: global.via}, nil
	}

	var ownerGroups []string
	for _, id := range owners {
		if isGroupID(id) {
			ownerGroups = append(ownerGroups, id)
		}
	}
	owner := a.match(ctx, o.Actor.ID, owners, ownerGroups, "")
	if owner.ok {
		via := global.via + " and owners of " + route
		if owner.via != "" {
			via += " (" + owner.via + ")"
		}
		return Decision{Allowed: true, Via: via, Owners: owners}, nil
	}
	if ctx.Err() != nil && len(owner.failed) > 0 {
		return Decision{}, wrapf(ctx.Err(), EUNAVAILABLE, "checking who may %s was interrupted; nothing changed", actionText(verb, route))
	}
	return Decision{Message: a.ownerRefusal(verb, route, owners, owner), Owners: owners}, nil
}

// matchResult is how an actor fared against one pair of lists.
type matchResult struct {
	ok bool
	// via names what matched: usersVia for a listed user, "usergroup S…"
	// for a group.
	via string
	// failed are the groups whose membership lookup failed.
	failed []string
	// unchecked is true when there were groups but no GroupMembership to
	// ask.
	unchecked bool
}

// match reports whether actor is in users or a member of one of groups.
// Users are checked first so that a listed user costs no lookup, and the
// lookups stop at the first group that answers yes: a failed lookup of one
// group must not deny someone another rule allows.
func (a *Authorizer) match(ctx context.Context, actor string, users, groups []string, usersVia string) matchResult {
	for _, u := range users {
		if u == actor {
			return matchResult{ok: true, via: usersVia}
		}
	}
	var r matchResult
	if len(groups) == 0 {
		return r
	}
	if a.groups == nil {
		r.unchecked = true
		return r
	}
	for _, g := range groups {
		member, err := a.groups.IsMember(ctx, actor, g)
		if err != nil {
			a.log.Warn("user-group membership lookup failed", zap.String("actor", actor),
				zap.String("usergroup", g), zap.Error(err))
			r.failed = append(r.failed, g)
			continue
		}
		if member {
			return matchResult{ok: true, via: "usergroup " + g}
		}
	}
	return r
}

// readOwners returns the owners in route's policy; no policy means no
// owners. The read is linearizable (clientv3's default) so that an owner
// removed a moment ago is not honoured by a lagging member. A decode
// failure is a *routing.MalformedError; an etcd failure is an EUNAVAILABLE
// *Error.
func (a *Authorizer) readOwners(ctx context.Context, route string) ([]string, error) {
	if a.kv == nil {
		return nil, &Error{Code: EINTERNAL, Message: "authorize: no etcd client to read route policies"}
	}
	key := a.keys.Policy(route)
	resp, err := a.kv.Get(ctx, key)
	if err != nil {
		return nil, wrapf(err, EUNAVAILABLE, "etcd did not answer while backflip read who may act on %s (%s); nothing changed, try again", route, key)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	return DecodeOwners(key, resp.Kvs[0].Value)
}

// channelRefusal returns why ch is not a place to run verb, or "" when it
// is. A channel whose name is unknown ("" or Slack's "privategroup") is
// matched by ID only, since a placeholder name must not match a glob such
// as "*".
func (a *Authorizer) channelRefusal(ch Channel, verb Verb, route string) string {
	where := "/rollback is"
	if verb == VerbPromote {
		where = "promotions are"
	}
	if len(a.channels) == 0 {
		return fmt.Sprintf("you may not %s here: %s accepted in no channel because %s is empty; an operator must set it to the incident channels (IDs or name globs such as inc-*), or act with backflipctl",
			actionText(verb, route), where, envIncidentChannels)
	}
	name := strings.ToLower(strings.TrimPrefix(ch.Name, "#"))
	byName := name != "" && name != "privategroup"
	for _, e := range a.channels {
		if ch.ID != "" && e.id == ch.ID {
			return ""
		}
		if byName && e.glob != "" {
			if ok, _ := path.Match(e.glob, name); ok {
				return ""
			}
		}
	}
	entries := make([]string, len(a.channels))
	for i, e := range a.channels {
		entries[i] = chatSafe(e.id)
	}
	return fmt.Sprintf("you may not %s here: %s accepted in incident channels (%s); ask in one of them",
		actionText(verb, route), where, listSome(entries, ", "))
}

// globalRefusal explains a refusal by the users and groups lists, with the
// route's owners when they are known.
func (a *Authorizer) globalRefusal(verb Verb, route string, w accessPair, r matchResult, owners []string) string {
	allowed := describeAllowed(w.users, w.groups)
	if len(owners) > 0 {
		allowed += fmt.Sprintf(", and for %s only its owners (%s)", route, ownerMentions(owners))
	}
	switch {
	case len(r.failed) > 0:
		msg := fmt.Sprintf("you may not %s right now: backflip could not check your membership of %s (the user-group lookup failed); try again in a minute",
			actionText(verb, route), groupMentions(r.failed))
		if len(w.users) > 0 {
			msg += ", or ask " + userMentions(w.users)
		}
		return msg + " (allowed are " + allowed + ")"
	case r.unchecked:
		return fmt.Sprintf("you may not %s: allowed are %s, but user-group membership cannot be checked here, so only the users listed by ID can act",
			actionText(verb, route), allowed)
	}
	return fmt.Sprintf("you may not %s: allowed are %s", actionText(verb, route), allowed)
}

// ownerRefusal explains a refusal by the route's owners to someone the
// users and groups lists allow.
func (a *Authorizer) ownerRefusal(verb Verb, route string, owners []string, r matchResult) string {
	switch {
	case len(r.failed) > 0:
		return fmt.Sprintf("you may not %s right now: only its owners may (%s), and backflip could not check your membership of %s (the user-group lookup failed); try again in a minute, or ask an owner",
			actionText(verb, route), ownerMentions(owners), groupMentions(r.failed))
	case r.unchecked:
		return fmt.Sprintf("you may not %s: only its owners may (%s), and user-group membership cannot be checked here, so only owners listed by ID can act",
			actionText(verb, route), ownerMentions(owners))
	}
	return fmt.Sprintf("you may not %s: only its owners may (%s); ask one of them", actionText(verb, route), ownerMentions(owners))
}

// nobodyMessage is the refusal when neither list of the verb is set: a
// deployment that forgot the setting must say which one.
func nobodyMessage(verb Verb, w accessPair) string {
	what := "roll back"
	switch {
	case verb == VerbPromote:
		what = "promote"
	case verb.IsDrill():
		what = "run or schedule drills"
	}
	msg := fmt.Sprintf("nobody may %s: set %s or %s", what, w.usersVar, w.groupsVar)
	if verb == VerbPromote {
		msg += " (promotions use the rollback lists)"
	}
	return msg + "; until then only backflipctl can"
}

// describeAllowed says who the lists allow, e.g. "members of
// <!subteam^S012> and <@U1>, <@U2>".
func describeAllowed(users, groups []string) string {
	switch {
	case len(groups) == 0:
		return userMentions(users)
	case len(users) == 0:
		return "members of " + groupMentions(groups)
	}
	return "members of " + groupMentions(groups) + " and " + userMentions(users)
}

func userMentions(ids []string) string {
	return listSome(mapIDs(ids, userMention), ", ")
}

func groupMentions(ids []string) string {
	return listSome(mapIDs(ids, groupMention), ", ")
}

// ownerMentions renders owners, which mix users and groups, each by its kind.
func ownerMentions(ids []string) string {
	return listSome(mapIDs(ids, ownerMention), ", ")
}

func mapIDs(ids []string, f func(string) string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = f(id)
	}
	return out
}

// listSome joins at most maxListed items and says how many more there are.
func listSome(items []string, sep string) string {
	if len(items) <= maxListed {
		return strings.Join(items, sep)
	}
	return fmt.Sprintf("%s and %d more", strings.Join(items[:maxListed], sep), len(items)-maxListed)
}

// userMention renders a configured user in Slack's mention syntax when it
// has the shape of a Slack ID, and as plain text otherwise, so a stray
// value cannot inject markup into a reply.
func userMention(id string) string {
	if isSlackID(id) {
		return "<@" + id + ">"
	}
	return plainID(id)
}

// groupMention renders a configured user group as a Slack group mention.
func groupMention(id string) string {
	if isSlackID(id) {
		return "<!subteam^" + id + ">"
	}
	return plainID(id)
}

// ownerMention renders an owner: S… IDs are groups, anything else a user.
func ownerMention(id string) string {
	if isGroupID(id) {
		return groupMention(id)
	}
	return userMention(id)
}

// plainID renders a value that is not a Slack ID as short plain text.
func plainID(id string) string { return Clip(chatSafe(id), 40) }

// chatSafe drops the characters that open Slack markup (a mention such as
// <!channel>, a link, an entity), so that text from configuration or from a
// policy document can be quoted in a reply without pinging anyone.
func chatSafe(s string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case '<', '>', '&':
			return -1
		}
		return r
	}, s)
}

// actionText is what the verb does to route, in words, e.g. "roll back
// chat-70b".
func actionText(verb Verb, route string) string {
	switch verb {
	case VerbRollback:
		return "roll back " + route
	case VerbPromote:
		return "promote " + route
	case VerbDrillRun:
		return "run a drill on " + route
	case VerbDrillSchedule:
		return "schedule drills on " + route
	case VerbDrillCancel:
		return "cancel the drill schedule of " + route
	case VerbDrillSkip:
		return "skip the next drill of " + route
	}
	return string(verb) + " " + route
}

// fromChat reports whether requests over t were typed in a chat channel.
// An unknown transport counts as chat, so the channel guard is kept rather
// than skipped when a transport forgets to say what it is.
func fromChat(t Transport) bool {
	return t != TransportCLI && t != TransportSystem
}

func knownVerb(v Verb) bool {
	switch v {
	case VerbHelp, VerbStatus, VerbHistory, VerbRollback, VerbPromote,
		VerbDrillHelp, VerbDrillRun, VerbDrillSchedule, VerbDrillCancel, VerbDrillSkip, VerbDrillList, VerbDrillHistory:
		return true
	}
	return false
}

func usageOf(v Verb) string {
	if v.IsDrill() {
		return DrillUsage
	}
	return RollbackUsage
}

// invalidMessage is a routing validation error without its "invalid: "
// sentinel prefix, which says nothing to a person.
func invalidMessage(err error) string {
	return strings.TrimPrefix(err.Error(), routing.ErrInvalid.Error()+": ")
}
