package bot

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"
	"go.uber.org/zap"
)

// SocketConfig configures RunSocket.
type SocketConfig struct {
	// AppToken is the app-level token (xapp-…, scope connections:write)
	// that opens Socket Mode connections (required).
	AppToken string
	// BotToken is the bot token (xoxb-…). Socket Mode does not need it;
	// it is carried so the client is a complete Slack client.
	BotToken string
	// APIURL overrides Slack's Web API base URL (ending in "/"), for tests
	// against a fake Slack. Empty means Slack's.
	APIURL string
	// Handler answers commands and clicks (required).
	Handler Handler
	// Logger receives connection changes and failures. Nil means no
	// logging.
	Logger *zap.Logger
	// Debug turns on slack-go's own debug logging (to Logger, at info
	// level) and asks Slack for short-lived connections, which exercises
	// reconnects.
	Debug bool
}

// socketHTTPTimeout bounds one apps.connections.open call, so a hung Slack
// edge delays a reconnect instead of stopping it.
const socketHTTPTimeout = 30 * time.Second

// RunSocket serves Slack over Socket Mode until ctx ends, then returns nil.
// It opens a connection with apps.connections.open and the app token, and
// slack-go's client keeps it open: it reconnects when Slack asks it to,
// when the connection drops, and when Slack's pings stop. RunSocket
// returns an error only when the configuration is unusable or Slack
// refuses the token (invalid_auth and the like), which no retry can cure.
//
// Each request is answered on its own goroutine, so a slow Handler delays
// its own acknowledgement and not the others'; RunSocket waits for those
// goroutines before it returns. Slash commands are acknowledged with the
// Handler's reply as the ack payload; clicks and events with an empty ack.
func RunSocket(ctx context.Context, cfg SocketConfig) error {
	if !strings.HasPrefix(cfg.AppToken, "xapp-") {
		return errors.New("slack socket mode: the app token must be an app-level token (xapp-…)")
	}
	if cfg.Handler == nil {
		return errors.New("slack socket mode: no handler")
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}

	// The client gets its own transport so that its idle connections can
	// be closed on return: a shared one would keep goroutines alive after
	// RunSocket has returned.
	transport := http.DefaultTransport.(*http.Transport).Clone()
	defer transport.CloseIdleConnections()
	stdlog := zap.NewStdLog(log.Named("slack-go"))
	opts := []slack.Option{
		slack.OptionAppLevelToken(cfg.AppToken),
		slack.OptionHTTPClient(&http.Client{Transport: transport, Timeout: socketHTTPTimeout}),
		slack.OptionDebug(cfg.Debug),
		slack.OptionLog(stdlog),
	}
	if cfg.APIURL != "" {
		opts = append(opts, slack.OptionAPIURL(cfg.APIURL))
	}
	client := newSocketClient(slack.New(cfg.BotToken, opts...),
		socketmode.OptionDebug(cfg.Debug), socketmode.OptionLog(stdlog))

	t := &socketTransport{client: client, handler: cfg.Handler, log: log}
	// Deferred before cancel, so it runs after it: an answering goroutine
	// blocked on an ack that can no longer be sent (the connection is gone)
	// gives up when the context ends, and RunSocket returns only once all
	// of them have.
	defer t.wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- client.RunContext(ctx) }()

	for {
		select {
		case err := <-runErr:
			if ctx.Err() != nil {
				return nil
			}
			if !errors.Is(err, context.Canceled) {
				return fmt.Errorf("slack socket mode: %w", err)
			}
			// slack-go v0.35 can end RunContext with context.Canceled
			// when a connection drops (Slack's periodic "disconnect"),
			// because its goroutines cancel each other and that error can
			// win the race. The bot's context is alive, so this is a
			// reconnect, not a stop.
			t.log.Warn("socket mode connection ended without reconnecting; reconnecting")
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
			go func() { runErr <- client.RunContext(ctx) }()
		case evt := <-client.Events:
			t.dispatch(ctx, evt)
		}
	}
}

// newSocketClient opens Socket Mode over api (which carries the app-level
// token). It is a seam for the options tests may need.
func newSocketClient(api *slack.Client, opts ...socketmode.Option) *socketmode.Client {
	return socketmode.New(api, opts...)
}

// socketTransport turns Socket Mode events into Handler calls and acks.
type socketTransport struct {
	client  *socketmode.Client
	handler Handler
	log     *zap.Logger
	// wg counts the goroutines answering requests.
	wg sync.WaitGroup
}

