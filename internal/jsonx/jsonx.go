// Package jsonx holds the JSON checks that the standard library leaves to
// its callers.
package jsonx

import (
	"bytes"
	"encoding/json"
)

// DuplicateKey returns a key that appears twice in one object of doc, a
// well-formed JSON document. Parsers disagree on which copy wins, so such
// a document means different things to different readers.
func DuplicateKey(doc []byte) (string, bool) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	type frame struct {
		object bool
		keys   map[string]bool
		expect bool // the next token in this object is a key
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return "", false
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.object && top.expect {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:len(stack)-1]
				continue
			}
			key := tok.(string)
			if top.keys[key] {
				return key, true
			}
			top.keys[key] = true
			top.expect = false
			continue
		}
		if top != nil && top.object {
			top.expect = true // this token is a value; a key comes next
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{object: true, keys: map[string]bool{}, expect: true})
		case json.Delim('['):
			stack = append(stack, &frame{})
		case json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
	}
}
