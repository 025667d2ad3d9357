package bot

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// Slack's Block Kit limits, as the API enforces them: a message that breaks
// one is refused with invalid_blocks (or msg_too_long), and in an incident
// a refused timing report is a report nobody sees.
const (
	maxBlocks          = 50
	maxSectionText     = 3000
	maxSectionFields   = 10
	maxFieldText       = 2000
	maxContextElements = 10
	maxContextText     = 3000
	maxHeaderText      = 150
	maxActionElements  = 25
	maxButtonText      = 75
	maxButtonValue     = maxCardValue
	maxButtonURL       = 3000
	maxIDLen           = 255
	maxConfirmTitle    = 100
	maxConfirmText     = 300
	maxConfirmButton   = 30
	// maxFallbackText is the limit on a message's top-level text. Slack
	// documents 40,000 characters, but its API has been answering
	// msg_too_long above about 4,000 since 2024 (slackapi maintainers say
	// the documentation is behind), so the lower figure is the one that
	// keeps a post from failing.
	maxFallbackText = 4000
	// maxMessageChars bounds the text of all blocks together. It is not
	// documented: Slack answers msg_blocks_too_long at about 13,200
	// characters of block text in total, well below 50 full sections.
	maxMessageChars = 12000
)

// ValidateMessage checks m against Slack's limits the way Slack sees it: it
// marshals the blocks to the JSON that would be posted and checks that. It
// also checks what backflip promises about its own messages: every mrkdwn
// text (and the fallback text) is escaped, with <@U…> mentions as the only
// markup, so no outside input can post a broadcast or a link; and every
// button carries an action_id, unique in the message, since clicks are
// routed by it.
//
// Characters are counted in UTF-16 code units, which is at least the count
// of characters however Slack counts them, so a message that passes here is
// not refused for its length.
func ValidateMessage(m Message) error {
	if strings.TrimSpace(m.Text) == "" {
		return errors.New("fallback text is missing")
	}
	if n := textLen(m.Text); n > maxFallbackText {
		return fmt.Errorf("fallback text is %d characters, at most %d allowed", n, maxFallbackText)
	}
	if err := checkEscaped(m.Text); err != nil {
		return fmt.Errorf("fallback text: %w", err)
	}
	if m.Key != "" && !strings.Contains(m.Text, m.Key) {
		return fmt.Errorf("key %q is not in the fallback text", m.Key)
	}
	blocks, err := wireBlocks(m)
	if err != nil {
		return err
	}
	if len(blocks) > maxBlocks {
		return fmt.Errorf("%d blocks, at most %d allowed", len(blocks), maxBlocks)
	}
	v := validator{actionIDs: map[string]bool{}, blockIDs: map[string]bool{}}
	for i, b := range blocks {
		if err := v.block(b); err != nil {
			return fmt.Errorf("block %d (%s): %w", i, b.Type, err)
		}
	}
	if v.chars > maxMessageChars {
		return fmt.Errorf("blocks hold %d characters of text, at most %d allowed (msg_blocks_too_long)", v.chars, maxMessageChars)
	}
	return nil
}

// wireBlock is a block as it is posted, decoded generically so that the
// checks (and PlainText) see exactly what Slack would, whichever Go type
// built the block.
type wireBlock struct {
	Type      string        `json:"type"`
	BlockID   string        `json:"block_id"`
	Text      *wireText     `json:"text"`
	Fields    []wireText    `json:"fields"`
	Elements  []wireElement `json:"elements"`
	Accessory *wireElement  `json:"accessory"`
}

// wireText is a text object.
type wireText struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// wireElement is an element of a context or actions block, or a section's
// accessory. Text is kept raw: it is a string in a context's text element
// and a text object in a button.
type wireElement struct {
	Type     string          `json:"type"`
	Text     json.RawMessage `json:"text"`
	ActionID string          `json:"action_id"`
	Value    string          `json:"value"`
	URL      string          `json:"url"`
	Style    string          `json:"style"`
	Confirm  *wireConfirm    `json:"confirm"`
	ImageURL string          `json:"image_url"`
	AltText  string          `json:"alt_text"`
}

// wireConfirm is a confirmation dialog.
type wireConfirm struct {
	Title   *wireText `json:"title"`
	Text    *wireText `json:"text"`
	Confirm *wireText `json:"confirm"`
	Deny    *wireText `json:"deny"`
	Style   string    `json:"style"`
}

// wireBlocks marshals m's blocks and decodes them as wireBlocks.
func wireBlocks(m Message) ([]wireBlock, error) {
	if len(m.Blocks) == 0 {
		return nil, nil
	}
	raw, err := json.Marshal(m.Blocks)
	if err != nil {
		return nil, fmt.Errorf("marshal blocks: %w", err)
	}
	var blocks []wireBlock
	if err := json.Unmarshal(raw, &blocks); err != nil {
		return nil, fmt.Errorf("decode marshalled blocks: %w", err)
	}
	return blocks, nil
}

