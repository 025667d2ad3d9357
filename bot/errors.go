package bot

import "errors"

// ErrNotInChannel: the bot is not a member of the channel and could not
// join it (private channels need an /invite).
var ErrNotInChannel = errors.New("backflip is not in this channel")
