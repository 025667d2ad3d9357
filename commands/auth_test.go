package commands

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/backflip-dev/backflip/internal/etcdtest"
)

// authGroups stands in for Slack's user groups, which the bot answers from
// usergroups.users.list: members by group, and groups whose lookup fails.
type authGroups struct {
	members map[string][]string
	errs    map[string]error
}

func (g authGroups) IsMember(ctx context.Context, user, group string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if err := g.errs[group]; err != nil {
		return false, err
	}
	return slices.Contains(g.members[group], user), nil
}

// authAccess is the configuration most cases run with.
func authAccess() Access {
	return Access{
		IncidentChannels:   []string{"#inc-*", "C0123", "G0PRIV"},
		RollbackUsers:      []string{"U1", "U2"},
		RollbackUsergroups: []string{"S012", "S013"},
		DrillUsers:         []string{"U7"},
		DrillUsergroups:    []string{"S077"},
	}
}

// authMembers: U3 is in the rollback group S012, U4 in S013, U8 in the
// drill group S077; S099 is an owning group with U3 and U5.
func authMembers() authGroups {
	return authGroups{members: map[string][]string{
		"S012": {"U3"},
		"S013": {"U4"},
		"S077": {"U8"},
		"S099": {"U3", "U5"},
	}}
}

var errSlackDown = errors.New("slack: usergroups.users.list: 503 Service Unavailable")

func inIncident(user string) Origin {
	return Origin{Actor: Actor{ID: user}, Channel: Channel{ID: "C0INC42", Name: "inc-42-gpu"}, Transport: TransportSlack}
}

func inChannel(user, id, name string) Origin {
	return Origin{Actor: Actor{ID: user}, Channel: Channel{ID: id, Name: name}, Transport: TransportSlack}
}

// authCase is one request and what the Authorizer must decide.
type authCase struct {
	name   string
	access *Access // nil means authAccess()
	groups GroupMembership
	// noGroups runs the case without a GroupMembership.
	noGroups bool
	// policy is the value of policies/chat-70b; "" means none.
	policy string
	origin Origin
	verb   Verb   // "" means VerbRollback
	route  string // "" means chat-70b
	// allowed and via: the expected decision; via is compared exactly.
	allowed bool
	via     string
	owners  []string
	// msg are substrings of a refusal's Message; notMsg must not be in it.
	msg, notMsg []string
}

// runAuthCases runs cases against one real etcd, each under its own prefix
// so that one case's policy is never another's.
func runAuthCases(t *testing.T, cases []authCase) {
	t.Helper()
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			prefix := fmt.Sprintf("/auth/%d", i)
			route := tc.route
			if route == "" {
				route = "chat-70b"
			}
			if tc.policy != "" {
				mustPutPolicy(t, cli, prefix, "chat-70b", tc.policy)
			}
			access := authAccess()
			if tc.access != nil {
				access = *tc.access
			}
			var groups GroupMembership = authMembers()
			if tc.groups != nil {
				groups = tc.groups
			}
			if tc.noGroups {
				groups = nil
			}
			verb := tc.verb
			if verb == "" {
				verb = VerbRollback
			}
			a := NewAuthorizer(access, groups, cli, prefix, nil)
			d, err := a.Authorize(t.Context(), tc.origin, verb, route)
			if err != nil {
				t.Fatalf("Authorize: %v", err)
			}
			// Logged so that -v shows every message as a person reads it.
			t.Logf("decision: %+v", d)
			checkDecision(t, d, tc.allowed, tc.via, tc.msg)
			for _, m := range tc.notMsg {
				if strings.Contains(d.Message, m) {
					t.Errorf("message %q\ncontains %q", d.Message, m)
				}
			}
			if !slices.Equal(d.Owners, tc.owners) {
				t.Errorf("Owners = %q; want %q", d.Owners, tc.owners)
			}
		})
	}
}

func checkDecision(t *testing.T, d Decision, allowed bool, via string, msg []string) {
	t.Helper()
	if allowed {
		if !d.Allowed || d.Via != via || d.Message != "" {
			t.Fatalf("decision = %+v; want allowed via %q", d, via)
		}
		return
	}
	if d.Allowed || d.Via != "" {
		t.Fatalf("decision = %+v; want a refusal", d)
	}
	if d.Message == "" {
		t.Fatal("a refusal without a message: the person asking must be told why")
	}
	for _, m := range msg {
		if !strings.Contains(d.Message, m) {
			t.Errorf("message %q\ndoes not contain %q", d.Message, m)
		}
	}
}

