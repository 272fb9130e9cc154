package sdk

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// DecodeTemplateInput parses the template input JSON (ABI.md) into in. It is a small
// hand-written decoder: encoding/json's reflection costs ~0.5 ms per render in Go-compiled
// WebAssembly, this ~10× less. Unknown fields are skipped; null reads as the zero value.
func DecodeTemplateInput(data []byte, in *TemplateInput) error {
	d := decoder{b: data}
	*in = TemplateInput{}
	err := d.object(func(key string) error {
		switch fold(key, "abi_version", "messages", "bos_token", "eos_token", "add_generation_prompt") {
		case "abi_version":
			n, err := d.integer()
			in.ABIVersion = n
			return err
		case "messages":
			if d.literal("null") {
				in.Messages = nil
				return nil
			}
			in.Messages = []Message{}
			return d.array(func() error {
				var m Message
				if err := d.message(&m); err != nil {
					return err
				}
				in.Messages = append(in.Messages, m)
				return nil
			})
		case "bos_token":
			return d.str(&in.BOSToken)
		case "eos_token":
			return d.str(&in.EOSToken)
		case "add_generation_prompt":
			return d.boolean(&in.AddGenerationPrompt)
		}
		return d.skip()
	})
	if err != nil {
		return err
	}
	d.ws()
	if d.i != len(d.b) {
		return d.fail("trailing data")
	}
	return nil
}

func (d *decoder) message(m *Message) error {
	return d.object(func(key string) error {
		switch fold(key, "role", "content", "tool_call_id", "name", "tool_calls") {
		case "role":
			return d.str(&m.Role)
		case "content":
			return d.str(&m.Content)
		case "tool_call_id":
			return d.str(&m.ToolCallID)
		case "name":
			return d.str(&m.Name)
		case "tool_calls":
			if d.literal("null") {
				m.ToolCalls = nil
				return nil
			}
			m.ToolCalls = []ToolCall{}
			return d.array(func() error {
				var c ToolCall
				err := d.object(func(key string) error {
					switch fold(key, "id", "type", "function") {
					case "id":
						return d.str(&c.ID)
					case "type":
						return d.str(&c.Type)
					case "function":
						return d.object(func(key string) error {
							switch fold(key, "name", "arguments") {
							case "name":
								return d.str(&c.Function.Name)
							case "arguments":
								return d.str(&c.Function.Arguments)
							}
							return d.skip()
						})
					}
					return d.skip()
				})
				m.ToolCalls = append(m.ToolCalls, c)
				return err
			})
		}
		return d.skip()
	})
}

// fold returns the name that key matches case-insensitively (as encoding/json matches field
// names), or "".
func fold(key string, names ...string) string {
	for _, n := range names {
		if key == n || strings.EqualFold(key, n) {
			return n
		}
	}
	return ""
}

// decoder is a cursor over one JSON document.
type decoder struct {
	b []byte
	i int
}

var errJSON = errors.New("sdk: invalid template input JSON")

func (d *decoder) fail(what string) error {
	return fmt.Errorf("%w: %s at offset %d", errJSON, what, d.i)
}

func (d *decoder) ws() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// literal consumes lit (after whitespace) if it is next.
func (d *decoder) literal(lit string) bool {
	d.ws()
	if len(d.b)-d.i >= len(lit) && string(d.b[d.i:d.i+len(lit)]) == lit {
		d.i += len(lit)
		return true
	}
	return false
}

// object calls field for each key of an object (or does nothing for null).
func (d *decoder) object(field func(key string) error) error {
	if d.literal("null") {
		return nil
	}
	if !d.literal("{") {
		return d.fail("want an object")
	}
	if d.literal("}") {
		return nil
	}
	for {
		var key string
		d.ws()
		if err := d.str(&key); err != nil {
			return err
		}
		if !d.literal(":") {
			return d.fail("want ':'")
		}
		if err := field(key); err != nil {
			return err
		}
		if d.literal(",") {
			continue
		}
		if d.literal("}") {
			return nil
		}
		return d.fail("want ',' or '}'")
	}
}

// array calls elem for each element of an array (or does nothing for null).
func (d *decoder) array(elem func() error) error {
	if d.literal("null") {
		return nil
	}
	if !d.literal("[") {
		return d.fail("want an array")
	}
	if d.literal("]") {
		return nil
	}
	for {
		if err := elem(); err != nil {
			return err
		}
		if d.literal(",") {
			continue
		}
		if d.literal("]") {
			return nil
		}
		return d.fail("want ',' or ']'")
	}
}

func (d *decoder) boolean(v *bool) error {
	switch {
	case d.literal("true"):
		*v = true
	case d.literal("false"):
		*v = false
	case d.literal("null"):
	default:
		return d.fail("want a boolean")
	}
	return nil
}

