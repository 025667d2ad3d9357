package bot

import _ "github.com/slack-go/slack/slacktest"