func mustPutPolicy(tb testing.TB, cli *clientv3.Client, prefix, route, value string) {
	tb.Helper()
	if _, err := cli.Put(tb.Context(), Keys{Prefix: prefix}.Policy(route), value); err != nil {
		tb.Fatalf("put policy: %v", err)
	}
}

func TestAuthorizeReadVerbsOpen(t *testing.T) {
	// No lists, no channels, no group lookups and no etcd: reading verbs
	// must need none of them, from anyone, anywhere.
	a := NewAuthorizer(Access{}, nil, nil, "/backflip", nil)
	origins := map[string]Origin{
		"SlackAnyChannel":  inChannel("U999", "C0GENERAL", "general"),
		"PrivateGroup":     inChannel("U999", "G0XYZ", "privategroup"),
		"UnknownActor":     {Transport: TransportSlack},
		"UntrustedCLI":     {Actor: Actor{ID: "cli:bob@host"}, Transport: TransportCLI},
		"TerminalChat":     {Actor: Actor{ID: "dev"}, Transport: TransportTerminal},
		"UnknownTransport": {Actor: Actor{ID: "U999"}},
	}
	for _, verb := range []Verb{VerbHelp, VerbStatus, VerbHistory, VerbDrillHelp, VerbDrillList, VerbDrillHistory} {
		for name, o := range origins {
			for _, route := range []string{"", "chat-70b"} {
				t.Run(fmt.Sprintf("%s/%s/%q", verb, name, route), func(t *testing.T) {
					d, err := a.Authorize(t.Context(), o, verb, route)
					if err != nil {
						t.Fatalf("Authorize: %v", err)
					}
					checkDecision(t, d, true, "read-only", nil)
				})
			}
		}
	}
}

