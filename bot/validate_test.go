package bot

import (
	"fmt"
	"strings"
	"testing"

	"github.com/slack-go/slack"
)

func vSection(text string) slack.Block {
	return slack.NewSectionBlock(mrkdwn(text), nil, nil)
}

func vButton(actionID, value, text string) *slack.ButtonBlockElement {
	return slack.NewButtonBlockElement(actionID, value, plain(text))
}

func vDialog() *slack.ConfirmationBlockObject {
	return slack.NewConfirmationBlockObject(plain("Roll back?"), plain("Sure?"), plain("Yes"), plain("No"))
}

func vMessage(blocks ...slack.Block) Message {
	return Message{Text: "fallback", Blocks: blocks}
}

func vSections(n int, text string) Message {
	var blocks []slack.Block
	for range n {
		blocks = append(blocks, vSection(text))
	}
	return vMessage(blocks...)
}

func TestValidateAccepts(t *testing.T) {
	for name, m := range map[string]Message{
		"TextOnly":         {Text: "chat-70b rolled back"},
		"FiftyBlocks":      vSections(50, "x"),
		"SectionAtLimit":   vMessage(vSection(strings.Repeat("a", maxSectionText))),
		"EmojiCountTwice":  vMessage(vSection(strings.Repeat("😀", maxSectionText/2))),
		"HeaderAtLimit":    vMessage(slack.NewHeaderBlock(plain(strings.Repeat("h", maxHeaderText)))),
		"MentionAndEntity": vMessage(vSection("by <@U024BE7LH> &amp; &lt;x&gt;")),
		"ButtonsAndDialog": vMessage(slack.NewActionBlock("", vButton("a", strings.Repeat("v", maxButtonValue), strings.Repeat("b", maxButtonText)).
			WithStyle(slack.StyleDanger).WithConfirm(vDialog()), vButton("b", "", "Cancel").WithStyle(slack.StylePrimary))),
		"Divider":     vMessage(vSection("a"), slack.NewDividerBlock()),
		"ContextTen":  vMessage(slack.NewContextBlock("", vContextElems(10)...)),
		"KeyInText":   {Text: "report (op 1 report)", Key: "op 1 report"},
		"PlainTextLt": vMessage(slack.NewSectionBlock(plain("<not parsed>"), nil, nil)),
	} {
		t.Run(name, func(t *testing.T) {
			if err := ValidateMessage(m); err != nil {
				t.Errorf("ValidateMessage: %v", err)
			}
		})
	}
}

func vContextElems(n int) []slack.MixedElement {
	var out []slack.MixedElement
	for i := range n {
		out = append(out, mrkdwn(fmt.Sprint("e", i)))
	}
	return out
}

