package execution

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// watchers wakes waiters when an execution changes. Changes made through
// this engine wake them at once; changes made by another process sharing
// the file are seen on a slow re-read.
type watchers struct {
	mu   sync.Mutex
	byID map[string]map[chan struct{}]struct{}
	n    int
}

func (w *watchers) add(id string) chan struct{} {
	ch := make(chan struct{})
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.byID == nil {
		w.byID = make(map[string]map[chan struct{}]struct{})
	}
	if w.byID[id] == nil {
		w.byID[id] = make(map[chan struct{}]struct{})
	}
	w.byID[id][ch] = struct{}{}
	w.n++
	return ch
}

func (w *watchers) remove(id string, ch chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.byID[id][ch]; !ok {
		return
	}
	delete(w.byID[id], ch)
	if len(w.byID[id]) == 0 {
		delete(w.byID, id)
	}
	w.n--
}

// notify wakes and forgets every waiter of id.
func (w *watchers) notify(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for ch := range w.byID[id] {
		close(ch)
		w.n--
	}
	delete(w.byID, id)
}

func (w *watchers) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n
}

// crossProcessRecheck is how often a waiter re-reads the execution, to see
// changes written by another process on the same file.
const crossProcessRecheck = 2 * time.Second

// WaitChange waits until the execution's version differs from version, or
// ctx ends, and returns the execution as it then is. It returns at once if
// the version already differs. Changes made through this engine wake it at
// once; changes by another process sharing the file are noticed within
// about two seconds. When ctx ends, WaitChange returns the current
// execution and a nil error: the caller asked for a bounded wait, and the
// record is the answer either way.
func (g *Engine) WaitChange(ctx context.Context, id string, version int64) (Execution, error) {
	if err := ValidateID(id); err != nil {
		return Execution{}, fmt.Errorf("wait for change: %w", err)
	}
	for {
		ch := g.watch.add(id)
		e, err := g.store.Get(context.WithoutCancel(ctx), id)
		if err != nil {
			g.watch.remove(id, ch)
			return Execution{}, fmt.Errorf("wait for change of %s: %w", id, err)
		}
		if e.Version != version || ctx.Err() != nil {
			g.watch.remove(id, ch)
			return e, nil
		}

		t := time.NewTimer(crossProcessRecheck)
		select {
		case <-ch:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		g.watch.remove(id, ch)
	}
}

// Waiting reports how many [Engine.WaitChange] calls are waiting.
func (g *Engine) Waiting() int { return g.watch.count() }