func TestAuthorizeWho(t *testing.T) {
	empty := Access{IncidentChannels: []string{"inc-*"}, DrillUsers: []string{"U7"}}
	blanks := Access{IncidentChannels: []string{"inc-*"}, RollbackUsers: []string{"", "  "}, RollbackUsergroups: []string{""}}
	many := authAccess()
	many.RollbackUsers = []string{"U1", "U2", "U3", "U4", "U5", "U6", "U7", "U8"}
	many.RollbackUsergroups = nil
	usersOnly := authAccess()
	usersOnly.RollbackUsergroups = nil
	groupsOnly := authAccess()
	groupsOnly.RollbackUsers = nil
	markup := authAccess()
	markup.RollbackUsers = []string{"<!here>"}
	markup.RollbackUsergroups = []string{"<!channel|x>"}
	runAuthCases(t, []authCase{
		{name: "ListedUserAllowed", origin: inIncident("U1"), allowed: true, via: "BACKFLIP_ROLLBACK_USERS"},
		{name: "GroupMemberAllowed", origin: inIncident("U3"), allowed: true, via: "usergroup S012"},
		{name: "SecondGroupMemberAllowed", origin: inIncident("U4"), allowed: true, via: "usergroup S013"},
		{name: "UnlistedRefusedWithWhoMay", origin: inIncident("U9"),
			msg: []string{"you may not roll back chat-70b: allowed are members of <!subteam^S012>, <!subteam^S013> and <@U1>, <@U2>"}},
		{name: "UserIDIsCaseSensitive", origin: inIncident("u1"), msg: []string{"you may not roll back chat-70b"}},
		{name: "UsersOnlyMessage", access: &usersOnly, origin: inIncident("U9"),
			msg: []string{"you may not roll back chat-70b: allowed are <@U1>, <@U2>"}},
		{name: "GroupsOnlyMessage", access: &groupsOnly, origin: inIncident("U9"),
			msg: []string{"allowed are members of <!subteam^S012>, <!subteam^S013>"}},
		{name: "ConfigMarkupNotRendered", access: &markup, origin: inIncident("U9"),
			msg: []string{"allowed are members of !channel|x and !here"}, notMsg: []string{"<!"}},
		{name: "LongListClipped", access: &many, origin: inIncident("U9"),
			msg: []string{"<@U1>, <@U2>, <@U3>, <@U4>, <@U5> and 3 more"}},
		{name: "EmptyListsRefuseNamingVariables", access: &empty, origin: inIncident("U1"),
			msg: []string{"nobody may roll back: set BACKFLIP_ROLLBACK_USERS or BACKFLIP_ROLLBACK_USERGROUPS"}},
		{name: "EmptyListsRefusePromote", access: &empty, origin: inIncident("U1"), verb: VerbPromote,
			msg: []string{"nobody may promote: set BACKFLIP_ROLLBACK_USERS or BACKFLIP_ROLLBACK_USERGROUPS"}},
		{name: "BlankEntriesAreEmptyLists", access: &blanks, origin: inIncident(""),
			msg: []string{"nobody may roll back: set BACKFLIP_ROLLBACK_USERS"}},
		{name: "UnknownActorRefused", origin: inIncident(""), msg: []string{"could not tell who you are"}},
		{name: "PromoteUsesRollbackLists", origin: inIncident("U2"), verb: VerbPromote, allowed: true, via: "BACKFLIP_ROLLBACK_USERS"},
		{name: "GroupLookupErrorRefusesAndExplains", groups: authGroups{errs: map[string]error{"S012": errSlackDown, "S013": errSlackDown}},
			origin: inIncident("U3"),
			msg: []string{"you may not roll back chat-70b right now", "could not check your membership of <!subteam^S012>, <!subteam^S013>",
				"try again", "or ask <@U1>, <@U2>"}},
		{name: "GroupLookupErrorOtherGroupAllows", groups: authGroups{
			members: map[string][]string{"S013": {"U4"}}, errs: map[string]error{"S012": errSlackDown}},
			origin: inIncident("U4"), allowed: true, via: "usergroup S013"},
		{name: "GroupLookupErrorListedUserAllowed", groups: authGroups{errs: map[string]error{"S012": errSlackDown, "S013": errSlackDown}},
			origin: inIncident("U1"), allowed: true, via: "BACKFLIP_ROLLBACK_USERS"},
		{name: "NoGroupMembershipGroupsCannotMatch", noGroups: true, origin: inIncident("U3"),
			msg: []string{"allowed are members of <!subteam^S012>", "user-group membership cannot be checked here"}},
		{name: "NoGroupMembershipListedUserAllowed", noGroups: true, origin: inIncident("U1"), allowed: true, via: "BACKFLIP_ROLLBACK_USERS"},
	})
}

