package routing

import (
	"strconv"
)

// decodeFast decodes the common shape of a route config — the compact JSON
// this package writes — without reflection: a flat object of known keys,
// each at most once, strings without escapes or non-ASCII bytes, an integer
// epoch. It is the reader's hot path: every router decodes every change,
// and encoding/json's reflection costs several times the watch delivery
// itself.
//
// It accepts a strict subset of what the strict encoding/json decoder
// accepts and decodes it identically (FuzzDecodeFastAgrees checks this);
// for anything else it reports ok=false and the caller falls back to
// encoding/json, which also produces the error message.
func decodeFast(data []byte) (c RouteConfig, ok bool) {
	// One string for the whole value; fields are substrings of it, so a
	// decode costs one allocation for all of them.
	p := fastParser{b: data, s: string(data)}
	p.ws()
	if !p.eat('{') {
		return c, false
	}
	var seen uint16
	p.ws()
	if p.eat('}') {
		return c, p.end()
	}
	for {
		p.ws()
		key, ok := p.str()
		if !ok {
			return c, false
		}
		p.ws()
		if !p.eat(':') {
			return c, false
		}
		p.ws()
		bit, ok := fieldBit(key)
		if !ok || seen&bit != 0 {
			return c, false // unknown or repeated key: let encoding/json decide
		}
		seen |= bit
		if bit == bitEpoch {
			n, ok := p.int()
			if !ok {
				return c, false
			}
			c.Epoch = n
		} else {
			start := p.i
			s, ok := p.str()
			if !ok {
				return c, false
			}
			switch bit {
			case bitRoute:
				c.Route = s
			case bitActive:
				c.Active = s
			case bitPrevious:
				c.Previous = s
			case bitKind:
				c.Kind = Kind(s)
			case bitFrom:
				c.From = s
			case bitOp:
				c.Op = s
			case bitReason:
				c.Reason = s
			case bitActor:
				c.Actor = s
			case bitAt:
				if err := c.At.UnmarshalJSON(data[start:p.i]); err != nil {
					return c, false
				}
			}
		}
		p.ws()
		if p.eat(',') {
			continue
		}
		if p.eat('}') {
			return c, p.end()
		}
		return c, false
	}
}

const (
	bitRoute uint16 = 1 << iota
	bitActive
	bitPrevious
	bitKind
	bitFrom
	bitEpoch
	bitOp
	bitReason
	bitActor
	bitAt
)

func fieldBit(key string) (uint16, bool) {
	switch key {
	case "route":
		return bitRoute, true
	case "active":
		return bitActive, true
	case "previous":
		return bitPrevious, true
	case "kind":
		return bitKind, true
	case "from":
		return bitFrom, true
	case "epoch":
		return bitEpoch, true
	case "op":
		return bitOp, true
	case "reason":
		return bitReason, true
	case "actor":
		return bitActor, true
	case "at":
		return bitAt, true
	}
	return 0, false
}

type fastParser struct {
	b []byte
	s string // the same bytes as b
	i int
}

func (p *fastParser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *fastParser) eat(c byte) bool {
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// end reports whether only whitespace is left.
func (p *fastParser) end() bool {
	p.ws()
	return p.i == len(p.b)
}

// str reads a string of printable ASCII without escapes.
func (p *fastParser) str() (string, bool) {
	if !p.eat('"') {
		return "", false
	}
	start := p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			s := p.s[start:p.i]
			p.i++
			return s, true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return "", false
		}
		p.i++
	}
	return "", false
}

// int reads a JSON integer that fits an int64 (no fraction, no exponent).
func (p *fastParser) int() (int64, bool) {
	start := p.i
	if p.i < len(p.b) && p.b[p.i] == '-' {
		p.i++
	}
	digits := p.i
	for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
		p.i++
	}
	if p.i == digits || (p.b[digits] == '0' && p.i-digits > 1) {
		return 0, false // no digits, or a leading zero JSON forbids
	}
	if p.i < len(p.b) && (p.b[p.i] == '.' || p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		return 0, false
	}
	n, err := strconv.ParseInt(string(p.b[start:p.i]), 10, 64)
	return n, err == nil
}
