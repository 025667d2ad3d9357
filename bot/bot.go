package bot

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/slack-go/slack"
	"go.uber.org/zap"

	"github.com/backflip-dev/backflip/commands"
	"github.com/backflip-dev/backflip/fleet/warm"
)

// ChannelNamer resolves a channel's name when a transport could not (Slack
// sends "privategroup" for private channels). *Slack implements it.
type ChannelNamer interface {
	ChannelName(ctx context.Context, id string) (name string, private bool, err error)
}

// Config is what a Bot needs. Service and Poster are required.
type Config struct {
	Service *commands.Service
	Poster  Poster
	// Channels resolves private channel names for the incident-channel
	// globs; nil matches such channels by ID only.
	Channels ChannelNamer
	// CardTTL is how long a pre-flight card's confirm button stays valid
	// (BACKFLIP_CARD_TTL, default 10m).
	CardTTL time.Duration
	// OpsChannel gets warm-keep alerts and op recovery notices.
	OpsChannel string
	// UpdateInterval spaces the live updates of a progress message (default
	// 1s, Slack's pace); the final report is always sent.
	UpdateInterval time.Duration
	// AuditRowWait bounds how long the thread summary waits for the audit
	// row id before saying "pending" (default 2s).
	AuditRowWait time.Duration
	// Transport is what the origin of each request says (default slack;
	// the terminal of `backflip dev` says terminal).
	Transport commands.Transport
	Logger    *zap.Logger
	Now       func() time.Time
}

// Bot turns slash commands and clicks into use cases of commands and their
// results into messages. It implements Handler.
type Bot struct {
	cfg  Config
	svc  *commands.Service
	out  Poster
	log  *zap.Logger
	now  func() time.Time
	base context.Context
	stop context.CancelFunc
	// busy counts background work; idle is signalled when it drops to
	// zero. (A WaitGroup would panic when one transport starts work while
	// another waits for the previous work to end.)
	mu   sync.Mutex
	busy int
	idle *sync.Cond
}

var _ Handler = (*Bot)(nil)

// New checks cfg and returns a Bot. Close waits for its background work.
func New(cfg Config) (*Bot, error) {
	if cfg.Service == nil || cfg.Poster == nil {
		return nil, errors.New("bot: Config.Service and Config.Poster are required")
	}
	if cfg.CardTTL <= 0 {
		cfg.CardTTL = 10 * time.Minute
	}
	if cfg.UpdateInterval <= 0 {
		cfg.UpdateInterval = time.Second
	}
	if cfg.AuditRowWait <= 0 {
		cfg.AuditRowWait = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	// Background work is not tied to any request: a rollback confirmed in
	// a request that ended must still finish and report.
	if cfg.Transport == "" {
		cfg.Transport = commands.TransportSlack
	}
	base, stop := context.WithCancel(context.Background())
	b := &Bot{cfg: cfg, svc: cfg.Service, out: cfg.Poster, log: cfg.Logger, now: cfg.Now, base: base, stop: stop}
	b.idle = sync.NewCond(&b.mu)
	return b, nil
}

// Close stops taking new background work and waits up to ctx for what runs
// (rollbacks past their flip finish regardless: commands guarantees it).
func (b *Bot) Close(ctx context.Context) error {
	done := make(chan struct{})
	go func() { b.Wait(); close(done) }()
	select {
	case <-done:
		b.stop()
		return nil
	case <-ctx.Done():
		b.stop()
		<-done
		return ctx.Err()
	}
}

// Wait waits for the background work started so far (tests).
func (b *Bot) Wait() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.busy > 0 {
		b.idle.Wait()
	}
}

func (b *Bot) spawn(f func(ctx context.Context)) {
	b.mu.Lock()
	b.busy++
	b.mu.Unlock()
	go func() {
		defer func() {
			b.mu.Lock()
			b.busy--
			if b.busy == 0 {
				b.idle.Broadcast()
			}
			b.mu.Unlock()
		}()
		f(b.base)
	}()
}