// textObject decodes an element's text as a text object (a button's).
func (e *wireElement) textObject() (*wireText, error) {
	if len(e.Text) == 0 || string(e.Text) == "null" {
		return nil, nil
	}
	var t wireText
	if err := json.Unmarshal(e.Text, &t); err != nil {
		return nil, fmt.Errorf("text is not a text object: %w", err)
	}
	return &t, nil
}

// contextText decodes a context element of type mrkdwn or plain_text,
// whose "text" is the string itself.
func (e *wireElement) contextText() (*wireText, error) {
	var s string
	if err := json.Unmarshal(e.Text, &s); err != nil {
		return nil, fmt.Errorf("text element without a text string: %w", err)
	}
	return &wireText{Type: e.Type, Text: s}, nil
}

// validator carries what must hold across one message's blocks.
type validator struct {
	actionIDs map[string]bool
	blockIDs  map[string]bool
	chars     int
}

func (v *validator) block(b wireBlock) error {
	if b.BlockID != "" {
		if len(b.BlockID) > maxIDLen {
			return fmt.Errorf("block_id is %d characters, at most %d allowed", len(b.BlockID), maxIDLen)
		}
		if v.blockIDs[b.BlockID] {
			return fmt.Errorf("block_id %q is used twice", b.BlockID)
		}
		v.blockIDs[b.BlockID] = true
	}
	switch b.Type {
	case "section":
		return v.section(b)
	case "header":
		if b.Text == nil {
			return errors.New("header without text")
		}
		return v.text("header text", *b.Text, maxHeaderText, "plain_text")
	case "context":
		return v.context(b)
	case "actions":
		return v.actions(b)
	case "divider":
		return nil
	}
	// Each kind of block has its own limits; one this validator does not
	// know cannot be vouched for, so it is refused until its checks are
	// added here.
	return fmt.Errorf("block type %q is not one backflip renders", b.Type)
}

func (v *validator) section(b wireBlock) error {
	if b.Text == nil && len(b.Fields) == 0 {
		return errors.New("section without text or fields")
	}
	if b.Text != nil {
		if err := v.text("section text", *b.Text, maxSectionText, "plain_text", "mrkdwn"); err != nil {
			return err
		}
	}
	if len(b.Fields) > maxSectionFields {
		return fmt.Errorf("%d fields, at most %d allowed", len(b.Fields), maxSectionFields)
	}
	for i, f := range b.Fields {
		if err := v.text(fmt.Sprintf("field %d", i), f, maxFieldText, "plain_text", "mrkdwn"); err != nil {
			return err
		}
	}
	if b.Accessory != nil {
		if b.Accessory.Type != "button" {
			return fmt.Errorf("accessory of type %q is not one backflip renders", b.Accessory.Type)
		}
		return v.button(*b.Accessory)
	}
	return nil
}

func (v *validator) context(b wireBlock) error {
	if len(b.Elements) == 0 {
		return errors.New("context without elements")
	}
	if len(b.Elements) > maxContextElements {
		return fmt.Errorf("%d context elements, at most %d allowed", len(b.Elements), maxContextElements)
	}
	for i, e := range b.Elements {
		switch e.Type {
		case "mrkdwn", "plain_text":
			t, err := e.contextText()
			if err != nil {
				return fmt.Errorf("element %d: %w", i, err)
			}
			if err := v.text(fmt.Sprintf("element %d", i), *t, maxContextText, "plain_text", "mrkdwn"); err != nil {
				return err
			}
		case "image":
			if e.ImageURL == "" || e.AltText == "" {
				return fmt.Errorf("image element %d needs image_url and alt_text", i)
			}
		default:
			return fmt.Errorf("context element %d of type %q is not one backflip renders", i, e.Type)
		}
	}
	return nil
}

func (v *validator) actions(b wireBlock) error {
	if len(b.Elements) == 0 {
		return errors.New("actions block without elements")
	}
	if len(b.Elements) > maxActionElements {
		return fmt.Errorf("%d elements, at most %d allowed", len(b.Elements), maxActionElements)
	}
	for i, e := range b.Elements {
		if e.Type != "button" {
			return fmt.Errorf("element %d of type %q is not one backflip renders", i, e.Type)
		}
		if err := v.button(e); err != nil {
			return fmt.Errorf("button %d: %w", i, err)
		}
	}
	return nil
}