func TestValidateRefuses(t *testing.T) {
	ok := vButton("backflip.confirm", "v", "Confirm")
	for _, tc := range []struct {
		name string
		m    Message
		want string
	}{
		{"NoFallback", Message{Blocks: []slack.Block{vSection("a")}}, "fallback text is missing"},
		{"BlankFallback", Message{Text: " \n", Blocks: []slack.Block{vSection("a")}}, "fallback text is missing"},
		{"LongFallback", Message{Text: strings.Repeat("t", maxFallbackText+1)}, "fallback text is 4001 characters"},
		{"FallbackBroadcast", Message{Text: "hey <!channel>"}, "only <@user> mentions"},
		{"KeyNotInText", Message{Text: "report", Key: "op 1 report"}, "not in the fallback text"},
		{"FiftyOneBlocks", vSections(51, "x"), "51 blocks"},
		{"LongSection", vMessage(vSection(strings.Repeat("a", maxSectionText+1))), "section text is 3001 characters"},
		{"LongSectionOfEmoji", vMessage(vSection(strings.Repeat("😀", maxSectionText/2+1))), "section text is 3002 characters"},
		{"EmptySection", vMessage(vSection("  ")), "section text is empty"},
		{"SectionWithoutText", vMessage(slack.NewSectionBlock(nil, nil, nil)), "without text or fields"},
		{"LongHeader", vMessage(slack.NewHeaderBlock(plain(strings.Repeat("h", maxHeaderText+1)))), "header text is 151 characters"},
		{"MrkdwnHeader", vMessage(slack.NewHeaderBlock(mrkdwn("h"))), `header text has type "mrkdwn"`},
		{"UnescapedBroadcast", vMessage(vSection("reason: <!channel>")), "only <@user> mentions"},
		{"UnescapedLink", vMessage(vSection("<https://evil.example|click>")), "only <@user> mentions"},
		{"LowercaseMention", vMessage(vSection("<@u024be7lh>")), "only <@user> mentions"},
		{"UnescapedAmpersand", vMessage(vSection("a & b")), "unescaped &"},
		{"UnescapedGt", vMessage(vSection("> quote")), "unescaped >"},
		{"DuplicateActionID", vMessage(slack.NewActionBlock("", ok, vButton("backflip.confirm", "v", "Again"))), `action_id "backflip.confirm" is used twice`},
		{"DuplicateActionIDAcrossBlocks", vMessage(slack.NewActionBlock("", ok), slack.NewActionBlock("", vButton("backflip.confirm", "v", "x"))), "used twice"},
		{"MissingActionID", vMessage(slack.NewActionBlock("", vButton("", "v", "x"))), "without action_id"},
		{"BadStyle", vMessage(slack.NewActionBlock("", vButton("a", "v", "x").WithStyle("warning"))), `style "warning"`},
		{"LongValue", vMessage(slack.NewActionBlock("", vButton("a", strings.Repeat("v", maxButtonValue+1), "x"))), "value is 2001 characters"},
		{"LongButtonText", vMessage(slack.NewActionBlock("", vButton("a", "v", strings.Repeat("b", maxButtonText+1)))), "button text is 76 characters"},
		{"DialogWithoutDeny", vMessage(slack.NewActionBlock("", vButton("a", "v", "x").WithConfirm(
			slack.NewConfirmationBlockObject(plain("t"), plain("x"), plain("yes"), nil)))), "deny button is missing"},
		{"DialogLongText", vMessage(slack.NewActionBlock("", vButton("a", "v", "x").WithConfirm(
			slack.NewConfirmationBlockObject(plain("t"), plain(strings.Repeat("x", maxConfirmText+1)), plain("yes"), plain("no"))))), "confirm text is 301"},
		{"DialogBadStyle", vMessage(slack.NewActionBlock("", vButton("a", "v", "x").WithConfirm(vDialog().WithStyle("loud")))), `style "loud"`},
		{"TwentySixButtons", vMessage(slack.NewActionBlock("", vButtons(26)...)), "26 elements"},
		{"EmptyActions", vMessage(slack.NewActionBlock("")), "without elements"},
		{"ElevenContextElements", vMessage(slack.NewContextBlock("", vContextElems(11)...)), "11 context elements"},
		{"UnknownBlock", vMessage(slack.NewImageBlock("https://x/y.png", "chart", "", nil)), `block type "image"`},
		{"DuplicateBlockID", vMessage(slack.NewSectionBlock(mrkdwn("a"), nil, nil, slack.SectionBlockOptionBlockID("b")),
			slack.NewSectionBlock(mrkdwn("a"), nil, nil, slack.SectionBlockOptionBlockID("b"))), `block_id "b" is used twice`},
		{"TooMuchTextInAll", vSections(5, strings.Repeat("a", maxSectionText)), "msg_blocks_too_long"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateMessage(tc.m)
			if err == nil {
				t.Fatalf("ValidateMessage accepted it, want an error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ValidateMessage: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func vButtons(n int) []slack.BlockElement {
	var out []slack.BlockElement
	for i := range n {
		out = append(out, vButton(fmt.Sprint("a", i), "v", "x"))
	}
	return out
}

func TestValidateTextLen(t *testing.T) {
	for _, tc := range []struct {
		s    string
		want int
	}{
		{"", 0}, {"abc", 3}, {"é", 1}, {"→", 1}, {"😀", 2}, {"\xff", 1},
	} {
		if got := textLen(tc.s); got != tc.want {
			t.Errorf("textLen(%q) = %d, want %d", tc.s, got, tc.want)
		}
	}
}
