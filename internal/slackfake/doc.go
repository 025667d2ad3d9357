// Package slackfake is a fake Slack Web API for tests of the bot, the
// drills and the binaries: an httptest server that answers the methods
// backflip calls the way Slack answers them, records what was posted, and
// fails on request.
//
// It exists because Slack is one of the two parts backflip's tests may
// fake, and a fake is only worth having if code that passes against it
// works against Slack. So the replies have the shapes slack-go decodes
// ("ok", "error", "needed", "ts", "channel", "message", "messages",
// "response_metadata"), timestamps are unique and increasing with
// microseconds like Slack's, a bot that is not in a channel gets
// not_in_channel (public) or channel_not_found (private, which is what
// Slack answers for a private channel the bot was not invited to), a 429
// carries Retry-After in seconds, a 5xx body is not JSON, response_url
// posts are JSON and allowed five times, and file uploads go through
// files.getUploadURLExternal, an upload URL on this server and
// files.completeUploadExternal (files.upload is retired). slack-go's
// slacktest is not used: its chat.postMessage records nothing and returns
// whole-second timestamps, and it has no upload endpoints.
//
// What it must not do: it is not Slack. It does not model users, team
// settings, rate limits it was not told to apply, Socket Mode (see the
// socket fake beside it) or message formatting; it never talks to the
// network beyond loopback; and it keeps no package-level state, so every
// test gets its own server.
package slackfake