func TestAuthorizeChannelGuard(t *testing.T) {
	star := Access{IncidentChannels: []string{"*", "G0PRIV"}, RollbackUsers: []string{"U1"}}
	none := Access{RollbackUsers: []string{"U1"}, DrillUsers: []string{"U7"}}
	lots := Access{IncidentChannels: []string{"a-*", "b-*", "c-*", "d-*", "e-*", "f-*", "g-*"}, RollbackUsers: []string{"U1"}}
	badGlob := Access{IncidentChannels: []string{"inc-[", "inc-*"}, RollbackUsers: []string{"U1"}}
	runAuthCases(t, []authCase{
		{name: "ByID", origin: inChannel("U1", "C0123", "general"), allowed: true, via: "BACKFLIP_ROLLBACK_USERS"},
		{name: "ByIDWithoutName", origin: inChannel("U1", "C0123", ""), allowed: true, via: "BACKFLIP_ROLLBACK_USERS"},
		{name: "ByGlob", origin: inChannel("U1", "C0999", "inc-2024-gpu"), allowed: true, via: "BACKFLIP_ROLLBACK_USERS"},
		{name: "GlobCaseInsensitive", origin: inChannel("U1", "C0999", "INC-Outage"), allowed: true, via: "BACKFLIP_ROLLBACK_USERS"},
		{name: "NameWithHash", origin: inChannel("U1", "C0999", "#inc-7"), allowed: true, via: "BACKFLIP_ROLLBACK_USERS"},
		{name: "PrivateGroupByID", origin: inChannel("U1", "G0PRIV", "privategroup"), allowed: true, via: "BACKFLIP_ROLLBACK_USERS"},
		{name: "PrivateGroupNotMatchedByGlob", access: &star, origin: inChannel("U1", "G0OTHER", "privategroup"),
			msg: []string{"you may not roll back chat-70b here"}},
		{name: "UnknownNameNotMatchedByGlob", access: &star, origin: inChannel("U1", "C0OTHER", ""),
			msg: []string{"you may not roll back chat-70b here"}},
		{name: "IDIsCaseSensitive", origin: inChannel("U1", "c0123", ""), msg: []string{"here"}},
		{name: "WrongChannelRefused", origin: inChannel("U1", "C0GEN", "general"),
			msg: []string{"you may not roll back chat-70b here: /rollback is accepted in incident channels (inc-*, C0123, G0PRIV); ask in one of them"}},
		{name: "WrongChannelBeforeWho", origin: inChannel("U9", "C0GEN", "general"), msg: []string{"ask in one of them"}},
		{name: "ChannelsClipped", access: &lots, origin: inChannel("U1", "C0GEN", "general"),
			msg: []string{"(a-*, b-*, c-*, d-*, e-* and 2 more)"}},
		{name: "BadGlobEntryDoesNotBreakOthers", access: &badGlob, origin: inChannel("U1", "C0GEN", "inc-9"), allowed: true, via: "BACKFLIP_ROLLBACK_USERS"},
		{name: "PromoteGuarded", verb: VerbPromote, origin: inChannel("U1", "C0GEN", "general"),
			msg: []string{"you may not promote chat-70b here: promotions are accepted in incident channels"}},
		{name: "EmptyIncidentChannelsRefuseEverywhere", access: &none, origin: inChannel("U1", "C0123", "inc-1"),
			msg: []string{"accepted in no channel", "BACKFLIP_INCIDENT_CHANNELS"}},
		{name: "TerminalChatGuarded", origin: Origin{Actor: Actor{ID: "U1"}, Channel: Channel{ID: "C0GEN", Name: "general"}, Transport: TransportTerminal},
			msg: []string{"here"}},
		{name: "UnknownTransportGuarded", origin: Origin{Actor: Actor{ID: "U1"}, Channel: Channel{ID: "C0GEN", Name: "general"}},
			msg: []string{"here"}},
		{name: "UntrustedCLIHasNoChannel", origin: Origin{Actor: Actor{ID: "U1"}, Transport: TransportCLI},
			allowed: true, via: "BACKFLIP_ROLLBACK_USERS"},
		{name: "DrillNotGuarded", access: &none, verb: VerbDrillRun, origin: inChannel("U7", "C0GEN", "general"),
			allowed: true, via: "BACKFLIP_DRILL_USERS"},
	})
}

func TestAuthorizeDrillVerbs(t *testing.T) {
	noDrill := authAccess()
	noDrill.DrillUsers, noDrill.DrillUsergroups = nil, nil
	var cases []authCase
	for _, verb := range []Verb{VerbDrillRun, VerbDrillSchedule, VerbDrillCancel, VerbDrillSkip} {
		cases = append(cases,
			authCase{name: string(verb) + "/DrillUserAllowedAnywhere", verb: verb, origin: inChannel("U7", "C0GEN", "general"),
				allowed: true, via: "BACKFLIP_DRILL_USERS"},
			authCase{name: string(verb) + "/DrillGroupAllowed", verb: verb, origin: inIncident("U8"),
				allowed: true, via: "usergroup S077"},
			authCase{name: string(verb) + "/RollbackUserRefused", verb: verb, origin: inIncident("U1"),
				msg: []string{"you may not", "allowed are members of <!subteam^S077> and <@U7>"}},
			authCase{name: string(verb) + "/EmptyDrillListsNameVariables", verb: verb, access: &noDrill, origin: inIncident("U1"),
				msg: []string{"nobody may run or schedule drills: set BACKFLIP_DRILL_USERS or BACKFLIP_DRILL_USERGROUPS"}},
		)
	}
	runAuthCases(t, cases)
}