func (d *decoder) integer() (int, error) {
	if d.literal("null") {
		return 0, nil
	}
	start := d.i
	if err := d.number(); err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(string(d.b[start:d.i]))
	if err != nil {
		return 0, d.fail("want an integer")
	}
	return n, nil
}

// number consumes a JSON number.
func (d *decoder) number() error {
	d.ws()
	start := d.i
	if d.i < len(d.b) && d.b[d.i] == '-' {
		d.i++
	}
	digits := func() int {
		n := 0
		for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
			d.i++
			n++
		}
		return n
	}
	if d.i < len(d.b) && d.b[d.i] == '0' {
		d.i++
	} else if digits() == 0 {
		return d.fail("want a number")
	}
	if d.i < len(d.b) && d.b[d.i] == '.' {
		d.i++
		if digits() == 0 {
			return d.fail("want fraction digits")
		}
	}
	if d.i < len(d.b) && (d.b[d.i] == 'e' || d.b[d.i] == 'E') {
		d.i++
		if d.i < len(d.b) && (d.b[d.i] == '+' || d.b[d.i] == '-') {
			d.i++
		}
		if digits() == 0 {
			return d.fail("want exponent digits")
		}
	}
	if d.i == start {
		return d.fail("want a number")
	}
	return nil
}

// str reads a string into v (null leaves v unchanged).
func (d *decoder) str(v *string) error {
	if d.literal("null") { // leaves v as it is, like encoding/json
		return nil
	}
	if !d.literal(`"`) {
		return d.fail("want a string")
	}
	start := d.i
	for d.i < len(d.b) { // fast path: no escapes
		c := d.b[d.i]
		if c == '"' {
			if !utf8.Valid(d.b[start:d.i]) {
				break
			}
			*v = string(d.b[start:d.i])
			d.i++
			return nil
		}
		if c == '\\' || c < 0x20 || c >= utf8.RuneSelf {
			break
		}
		d.i++
	}
	out := append([]byte(nil), d.b[start:d.i]...)
	for d.i < len(d.b) {
		c := d.b[d.i]
		switch {
		case c == '"':
			d.i++
			*v = string(out)
			return nil
		case c < 0x20:
			return d.fail("control character in string")
		case c == '\\':
			if d.i+1 >= len(d.b) {
				return d.fail("truncated escape")
			}
			e := d.b[d.i+1]
			d.i += 2
			switch e {
			case '"', '\\', '/':
				out = append(out, e)
			case 'b':
				out = append(out, '\b')
			case 'f':
				out = append(out, '\f')
			case 'n':
				out = append(out, '\n')
			case 'r':
				out = append(out, '\r')
			case 't':
				out = append(out, '\t')
			case 'u':
				r, ok := d.hex4()
				if !ok {
					return d.fail("bad \\u escape")
				}
				if utf16.IsSurrogate(r) {
					r2 := rune(-1)
					if d.i+1 < len(d.b) && d.b[d.i] == '\\' && d.b[d.i+1] == 'u' {
						save := d.i
						d.i += 2
						var ok2 bool
						if r2, ok2 = d.hex4(); !ok2 {
							return d.fail("bad \\u escape")
						}
						if utf16.DecodeRune(r, r2) == utf8.RuneError {
							d.i = save
							r2 = -1
						}
					}
					if r2 < 0 {
						r = utf8.RuneError
					} else {
						r = utf16.DecodeRune(r, r2)
					}
				}
				out = utf8.AppendRune(out, r)
			default:
				return d.fail("bad escape")
			}
		case c < utf8.RuneSelf:
			out = append(out, c)
			d.i++
		default:
			r, size := utf8.DecodeRune(d.b[d.i:])
			out = utf8.AppendRune(out, r) // invalid bytes become U+FFFD, as in encoding/json
			d.i += size
		}
	}
	return d.fail("unterminated string")
}

func (d *decoder) hex4() (rune, bool) {
	if d.i+4 > len(d.b) {
		return 0, false
	}
	var r rune
	for _, c := range d.b[d.i : d.i+4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	d.i += 4
	return r, true
}

// skip consumes any JSON value.
func (d *decoder) skip() error {
	d.ws()
	if d.i >= len(d.b) {
		return d.fail("want a value")
	}
	switch c := d.b[d.i]; {
	case c == '{':
		return d.object(func(string) error { return d.skip() })
	case c == '[':
		return d.array(d.skip)
	case c == '"':
		var s string
		return d.str(&s)
	case d.literal("true"), d.literal("false"), d.literal("null"):
		return nil
	default:
		return d.number()
	}
}
