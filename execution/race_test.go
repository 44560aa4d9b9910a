//go:build race

package execution_test

// raceEnabled is true when tests run under the race detector, which makes
// SQLite about ten times slower: heavy tests shrink their size.
const raceEnabled = true