func TestAuthorizeOwners(t *testing.T) {
	const key = "/policies/chat-70b" // under each case's prefix
	lookupFails := authMembers()
	lookupFails.errs = map[string]error{"S098": errSlackDown}
	runAuthCases(t, []authCase{
		{name: "ListedOwnerAllowed", policy: `{"warm_quorum":0.9,"owners":["U1","S099"]}`, origin: inIncident("U1"),
			allowed: true, via: "BACKFLIP_ROLLBACK_USERS and owners of chat-70b", owners: []string{"U1", "S099"}},
		{name: "UnlistedRefused", policy: `{"owners":["U2","S099"]}`, origin: inIncident("U1"), owners: []string{"U2", "S099"},
			msg: []string{"you may not roll back chat-70b: only its owners may (<@U2>, <!subteam^S099>); ask one of them"}},
		{name: "GroupOwnerAllowed", policy: `{"owners":["S099"]}`, origin: inIncident("U3"),
			allowed: true, via: "usergroup S012 and owners of chat-70b (usergroup S099)", owners: []string{"S099"}},
		{name: "GroupOwnerNonMemberRefused", policy: `{"owners":["S099"]}`, origin: inIncident("U4"), owners: []string{"S099"},
			msg: []string{"only its owners may (<!subteam^S099>)"}},
		{name: "GroupOwnerLookupErrorRefusesAndExplains", groups: lookupFails, policy: `{"owners":["S098"]}`, origin: inIncident("U1"),
			owners: []string{"S098"}, msg: []string{"right now", "could not check your membership of <!subteam^S098>"}},
		{name: "GroupOwnerWithoutGroupMembership", noGroups: true, policy: `{"owners":["S099"]}`, origin: inIncident("U1"),
			owners: []string{"S099"}, msg: []string{"cannot be checked here"}},
		{name: "OwnersDoNotWiden", policy: `{"owners":["U5"]}`, origin: inIncident("U5"),
			msg: []string{"allowed are members of <!subteam^S012>, <!subteam^S013> and <@U1>, <@U2>, and for chat-70b only its owners (<@U5>)"}},
		{name: "GlobalRefusalNamesOwners", policy: `{"owners":["S099"]}`, origin: inIncident("U9"),
			msg: []string{"you may not roll back chat-70b: allowed are", "and for chat-70b only its owners (<!subteam^S099>)"}},
		{name: "EmptyOwnersDoNotNarrow", policy: `{"owners":[]}`, origin: inIncident("U1"), allowed: true, via: "BACKFLIP_ROLLBACK_USERS"},
		{name: "NullOwnersDoNotNarrow", policy: `{"owners":null}`, origin: inIncident("U1"), allowed: true, via: "BACKFLIP_ROLLBACK_USERS"},
		{name: "PolicyWithoutOwnersDoesNotNarrow", policy: `{"warm_quorum":0.5,"drill":{"cron":"0 3 * * 1"}}`, origin: inIncident("U1"),
			allowed: true, via: "BACKFLIP_ROLLBACK_USERS"},
		{name: "OtherRouteNotNarrowed", policy: `{"owners":["U2"]}`, route: "chat-8b", origin: inIncident("U1"),
			allowed: true, via: "BACKFLIP_ROLLBACK_USERS"},
		{name: "MalformedPolicyRefuses", policy: `{"owners":"U1"}`, origin: inIncident("U1"),
			msg: []string{"you may not roll back chat-70b", key, "is malformed", "owners must be an array"}},
		{name: "MalformedPolicyQuotedWithoutMarkup", policy: `{"owners":["<!channel>"]}`, origin: inIncident("U1"),
			msg: []string{key, "malformed", "!channel"}, notMsg: []string{"<!channel>", "<"}},
		{name: "NotJSONPolicyRefuses", policy: `owners: [U1]`, origin: inIncident("U1"), msg: []string{key, "malformed"}},
		{name: "MalformedPolicyRefusesDrills", policy: `{"owners":["U1"]}{}`, verb: VerbDrillRun, origin: inIncident("U7"),
			msg: []string{"you may not run a drill on chat-70b", key, "trailing data"}},
		{name: "DrillOwnersNarrow", policy: `{"owners":["U1"]}`, verb: VerbDrillSchedule, origin: inIncident("U7"), owners: []string{"U1"},
			msg: []string{"you may not schedule drills on chat-70b: only its owners may (<@U1>)"}},
		{name: "DrillOwnerAllowed", policy: `{"owners":["U7"]}`, verb: VerbDrillRun, origin: inIncident("U7"), owners: []string{"U7"},
			allowed: true, via: "BACKFLIP_DRILL_USERS and owners of chat-70b"},
		{name: "OwnerMentionsClipped", policy: `{"owners":["U10","U11","U12","U13","U14","U15","S099"]}`, origin: inIncident("U1"),
			owners: []string{"U10", "U11", "U12", "U13", "U14", "U15", "S099"},
			msg:    []string{"(<@U10>, <@U11>, <@U12>, <@U13>, <@U14> and 2 more)"}},
	})
}

