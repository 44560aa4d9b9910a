package execution

import (
	"bytes"
	"sync"
	"time"
)

// recent holds executions as this engine last wrote or claimed them, so
// that a pushed update can be planned without reading the record first.
// An entry is exactly the stored row at its revision; every write planned
// from one is conditional on that revision, so an entry made stale by
// another engine or process costs one conflict and a fresh read, never a
// wrong write. Only a successful write is decided from an entry: any
// other outcome is decided again on the stored record.
type recent struct {
	mu sync.Mutex
	m  map[string]Execution
}

const (
	// recentMax bounds the entries; a full cache forgets one at random.
	recentMax = 4096
	// recentMaxBytes bounds the JSON and text one entry may hold, so that
	// the cache stays under about 20 MB whatever the executions hold (a
	// few MB for typical ones).
	recentMaxBytes = 4 << 10
)

func newRecent() *recent { return &recent{m: make(map[string]Execution)} }

// get returns a copy of the entry for id, if any.
func (r *recent) get(id string) (Execution, bool) {
	r.mu.Lock()
	e, ok := r.m[id]
	r.mu.Unlock()
	return cloneJSON(e), ok
}

// cloneJSON returns e with its own copies of the JSON and the error.
func cloneJSON(e Execution) Execution {
	e.Input, e.Output, e.Progress = bytes.Clone(e.Input), bytes.Clone(e.Output), bytes.Clone(e.Progress)
	if e.Error != nil {
		errCopy := *e.Error
		e.Error = &errCopy
	}
	return e
}

// put records e as stored. Its JSON is copied, so that what callers do
// with the values they are handed cannot reach the entry.
func (r *recent) put(e Execution) {
	size := len(e.Input) + len(e.Output) + len(e.Progress) + len(e.ExternalRef) + len(e.IdempotencyKey)
	if e.Error != nil {
		size += len(e.Error.Code) + len(e.Error.Message)
	}
	if size > recentMaxBytes {
		r.drop(e.ID)
		return
	}
	e = cloneJSON(e)
	// As stored: to the millisecond.
	for _, t := range []*time.Time{&e.SubmittedAt, &e.CreatedAt, &e.UpdatedAt, &e.CompletedAt, &e.NextCheckAt, &e.Deadline} {
		*t = t.Truncate(time.Millisecond)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.m[e.ID]; !ok && len(r.m) >= recentMax {
		for id := range r.m {
			delete(r.m, id)
			break
		}
	}
	r.m[e.ID] = e
}

// drop forgets id.
func (r *recent) drop(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.m, id)
}

// len returns the number of entries.
func (r *recent) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m)
}