func (v *validator) button(e wireElement) error {
	t, err := e.textObject()
	if err != nil {
		return err
	}
	if t == nil {
		return errors.New("button without text")
	}
	if err := v.text("button text", *t, maxButtonText, "plain_text"); err != nil {
		return err
	}
	switch {
	case e.ActionID == "":
		return errors.New("button without action_id")
	case len(e.ActionID) > maxIDLen:
		return fmt.Errorf("action_id is %d characters, at most %d allowed", len(e.ActionID), maxIDLen)
	case v.actionIDs[e.ActionID]:
		return fmt.Errorf("action_id %q is used twice in the message", e.ActionID)
	}
	v.actionIDs[e.ActionID] = true
	if n := textLen(e.Value); n > maxButtonValue {
		return fmt.Errorf("value is %d characters, at most %d allowed", n, maxButtonValue)
	}
	v.chars += textLen(e.Value)
	if n := textLen(e.URL); n > maxButtonURL {
		return fmt.Errorf("url is %d characters, at most %d allowed", n, maxButtonURL)
	}
	if err := checkStyle(e.Style); err != nil {
		return err
	}
	if e.Confirm != nil {
		return v.confirm(*e.Confirm)
	}
	return nil
}

// confirm checks a confirmation dialog: Slack requires all four texts.
func (v *validator) confirm(c wireConfirm) error {
	parts := []struct {
		name  string
		text  *wireText
		max   int
		types []string
	}{
		{"confirm title", c.Title, maxConfirmTitle, []string{"plain_text"}},
		{"confirm text", c.Text, maxConfirmText, []string{"plain_text", "mrkdwn"}},
		{"confirm button", c.Confirm, maxConfirmButton, []string{"plain_text"}},
		{"deny button", c.Deny, maxConfirmButton, []string{"plain_text"}},
	}
	for _, p := range parts {
		if p.text == nil {
			return fmt.Errorf("%s is missing", p.name)
		}
		if err := v.text(p.name, *p.text, p.max, p.types...); err != nil {
			return err
		}
	}
	return checkStyle(c.Style)
}

// text checks one text object: its type, that it is not empty (Slack
// refuses empty text), its length, and for mrkdwn that it is escaped.
func (v *validator) text(name string, t wireText, max int, types ...string) error {
	ok := false
	for _, typ := range types {
		ok = ok || t.Type == typ
	}
	if !ok {
		return fmt.Errorf("%s has type %q, want %s", name, t.Type, strings.Join(types, " or "))
	}
	if strings.TrimSpace(t.Text) == "" {
		return fmt.Errorf("%s is empty", name)
	}
	n := textLen(t.Text)
	if n > max {
		return fmt.Errorf("%s is %d characters, at most %d allowed", name, n, max)
	}
	if !utf8.ValidString(t.Text) {
		return fmt.Errorf("%s is not valid UTF-8", name)
	}
	if t.Type == "mrkdwn" {
		if err := checkEscaped(t.Text); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	v.chars += n
	return nil
}

func checkStyle(s string) error {
	switch s {
	case "", "primary", "danger":
		return nil
	}
	return fmt.Errorf("style %q is not primary or danger", s)
}

// checkEscaped reports whether s is mrkdwn as backflip writes it: every &
// starts one of the three entities and every < opens a user mention. A
// stray < would let text become a link or a broadcast (<!channel>); a
// stray & or > shows that some text skipped escaping.
func checkEscaped(s string) error {
	for i := 0; i < len(s); {
		switch s[i] {
		case '&':
			n := entityLen(s[i:])
			if n == 0 {
				return fmt.Errorf("unescaped & at byte %d", i)
			}
			i += n
		case '<':
			n := mentionLen(s[i:])
			if n == 0 {
				return fmt.Errorf("markup %q at byte %d: only <@user> mentions are allowed", clipBytes(s[i:], 20), i)
			}
			i += n
		case '>':
			return fmt.Errorf("unescaped > at byte %d", i)
		default:
			i++
		}
	}
	return nil
}

// entityLen is the length of the entity s starts with (&amp; &lt; &gt;),
// 0 when it starts with none.
func entityLen(s string) int {
	for _, e := range [...]string{"&amp;", "&lt;", "&gt;"} {
		if strings.HasPrefix(s, e) {
			return len(e)
		}
	}
	return 0
}

// mentionLen is the length of the user mention s starts with, written
// exactly as commands.Actor.Mention writes one ("<@U0123ABCD>"), 0 when it
// starts with none.
func mentionLen(s string) int {
	if len(s) < 4 || s[0] != '<' || s[1] != '@' || (s[2] != 'U' && s[2] != 'W') {
		return 0
	}
	for i := 3; i < len(s) && i <= 2+32; i++ {
		c := s[i]
		switch {
		case c == '>' && i > 3:
			return i + 1
		case c >= 'A' && c <= 'Z' || c >= '0' && c <= '9':
		default:
			return 0
		}
	}
	return 0
}

// textLen counts s in UTF-16 code units: a character outside the Basic
// Multilingual Plane (most emoji) counts twice. It is never less than the
// count of characters, so limits checked with it hold however Slack counts.
func textLen(s string) int {
	n := 0
	for _, r := range s {
		n += utf16.RuneLen(r)
	}
	return n
}

// clipBytes cuts s to at most n bytes on a character boundary, for quoting
// in error messages.
func clipBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
