package bot

import (
	"context"
	"time"

	"github.com/slack-go/slack"
)

// SlashCommand is a slash command as a transport received it, already
// verified (signature, timestamp) and decoded.
type SlashCommand struct {
	// Command is "/rollback" or "/drill".
	Command string
	// Text is what followed the command, HTML entities (&amp; &lt; &gt;)
	// decoded.
	Text        string
	UserID      string
	UserName    string
	ChannelID   string
	ChannelName string // may be "privategroup" for private channels
	TeamID      string
	ResponseURL string
	TriggerID   string
	// Received is when the transport read the request (monotonic).
	Received time.Time
	// Retry is X-Slack-Retry-Num (HTTP) or retry_attempt (Socket Mode).
	Retry int
}

// Action is a click on one of backflip's buttons (block_actions).
type Action struct {
	ActionID    string
	Value       string
	UserID      string
	UserName    string
	ChannelID   string
	ChannelName string
	// MessageTS is the message holding the button (the card).
	MessageTS   string
	ResponseURL string
	TriggerID   string
	Received    time.Time
	Retry       int
}

// Reply is what a transport sends back in the acknowledgement itself. Nil
// means an empty acknowledgement (the answer follows through the Web API or
// the response_url).
type Reply struct {
	// InChannel makes the reply visible to the channel (response_type
	// in_channel); otherwise only the requester sees it (ephemeral).
	InChannel bool
	Message
}

// Message is one chat message: fallback text plus Block Kit blocks.
type Message struct {
	Text   string
	Blocks []slack.Block
	// Key, when set, is a unique string contained in Text (an op id and a
	// role, e.g. "op 1b2c… report"). When a post's outcome is unknown (a
	// 5xx or a timeout after the request was sent), the Slack client looks
	// for a recent message containing Key before posting again, so one
	// report is never posted twice.
	Key string
}

// Handler answers what the transports receive. Both methods must return
// quickly (Slack wants the acknowledgement within 3 s; backflip aims for
// 50 ms): they answer at once and continue any long work on their own
// goroutines, which outlive the request.
type Handler interface {
	Slash(ctx context.Context, cmd SlashCommand) *Reply
	Action(ctx context.Context, act Action) *Reply
}

// Poster is how the bot talks into channels: the Slack Web API in
// production, the terminal in `backflip dev`, a recording fake in tests.
type Poster interface {
	// Post sends a message to a channel (in a thread when threadTS is not
	// ""), returning its ts. ErrNotInChannel means the bot could not post
	// there (a private channel it was not invited to).
	Post(ctx context.Context, channel, threadTS string, msg Message) (ts string, err error)
	// Update replaces a message the bot posted.
	Update(ctx context.Context, channel, ts string, msg Message) error
	// Ephemeral shows a message to one user in a channel.
	Ephemeral(ctx context.Context, channel, user string, msg Message) error
	// Respond posts through a slash command's or action's response_url
	// (works without channel membership; Slack allows 5 uses in 30 min).
	Respond(ctx context.Context, responseURL string, msg Message, inChannel, replaceOriginal bool) error
}
