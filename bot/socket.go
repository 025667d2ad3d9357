package bot

import (
	"github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"
)

// newSocketClient opens Socket Mode over api (which carries the app-level
// token). The Socket Mode transport is built on it.
func newSocketClient(api *slack.Client, opts ...socketmode.Option) *socketmode.Client {
	return socketmode.New(api, opts...)
}