func TestAuthorizeBypass(t *testing.T) {
	// Nobody is listed, no channel is an incident channel, groups cannot be
	// checked and the route's policy is malformed: none of it applies to
	// backflipctl or to backflip's own jobs, whose gate is etcd's roles.
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	mustPutPolicy(t, cli, "/bypass", "chat-70b", `{"owners":"broken"}`)
	a := NewAuthorizer(Access{}, nil, cli, "/bypass", nil)
	for _, tc := range []struct {
		name   string
		origin Origin
		via    string
	}{
		{name: "TrustedCLI", origin: Origin{Actor: Actor{ID: "cli:alice@ops-1", Name: "etcd:ops"}, Transport: TransportCLI, Trusted: true}, via: "etcd credentials"},
		{name: "TrustedWithoutChannel", origin: Origin{Actor: Actor{ID: "cli:alice@ops-1"}, Trusted: true}, via: "etcd credentials"},
		{name: "System", origin: Origin{Actor: Actor{ID: "system:drills"}, Transport: TransportSystem}, via: "system"},
	} {
		for _, verb := range []Verb{VerbRollback, VerbPromote, VerbDrillRun, VerbDrillSchedule, VerbDrillCancel, VerbDrillSkip} {
			t.Run(tc.name+"/"+string(verb), func(t *testing.T) {
				d, err := a.Authorize(t.Context(), tc.origin, verb, "chat-70b")
				if err != nil {
					t.Fatalf("Authorize: %v", err)
				}
				checkDecision(t, d, true, tc.via, nil)
			})
		}
	}
	t.Run("UntrustedCLIIsNotBypassed", func(t *testing.T) {
		d, err := a.Authorize(t.Context(), Origin{Actor: Actor{ID: "cli:mallory@laptop"}, Transport: TransportCLI}, VerbRollback, "chat-70b")
		if err != nil {
			t.Fatalf("Authorize: %v", err)
		}
		checkDecision(t, d, false, "", []string{"nobody may roll back"})
	})
}