// request is what the bot keeps about the request it is answering.
type request struct {
	origin      commands.Origin
	responseURL string
	// responses counts response_url posts: at most 3 per request (Slack
	// allows 5 in 30 minutes; the rest is headroom for retries).
	responses int
}

func (b *Bot) originOf(userID, userName, channelID, channelName string, received time.Time) commands.Origin {
	return commands.Origin{
		Actor:     commands.Actor{ID: userID, Name: userName},
		Channel:   commands.Channel{ID: channelID, Name: channelName},
		Transport: b.cfg.Transport,
		Received:  received,
	}
}

// resolveChannel fills in a private channel's name, so incident-channel
// globs (inc-*) match private incident channels too.
func (b *Bot) resolveChannel(ctx context.Context, o *commands.Origin) {
	if b.cfg.Channels == nil || (o.Channel.Name != "" && o.Channel.Name != "privategroup") || o.Channel.ID == "" {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	name, _, err := b.cfg.Channels.ChannelName(cctx, o.Channel.ID)
	if err != nil {
		b.log.Info("channel name not resolved; matching incident channels by id only", zap.String("channel", o.Channel.ID), zap.Error(err))
		return
	}
	o.Channel.Name = name
}

// Slash answers a slash command: help and bad input at once, everything
// else in the background (status runs warm checks; a rollback runs a dry
// run for its card), with a short acknowledgement now.
func (b *Bot) Slash(_ context.Context, sc SlashCommand) *Reply {
	cmd, err := commands.Parse(sc.Command, sc.Text)
	if err != nil {
		return &Reply{Message: ErrorReply(err)}
	}
	req := &request{origin: b.originOf(sc.UserID, sc.UserName, sc.ChannelID, sc.ChannelName, sc.Received), responseURL: sc.ResponseURL}
	switch c := cmd.(type) {
	case commands.HelpCmd:
		return &Reply{Message: HelpMessage(c.Drill)}
	case commands.StatusCmd:
		b.spawn(func(ctx context.Context) { b.status(ctx, req, c) })
		return nil
	case commands.HistoryCmd:
		b.spawn(func(ctx context.Context) { b.history(ctx, req, c) })
		return nil
	case commands.RollbackCmd:
		if c.Now {
			req.origin.IdemKey = slashIdemKey(sc.TriggerID)
			b.spawn(func(ctx context.Context) { b.rollbackNow(ctx, req, c) })
			return &Reply{Message: Message{Text: fmt.Sprintf("Rolling back %s now…", c.Route)}}
		}
		b.spawn(func(ctx context.Context) { b.card(ctx, req, c) })
		return &Reply{Message: Message{Text: fmt.Sprintf("Checking %s before rolling back…", c.Route)}}
	case commands.DrillCommand:
		b.spawn(func(ctx context.Context) { b.drill(ctx, req, c) })
		return nil
	}
	return &Reply{Message: ErrorReply(commands.Errorf(commands.EINVALID, "unknown command"))}
}

// slashIdemKey makes a slash command's trigger id an idempotency key, so a
// redelivered command (Socket Mode retry, a second replica) flips once.
func slashIdemKey(trigger string) string {
	if trigger == "" || len(trigger) > 100 {
		return ""
	}
	for i := 0; i < len(trigger); i++ {
		c := trigger[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return ""
		}
	}
	return "slash:" + trigger
}

// reply answers the requester privately: through the response_url when
// there is one, else an ephemeral message.
func (b *Bot) reply(ctx context.Context, req *request, msg Message) {
	if req.responseURL != "" && req.responses < 3 {
		req.responses++
		if err := b.out.Respond(ctx, req.responseURL, msg, false, false); err == nil {
			return
		} else {
			b.log.Warn("response_url failed; trying an ephemeral message", zap.Error(err))
		}
	}
	if err := b.out.Ephemeral(ctx, req.origin.Channel.ID, req.origin.Actor.ID, msg); err != nil {
		b.log.Warn("could not answer the requester", zap.String("user", req.origin.Actor.ID), zap.Error(err))
	}
}

// post posts to the request's channel; when backflip is not in it (a new
// private incident channel), it posts through the response_url instead,
// in the channel, with a hint to invite it. It returns the ts ("" when the
// message went through the response_url and cannot be updated).
func (b *Bot) post(ctx context.Context, req *request, threadTS string, msg Message) (string, error) {
	ts, err := b.out.Post(ctx, req.origin.Channel.ID, threadTS, msg)
	if err == nil || !errors.Is(err, ErrNotInChannel) {
		return ts, err
	}
	if req.responseURL == "" || req.responses >= 3 {
		return "", err
	}
	req.responses++
	msg = withInviteHint(msg)
	return "", b.out.Respond(ctx, req.responseURL, msg, true, false)
}

func withInviteHint(msg Message) Message {
	hint := "backflip is not in this channel, so it cannot update this message as it goes: /invite @backflip"
	msg.Text += "\n" + hint
	msg.Blocks = append(msg.Blocks, slack.NewContextBlock("", slack.NewTextBlockObject(slack.MarkdownType, hint, false, false)))
	return msg
}

func (b *Bot) status(ctx context.Context, req *request, c commands.StatusCmd) {
	rep, err := b.svc.Status(ctx, req.origin, c.Route)
	if err != nil {
		b.reply(ctx, req, ErrorReply(err))
		return
	}
	b.reply(ctx, req, StatusMessage(rep))
}

func (b *Bot) history(ctx context.Context, req *request, c commands.HistoryCmd) {
	rep, err := b.svc.History(ctx, req.origin, c.Route, c.Limit)
	if err != nil {
		b.reply(ctx, req, ErrorReply(err))
		return
	}
	b.reply(ctx, req, HistoryMessage(rep))
}

func (b *Bot) drill(ctx context.Context, req *request, c commands.DrillCommand) {
	b.resolveChannel(ctx, &req.origin)
	r, err := b.svc.Drill(ctx, req.origin, c, nil)
	if err != nil && r.Text == "" {
		b.reply(ctx, req, ErrorReply(err))
		return
	}
	up, canUpload := b.out.(Uploader)
	if _, isRun := c.(commands.DrillRunCmd); !isRun && (r.Chart == nil || !canUpload) {
		b.reply(ctx, req, DrillReplyMessage(r))
		return
	}
	// A drill run's report and a history chart are for the channel: people
	// read a trend faster than a table, and a drill is everyone's news.
	ts, perr := b.post(ctx, req, "", DrillReplyMessage(r))
	if perr != nil {
		b.reply(ctx, req, DrillReplyMessage(r))
		return
	}
	if r.Chart != nil && canUpload && ts != "" {
		if uerr := up.UploadPNG(ctx, req.origin.Channel.ID, ts, "drill-history.png", "Drill durations", r.Chart); uerr != nil {
			b.log.Warn("drill chart not uploaded", zap.Error(uerr))
		}
	}
}

// Uploader uploads pictures into a thread; *Slack implements it.
type Uploader interface {
	UploadPNG(ctx context.Context, channel, threadTS, filename, title string, png []byte) error
}

// Announce posts text in a channel (drill announcements and scheduled
// drills' reports): the Bot is the drills' Announcer.
func (b *Bot) Announce(ctx context.Context, channel, text string) error {
	_, err := b.out.Post(ctx, channel, "", DrillReplyMessage(commands.DrillReply{Text: text}))
	return err
}

// card runs a dry run and posts the pre-flight card in the channel.
func (b *Bot) card(ctx context.Context, req *request, c commands.RollbackCmd) {
	b.resolveChannel(ctx, &req.origin)
	res, err := b.svc.Rollback(ctx, commands.RollbackRequest{
		Origin: req.origin, Route: c.Route, To: c.To, Reason: c.Reason, ForceCold: c.ForceCold, DryRun: c.DryRun, Preflight: !c.DryRun,
	}, nil)
	if err != nil {
		b.reply(ctx, req, ErrorReply(err))
		return
	}
	if c.DryRun {
		b.reply(ctx, req, ReportMessage(res))
		return
	}
	card := Card{
		ID: uuid.NewString(), Route: res.Route, From: res.From, To: res.To, Rev: res.ExpectRev,
		Exp: b.now().Add(b.cfg.CardTTL).Unix(), ForceCold: c.ForceCold, Reason: res.Reason, By: req.origin.Actor.ID,
	}
	if _, err := b.post(ctx, req, "", CardMessage(res, card, b.now())); err != nil {
		b.log.Warn("pre-flight card not posted", zap.String("route", c.Route), zap.Error(err))
		b.reply(ctx, req, ErrorReply(commands.Errorf(commands.EUNAVAILABLE, "the pre-flight card could not be posted (%s); use --now or backflipctl", commands.Clip(err.Error(), 200))))
	}
}

// rollbackNow runs a --now rollback with a live progress message.
func (b *Bot) rollbackNow(ctx context.Context, req *request, c commands.RollbackCmd) {
	b.resolveChannel(ctx, &req.origin)
	if c.DryRun {
		b.card(ctx, req, c)
		return
	}
	if err := b.svc.Authorize(ctx, req.origin, commands.VerbRollback, c.Route); err != nil {
		b.reply(ctx, req, ErrorReply(err))
		return
	}
	rreq := commands.RollbackRequest{Origin: req.origin, Route: c.Route, To: c.To, Reason: c.Reason, ForceCold: c.ForceCold}
	b.run(ctx, req, "", "", rreq)
}

// Action answers a click on a card's button.
func (b *Bot) Action(_ context.Context, act Action) *Reply {
	// Slack ignores a reply to a click: every answer goes through the
	// response_url or an update of the card.
	req := &request{origin: b.originOf(act.UserID, act.UserName, act.ChannelID, act.ChannelName, act.Received), responseURL: act.ResponseURL}
	card, err := DecodeCard(act.Value)
	if err != nil {
		b.log.Warn("malformed card value", zap.String("user", act.UserID), zap.Error(err))
		b.spawn(func(ctx context.Context) {
			b.reply(ctx, req, ErrorReply(commands.Errorf(commands.EINVALID, "this button's card could not be read; run /rollback again")))
		})
		return nil
	}
	switch act.ActionID {
	case ActionCancel:
		b.spawn(func(ctx context.Context) { b.cancel(ctx, req, act, card) })
		return nil
	case ActionConfirm:
		if b.now().After(card.Expires()) {
			b.spawn(func(ctx context.Context) {
				b.update(ctx, act.ChannelID, act.MessageTS, CardClosedMessage(card, fmt.Sprintf("This card expired at %s UTC; nothing was changed. Run /rollback %s again for a fresh check.", card.Expires().UTC().Format("15:04"), card.Route)))
				b.reply(ctx, req, ErrorReply(commands.Errorf(commands.EREFUSED, "this card expired; nothing was changed. Run /rollback %s again for a fresh check.", card.Route)))
			})
			return nil
		}
		b.spawn(func(ctx context.Context) { b.confirm(ctx, req, act, card) })
		return nil
	}
	return nil
}

func (b *Bot) cancel(ctx context.Context, req *request, act Action, card Card) {
	b.resolveChannel(ctx, &req.origin)
	if err := b.svc.Authorize(ctx, req.origin, commands.VerbRollback, card.Route); err != nil {
		b.reply(ctx, req, ErrorReply(err))
		return
	}
	b.update(ctx, act.ChannelID, act.MessageTS, CardClosedMessage(card, fmt.Sprintf("Cancelled by %s; nothing was changed.", commands.Actor{ID: act.UserID}.Mention())))
}

// confirm runs the rollback the card describes, as the person who clicked,
// turning the card into its progress message.
func (b *Bot) confirm(ctx context.Context, req *request, act Action, card Card) {
	b.resolveChannel(ctx, &req.origin)
	if err := b.svc.Authorize(ctx, req.origin, commands.VerbRollback, card.Route); err != nil {
		b.reply(ctx, req, ErrorReply(err))
		return
	}
	req.origin.IdemKey = card.IdemKey()
	req.origin.TS = act.MessageTS
	rreq := commands.RollbackRequest{
		Origin: req.origin, Route: card.Route, To: card.To, Reason: card.Reason,
		ForceCold: card.ForceCold, ExpectRev: card.Rev, Op: card.ID,
	}
	b.run(ctx, req, act.MessageTS, card.From, rreq)
}

// run runs a rollback with a live progress message: the card (ts set) or
// a new message. At the end the message shows the timing report and its
// thread the audit summary.
func (b *Bot) run(ctx context.Context, req *request, ts, from string, rreq commands.RollbackRequest) {
	channel := req.origin.Channel.ID
	if rreq.Op == "" {
		// Minted here so the progress message can carry it from its first
		// post (it is the message's dedupe key).
		rreq.Op = uuid.NewString()
	}
	view := ProgressView{Op: rreq.Op, Route: rreq.Route, From: from, To: rreq.To, Actor: req.origin.Actor, Reason: rreq.Reason, ForcedCold: rreq.ForceCold, Started: b.now()}
	if ts == "" {
		var err error
		ts, err = b.post(ctx, req, "", ProgressMessage(view))
		if err != nil {
			b.reply(ctx, req, ErrorReply(commands.Errorf(commands.EUNAVAILABLE, "could not post in this channel (%s); the rollback was not started. Use backflipctl.", commands.Clip(err.Error(), 200))))
			return
		}
		rreq.Origin.TS = ts
	} else {
		b.update(ctx, channel, ts, ProgressMessage(view))
	}
	up := newUpdater(b, channel, ts, view)
	res, err := b.svc.Rollback(ctx, rreq, up.progress)
	up.stop()
	switch {
	case res != nil && res.Replayed:
		// Another click or replica runs (or ran) this op and reports it.
		if err != nil {
			b.reply(ctx, req, ErrorReply(err))
		} else {
			b.reply(ctx, req, Message{Text: fmt.Sprintf("Already done: %s", res.Report())})
		}
		return
	case err != nil && (res == nil || res.Revision == 0):
		// The progress message becomes the refusal, rendered (and escaped)
		// like every other; the requester also gets it privately with the
		// usage line when there is one.
		b.reply(ctx, req, ErrorReply(err))
		b.finish(ctx, req, channel, ts, ErrorReply(err))
		return
	}
	b.finish(ctx, req, channel, ts, ReportMessage(res))
	row, rerr := b.svc.AuditRow(ctx, res.Audit.EventID, b.cfg.AuditRowWait)
	if rerr != nil {
		b.log.Info("audit row not read; summary says pending", zap.Error(rerr))
	}
	thread := ts
	if thread == "" {
		// Posted through the response_url: no thread to reply in.
		if req.responses < 3 && req.responseURL != "" {
			req.responses++
			_ = b.out.Respond(ctx, req.responseURL, AuditSummaryMessage(res, row), true, false)
		}
		return
	}
	if _, err := b.out.Post(ctx, channel, thread, AuditSummaryMessage(res, row)); err != nil {
		b.log.Warn("audit summary not posted", zap.String("op", res.Op), zap.Error(err))
	}
}

// finish replaces the progress message with msg (or sends msg through the
// response_url when there is no message to update).
func (b *Bot) finish(ctx context.Context, req *request, channel, ts string, msg Message) {
	if ts != "" {
		b.update(ctx, channel, ts, msg)
		return
	}
	if req.responseURL != "" && req.responses < 3 {
		req.responses++
		if err := b.out.Respond(ctx, req.responseURL, msg, true, false); err != nil {
			b.log.Warn("report not sent", zap.Error(err))
		}
	}
}

func (b *Bot) update(ctx context.Context, channel, ts string, msg Message) {
	if err := b.out.Update(ctx, channel, ts, msg); err != nil {
		b.log.Warn("message not updated", zap.String("channel", channel), zap.String("ts", ts), zap.Error(err))
	}
}

// Notify posts an op recovery notice in the op's thread and OPS_CHANNEL.
func (b *Bot) Notify(ctx context.Context, n commands.Notice) {
	msg := NoticeMessage(n)
	if n.Channel != "" {
		if _, err := b.out.Post(ctx, n.Channel, n.TS, msg); err != nil {
			b.log.Warn("recovery notice not posted in the op's channel", zap.String("op", n.Op), zap.Error(err))
		}
	}
	if b.cfg.OpsChannel != "" && b.cfg.OpsChannel != n.Channel {
		if _, err := b.out.Post(ctx, b.cfg.OpsChannel, "", msg); err != nil {
			b.log.Warn("recovery notice not posted in the ops channel", zap.String("op", n.Op), zap.Error(err))
		}
	}
}

// WarmKeep posts a warm-keep alert to OPS_CHANNEL.
func (b *Bot) WarmKeep(ctx context.Context, ev warm.Event) {
	if b.cfg.OpsChannel == "" {
		b.log.Warn("warm-keep alert not posted: BACKFLIP_OPS_CHANNEL is not set", zap.String("route", ev.Route), zap.String("state", string(ev.State)))
		return
	}
	if _, err := b.out.Post(ctx, b.cfg.OpsChannel, "", WarmKeepMessage(ev)); err != nil {
		b.log.Warn("warm-keep alert not posted", zap.String("route", ev.Route), zap.Error(err))
	}
}

// updater coalesces progress into chat.update calls at most every
// UpdateInterval, off the rollback's goroutine (a slow Slack must not slow
// the rollback).
type updater struct {
	b       *Bot
	channel string
	ts      string
	mu      sync.Mutex
	view    ProgressView
	dirty   chan struct{}
	done    chan struct{}
	wg      sync.WaitGroup
}

func newUpdater(b *Bot, channel, ts string, view ProgressView) *updater {
	u := &updater{b: b, channel: channel, ts: ts, view: view, dirty: make(chan struct{}, 1), done: make(chan struct{})}
	if ts == "" {
		return u // nothing to update (posted through the response_url)
	}
	u.wg.Add(1)
	go u.loop()
	return u
}

func (u *updater) progress(p commands.Progress) {
	u.mu.Lock()
	u.view.Op = p.Op
	// A phase names the versions once it knows them; one reported before
	// resolve may name only the target, and must not blank a version the
	// card already showed.
	if p.From != "" {
		u.view.From = p.From
	}
	if p.To != "" {
		u.view.To = p.To
	}
	replaced := false
	for i := range u.view.Phases {
		if u.view.Phases[i].Phase == p.Phase {
			u.view.Phases[i], replaced = p, true
		}
	}
	if !replaced {
		u.view.Phases = append(u.view.Phases, p)
	}
	u.mu.Unlock()
	select {
	case u.dirty <- struct{}{}:
	default:
	}
}

func (u *updater) loop() {
	defer u.wg.Done()
	for {
		select {
		case <-u.done:
			return
		case <-u.dirty:
		}
		u.mu.Lock()
		v := u.view
		v.Phases = append([]commands.Progress(nil), u.view.Phases...)
		u.mu.Unlock()
		ctx, cancel := context.WithTimeout(u.b.base, 5*time.Second)
		u.b.update(ctx, u.channel, u.ts, ProgressMessage(v))
		cancel()
		select {
		case <-u.done:
			return
		case <-time.After(u.b.cfg.UpdateInterval):
		}
	}
}

func (u *updater) stop() {
	close(u.done)
	u.wg.Wait()
}
