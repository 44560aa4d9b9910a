package execution

import (
	"errors"
	"fmt"
	"time"

	"github.com/execkit/execkit/fsm"
)

// Errors that callers branch on with errors.Is. Returned errors wrap them
// with the step that failed.
var (
	// ErrNotFound: no execution has the id.
	ErrNotFound = errors.New("execution not found")
	// ErrInvalidTransition: the requested change is not legal from the
	// execution's state. It is the same error as fsm.ErrInvalidTransition.
	ErrInvalidTransition = fsm.ErrInvalidTransition
	// ErrTerminal: the execution is already terminal; the request was
	// recorded as ignored and changed nothing.
	ErrTerminal = errors.New("execution is terminal")
	// ErrConflict: the execution changed between read and write; the write
	// was not applied.
	ErrConflict = errors.New("execution changed concurrently")
	// ErrUnknownAction: no provider is registered for the action.
	ErrUnknownAction = errors.New("unknown action")
	// ErrIdempotencyConflict: the idempotency key was used before with a
	// different request.
	ErrIdempotencyConflict = errors.New("idempotency key reused with a different request")
	// ErrInvalid: the request is malformed; a [*ValidationError] says how.
	ErrInvalid = errors.New("invalid request")
	// ErrClosed: the store is closed, or the engine was stopped and
	// cannot start again. A stopped engine still creates and reads
	// executions; only its loop is gone.
	ErrClosed = errors.New("closed")
	// ErrAlreadyStarted: Start was called on a running engine.
	ErrAlreadyStarted = errors.New("engine already started")
)

// ValidationError says which field of a request is wrong and why. It
// unwraps to [ErrInvalid].
type ValidationError struct {
	Field   string
	Problem string
}

// Error says what went wrong.
func (e *ValidationError) Error() string {
	return fmt.Sprintf("invalid %s: %s", e.Field, e.Problem)
}

// Unwrap returns [ErrInvalid].
func (e *ValidationError) Unwrap() error { return ErrInvalid }

// PermanentError is a provider failure that retrying cannot fix: the
// execution fails with its code and message. Any other error a provider
// returns is transient and retried with backoff.
type PermanentError struct {
	Code    string
	Message string
}

// Permanent returns a [*PermanentError]. An empty code becomes
// [CodeProviderError].
func Permanent(code, message string) error {
	if code == "" {
		code = CodeProviderError
	}
	return &PermanentError{Code: code, Message: message}
}

// Error says what went wrong.
func (e *PermanentError) Error() string {
	if e == nil {
		return "permanent provider error (nil)"
	}
	return fmt.Sprintf("permanent provider error %s: %s", e.Code, e.Message)
}

// RetryAfterError is a transient provider failure that names when to try
// again, such as an answer of 429 with Retry-After. Create one with
// [RetryAfter].
type RetryAfterError struct {
	Err   error
	After time.Duration
}

// RetryAfter wraps a transient error with the delay the provider asked
// for. The engine waits that long, bounded by [Config.MaxBackoff], instead
// of its own backoff.
func RetryAfter(err error, after time.Duration) error {
	return &RetryAfterError{Err: err, After: after}
}

// Error says what went wrong.
func (e *RetryAfterError) Error() string {
	return fmt.Sprintf("%v (retry after %s)", e.Err, e.After)
}

// Unwrap returns the wrapped error.
func (e *RetryAfterError) Unwrap() error { return e.Err }
