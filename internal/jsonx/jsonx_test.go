package jsonx

import "testing"

func TestDuplicateKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		doc  string
		key  string
		dups bool
	}{
		{`{}`, "", false},
		{`{"a":1,"b":{"a":2},"c":[{"a":3},{"a":4}]}`, "", false},
		{`{"a":1,"a":2}`, "a", true},
		{`{"x":{"y":[1,{"k":1,"k":2}]}}`, "k", true},
		{`{"a":[{"b":1}],"c":{"d":{}},"a":0}`, "a", true},
		{`[{"a":1},{"a":1}]`, "", false},
	}
	for _, tt := range tests {
		key, dup := DuplicateKey([]byte(tt.doc))
		if key != tt.key || dup != tt.dups {
			t.Errorf("DuplicateKey(%s) = %q, %v; want %q, %v", tt.doc, key, dup, tt.key, tt.dups)
		}
	}
}