// dispatch handles one event from the client. It must not block: the
// client's read loop waits for the Events channel.
func (t *socketTransport) dispatch(ctx context.Context, evt socketmode.Event) {
	received := time.Now()
	switch evt.Type {
	case socketmode.EventTypeSlashCommand:
		cmd, ok := evt.Data.(slack.SlashCommand)
		if !ok || evt.Request == nil {
			t.log.Warn("slack socket mode: slash command without a payload", zap.String("data", fmt.Sprintf("%T", evt.Data)))
			return
		}
		req := *evt.Request
		t.wg.Go(func() {
			sc := slashCommand(cmd, received, req.RetryAttempt)
			if req.RetryAttempt > 0 {
				t.log.Debug("slack retried a slash command", zap.Int("retry", req.RetryAttempt),
					zap.String("reason", req.RetryReason))
			}
			// The handler's context outlives the connection for the same
			// reason the HTTP transport's outlives the request: a rollback
			// started here must not stop because the socket is closing.
			reply := callSlash(context.WithoutCancel(ctx), t.handler, sc, t.log)
			t.ack(ctx, req, reply, true)
		})
	case socketmode.EventTypeInteractive:
		ic, ok := evt.Data.(slack.InteractionCallback)
		if !ok || evt.Request == nil {
			t.log.Warn("slack socket mode: interaction without a payload", zap.String("data", fmt.Sprintf("%T", evt.Data)))
			return
		}
		req := *evt.Request
		t.wg.Go(func() {
			reply := dispatchActions(context.WithoutCancel(ctx), t.handler, ic, received, req.RetryAttempt, t.log)
			t.ack(ctx, req, reply, req.AcceptsResponsePayload)
		})
	case socketmode.EventTypeEventsAPI:
		// backflip subscribes to no events; the ack only stops Slack from
		// retrying.
		if evt.Request != nil {
			req := *evt.Request
			t.wg.Go(func() { t.ack(ctx, req, nil, false) })
		}
		t.log.Debug("slack event ignored")
	case socketmode.EventTypeConnecting:
		t.log.Debug("slack socket mode connecting")
	case socketmode.EventTypeConnected:
		t.log.Info("slack socket mode connected")
	case socketmode.EventTypeHello:
		t.log.Debug("slack socket mode hello")
	case socketmode.EventTypeConnectionError:
		var err error
		if e, ok := evt.Data.(*slack.ConnectionErrorEvent); ok {
			err = e.ErrorObj
		}
		t.log.Warn("slack socket mode connection failed; retrying", zap.Error(err))
	case socketmode.EventTypeInvalidAuth:
		t.log.Error("slack refused the app token")
	case socketmode.EventTypeIncomingError:
		// A read error ends the connection, and slack-go reconnects; every
		// deliberate close (a disconnect request, shutdown) produces one,
		// so it is not worth a warning. Failed reconnects are.
		t.log.Debug("slack socket mode connection lost", zap.Any("data", evt.Data))
	case socketmode.EventTypeErrorBadMessage, socketmode.EventTypeErrorWriteFailed:
		t.log.Warn("slack socket mode error", zap.String("type", string(evt.Type)), zap.Any("data", evt.Data))
	default:
		t.log.Debug("slack socket mode event ignored", zap.String("type", string(evt.Type)))
	}
}

// ack acknowledges a request, with the reply as payload when Slack accepts
// one. Slack silently drops acks of 20 KB or more and slack-go refuses to
// send them, so a reply too large (or whose blocks do not marshal) is sent
// again as text alone, and as a bare ack if even that fails: an ack Slack
// never sees would make it retry the command.
func (t *socketTransport) ack(ctx context.Context, req socketmode.Request, reply *Reply, acceptsPayload bool) {
	if reply != nil && !acceptsPayload {
		// Slack ignores a reply to a click; an answer must go through the
		// response_url or the Web API.
		t.log.Warn("slack accepts no reply in this ack; the reply is dropped", zap.String("type", req.Type))
		reply = nil
	}
	if reply != nil {
		p := newReplyPayload(reply)
		err := t.client.AckCtx(ctx, req.EnvelopeID, p)
		if err == nil || ctx.Err() != nil {
			return
		}
		t.log.Error("slack ack with the reply failed; retrying with its text alone", zap.Error(err))
		p.Blocks = nil
		if err = t.client.AckCtx(ctx, req.EnvelopeID, p); err == nil || ctx.Err() != nil {
			return
		}
		t.log.Error("slack ack with the reply's text failed; acking without it", zap.Error(err))
	}
	if err := t.client.AckCtx(ctx, req.EnvelopeID, nil); err != nil && ctx.Err() == nil {
		t.log.Error("slack ack failed", zap.String("envelope", req.EnvelopeID), zap.Error(err))
	}
}