func TestAuthorizeErrors(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	a := NewAuthorizer(authAccess(), authMembers(), cli, "/errors", nil)

	t.Run("InvalidRoute", func(t *testing.T) {
		for _, tc := range []struct {
			route string
			verb  Verb
			usage string
		}{
			{"../routes/chat-70b", VerbRollback, RollbackUsage},
			{"chat-70b/x", VerbPromote, RollbackUsage},
			{"", VerbRollback, RollbackUsage},
			{"status", VerbRollback, RollbackUsage},
			{"-x", VerbDrillRun, DrillUsage},
			{strings.Repeat("a", 64), VerbDrillSchedule, DrillUsage},
		} {
			// Trusted too: no origin may get an invalid name into a key.
			for _, o := range []Origin{inIncident("U1"), {Actor: Actor{ID: "cli:a@b"}, Transport: TransportCLI, Trusted: true}} {
				d, err := a.Authorize(t.Context(), o, tc.verb, tc.route)
				if ErrorCode(err) != EINVALID || d.Allowed || ErrorUsage(err) != tc.usage {
					t.Errorf("Authorize(%q, %q) = %+v, %v (code %q); want EINVALID with usage", tc.verb, tc.route, d, err, ErrorCode(err))
				}
				if msg := ErrorMessage(err); strings.HasPrefix(msg, "invalid:") || !strings.Contains(msg, "route name") {
					t.Errorf("message %q: want the route problem without the sentinel prefix", msg)
				}
			}
		}
	})

	t.Run("UnknownVerbIsABug", func(t *testing.T) {
		for _, verb := range []Verb{"", "rollback ", "drill.delete", "ROLLBACK"} {
			d, err := a.Authorize(t.Context(), inIncident("U1"), verb, "chat-70b")
			if ErrorCode(err) != EINTERNAL || d.Allowed {
				t.Errorf("Authorize(%q) = %+v, %v; want EINTERNAL", verb, d, err)
			}
		}
	})

	t.Run("MembershipCheckInterrupted", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		d, err := a.Authorize(ctx, inIncident("U3"), VerbRollback, "chat-70b")
		if ErrorCode(err) != EUNAVAILABLE || d.Allowed || !errors.Is(err, context.Canceled) {
			t.Fatalf("Authorize = %+v, %v; want EUNAVAILABLE wrapping context.Canceled", d, err)
		}
	})

	t.Run("EtcdUnavailable", func(t *testing.T) {
		down := srv.Client(t)
		if err := down.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
		b := NewAuthorizer(authAccess(), authMembers(), down, "/errors", nil)
		d, err := b.Authorize(t.Context(), inIncident("U1"), VerbRollback, "chat-70b")
		if ErrorCode(err) != EUNAVAILABLE || d.Allowed || d.Message != "" {
			t.Fatalf("Authorize = %+v, %v (code %q); want no decision and EUNAVAILABLE", d, err, ErrorCode(err))
		}
		if msg := ErrorMessage(err); !strings.Contains(msg, "nothing changed") || !strings.Contains(msg, "chat-70b") {
			t.Errorf("message %q: want it to say nothing changed on chat-70b", msg)
		}
	})

	t.Run("EtcdUnavailableStillRefusesTheUnlisted", func(t *testing.T) {
		// A refusal needs no policy, so an unlisted person is told who may
		// act even while etcd is down.
		down := srv.Client(t)
		if err := down.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
		b := NewAuthorizer(authAccess(), authMembers(), down, "/errors", nil)
		d, err := b.Authorize(t.Context(), inIncident("U9"), VerbRollback, "chat-70b")
		if err != nil {
			t.Fatalf("Authorize: %v", err)
		}
		checkDecision(t, d, false, "", []string{"allowed are members of <!subteam^S012>"})
	})

	t.Run("NoEtcdClient", func(t *testing.T) {
		b := NewAuthorizer(authAccess(), authMembers(), nil, "/errors", nil)
		d, err := b.Authorize(t.Context(), inIncident("U1"), VerbRollback, "chat-70b")
		if ErrorCode(err) != EINTERNAL || d.Allowed {
			t.Fatalf("Authorize = %+v, %v; want EINTERNAL", d, err)
		}
	})
}

func TestAuthorizeConcurrentUse(t *testing.T) {
	// One Authorizer serves every request of a replica; the race detector
	// checks that deciding shares nothing mutable.
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	mustPutPolicy(t, cli, "/conc", "chat-70b", `{"owners":["S099","U1"]}`)
	a := NewAuthorizer(authAccess(), authMembers(), cli, "/conc", nil)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 10 {
				user := []string{"U1", "U3", "U4", "U9"}[(i+j)%4]
				d, err := a.Authorize(t.Context(), inIncident(user), VerbRollback, "chat-70b")
				if err != nil {
					t.Errorf("Authorize: %v", err)
					return
				}
				if want := user == "U1" || user == "U3"; d.Allowed != want {
					t.Errorf("%s: allowed = %v; want %v (%+v)", user, d.Allowed, want, d)
				}
			}
		})
	}
	wg.Wait()
}

func TestAuthorizeAccessIsCopied(t *testing.T) {
	// The lists are read once; a caller that reuses its slices afterwards
	// must not change who may act.
	access := authAccess()
	a := NewAuthorizer(access, authMembers(), nil, "/copy", nil)
	access.IncidentChannels[1] = "C0GEN"
	access.RollbackUsers[0] = "U9"
	d, err := a.Authorize(t.Context(), inChannel("U9", "C0GEN", "general"), VerbRollback, "chat-70b")
	if err != nil {
		t.Fatalf("Authorize: %v", err)
	}
	checkDecision(t, d, false, "", []string{"here"})
}
