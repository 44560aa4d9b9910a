package execution

import (
	"fmt"
	"strings"
	"testing"
)

func TestRecentStaysBounded(t *testing.T) {
	t.Parallel()
	r := newRecent()
	for i := range recentMax + 500 {
		r.put(Execution{ID: fmt.Sprintf("exe_%d", i), Input: []byte(`{}`)})
	}
	if n := r.len(); n != recentMax {
		t.Fatalf("%d entries, want %d", n, recentMax)
	}
	big := Execution{ID: "exe_big", Input: []byte(`{"x":"` + strings.Repeat("a", recentMaxBytes) + `"}`)}
	r.put(big)
	if _, ok := r.get(big.ID); ok {
		t.Fatal("an execution with more JSON than an entry may hold was kept")
	}
}

func TestRecentEntriesAreCopies(t *testing.T) {
	t.Parallel()
	r := newRecent()
	in := []byte(`{"a":1}`)
	r.put(Execution{ID: "exe_1", Input: in, Error: &Error{Code: "c", Message: "m"}})
	in[2] = 'b' // the caller's value changes after the write
	got, _ := r.get("exe_1")
	got.Input[2] = 'c' // and so does what a later caller is handed
	got.Error.Code = "changed"
	again, ok := r.get("exe_1")
	if !ok || string(again.Input) != `{"a":1}` || again.Error.Code != "c" {
		t.Fatalf("entry %s %+v, want the values as written", again.Input, again.Error)
	}
}
