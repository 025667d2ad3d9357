package bot

import (
	"strings"
)

// PlainText renders m for a terminal, for the chat adapter of `backflip
// dev`: the header, the sections, the context lines (their elements joined
// by " · ") and the buttons as "[Confirm] [Cancel]", one block after the
// other. mrkdwn is turned back into what a person reads: entities
// unescaped (&lt; is <), mentions <@U…> shown as @U…, bold markers and
// code fences dropped, emoji shortcodes shown as emoji. A message without
// blocks is its fallback text.
//
// It reads the blocks as they would be posted (marshalled), so it shows
// exactly what Slack would be sent. The result has no trailing newline.
func PlainText(m Message) string {
	blocks, err := wireBlocks(m)
	if err != nil || len(blocks) == 0 {
		return mrkdwnToText(m.Text)
	}
	var out []string
	for _, b := range blocks {
		switch b.Type {
		case "header":
			if b.Text != nil {
				out = append(out, textToPlain(*b.Text))
			}
		case "section":
			if b.Text != nil {
				out = append(out, textToPlain(*b.Text))
			}
			for _, f := range b.Fields {
				out = append(out, textToPlain(f))
			}
			if b.Accessory != nil {
				out = append(out, buttonsText([]wireElement{*b.Accessory}))
			}
		case "context":
			var parts []string
			for _, e := range b.Elements {
				if e.Type != "mrkdwn" && e.Type != "plain_text" {
					continue
				}
				if t, err := e.contextText(); err == nil {
					parts = append(parts, textToPlain(*t))
				}
			}
			if len(parts) > 0 {
				out = append(out, strings.Join(parts, " · "))
			}
		case "actions":
			if s := buttonsText(b.Elements); s != "" {
				out = append(out, s)
			}
		case "divider":
			out = append(out, "────────")
		}
	}
	return strings.Join(out, "\n")
}

// buttonsText shows buttons as "[Confirm] [Cancel]".
func buttonsText(elems []wireElement) string {
	var parts []string
	for _, e := range elems {
		t, err := e.textObject()
		if err != nil || t == nil {
			continue
		}
		parts = append(parts, "["+textToPlain(*t)+"]")
	}
	return strings.Join(parts, " ")
}

// textToPlain renders one text object for the terminal.
func textToPlain(t wireText) string {
	if t.Type == "mrkdwn" {
		return mrkdwnToText(t.Text)
	}
	return shortcodesToEmoji(t.Text)
}

// mrkdwnToText turns mrkdwn as backflip writes it into terminal text.
// Markup is taken apart before the entities are unescaped, so text that
// was escaped (a reason quoting "<!channel>") comes out as it was typed,
// never as markup.
func mrkdwnToText(s string) string {
	s = unwrapMarkup(s)
	lines := strings.Split(s, "\n")
	out := lines[:0]
	for _, line := range lines {
		if strings.TrimSpace(line) == "```" {
			continue
		}
		line = strings.TrimPrefix(line, "```")
		line = strings.TrimSuffix(line, "```")
		out = append(out, stripBold(line))
	}
	s = strings.Join(out, "\n")
	s = shortcodesToEmoji(s)
	s = strings.NewReplacer("&lt;", "<", "&gt;", ">", "&amp;", "&", "\u2060", "").Replace(s)
	return s
}

// unwrapMarkup rewrites Slack's angle-bracket markup: <@U1> is @U1,
// <#C1|name> is #name, <!here> is @here, <url|label> is "label (url)" and
// <url> is url.
func unwrapMarkup(s string) string {
	var b strings.Builder
	for {
		i := strings.IndexByte(s, '<')
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		j := strings.IndexByte(s[i:], '>')
		if j < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i])
		inner := s[i+1 : i+j]
		target, label, hasLabel := strings.Cut(inner, "|")
		switch {
		case strings.HasPrefix(target, "@"), strings.HasPrefix(target, "#"):
			if hasLabel {
				b.WriteString(target[:1] + strings.TrimPrefix(label, target[:1]))
			} else {
				b.WriteString(target)
			}
		case strings.HasPrefix(target, "!"):
			if hasLabel {
				b.WriteString(label)
			} else {
				word, _, _ := strings.Cut(target[1:], "^")
				b.WriteString("@" + word)
			}
		case hasLabel:
			b.WriteString(label + " (" + target + ")")
		default:
			b.WriteString(target)
		}
		s = s[i+j+1:]
	}
}

// stripBold removes *bold* markers by Slack's rule: an opening * follows
// the start of the line, a space or punctuation and is followed by a
// non-space; the closing * follows a non-space and is followed by the end,
// a space or punctuation. Other asterisks ("0 10 * * TUE") stay.
func stripBold(line string) string {
	var b strings.Builder
	for i := 0; i < len(line); i++ {
		if line[i] == '*' && opensBold(line, i) {
			if j := closingBold(line, i); j > 0 {
				b.WriteString(line[i+1 : j])
				i = j
				continue
			}
		}
		b.WriteByte(line[i])
	}
	return b.String()
}

func opensBold(line string, i int) bool {
	if i+1 >= len(line) || isSpaceOrStar(line[i+1]) {
		return false
	}
	return i == 0 || isBoundary(line[i-1])
}

// closingBold is the index of the * that closes the bold opened at i, or
// 0 when there is none on the line.
func closingBold(line string, i int) int {
	for j := i + 2; j < len(line); j++ {
		if line[j] != '*' || line[j-1] == ' ' {
			continue
		}
		if j+1 == len(line) || isBoundary(line[j+1]) {
			return j
		}
	}
	return 0
}

func isSpaceOrStar(c byte) bool { return c == ' ' || c == '*' }

// isBoundary reports whether c may stand next to a bold marker: a space or
// ASCII punctuation (bytes of multi-byte characters count as boundaries,
// as "“*x*”" is bold in Slack).
func isBoundary(c byte) bool {
	switch {
	case c == ' ', c >= 0x80:
		return true
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return false
	}
	return c != '*'
}

// shortcodesToEmoji replaces the emoji shortcodes backflip's messages use
// (and a few common ones) with the emoji Slack would show.
func shortcodesToEmoji(s string) string {
	if !strings.Contains(s, ":") {
		return s
	}
	var b strings.Builder
	for {
		i := strings.IndexByte(s, ':')
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		j := strings.IndexByte(s[i+1:], ':')
		if j < 0 {
			b.WriteString(s)
			return b.String()
		}
		if e := emojiFor(s[i+1 : i+1+j]); e != "" {
			b.WriteString(s[:i] + e)
			s = s[i+j+2:]
			continue
		}
		// Not a known shortcode: keep the first colon and look again from
		// the second, which may open one ("at 10:00 :x:").
		b.WriteString(s[:i+1])
		s = s[i+1:]
	}
}

// emojiFor is the emoji of a shortcode, "" for one it does not know.
func emojiFor(name string) string {
	switch name {
	case "white_check_mark":
		return "✅"
	case "warning":
		return "⚠️"
	case "no_entry":
		return "⛔"
	case "x":
		return "❌"
	case "mag":
		return "🔍"
	case "recycle":
		return "♻️"
	case "information_source":
		return "ℹ️"
	case "lock":
		return "🔒"
	case "twisted_rightwards_arrows":
		return "🔀"
	case "heavy_minus_sign":
		return "➖"
	case "memo":
		return "📝"
	case "scroll":
		return "📜"
	case "snowflake":
		return "❄️"
	case "book":
		return "📖"
	case "fire_engine":
		return "🚒"
	case "hourglass_flowing_sand":
		return "⏳"
	}
	return ""
}
