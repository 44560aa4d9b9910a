package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/execkit/execkit/execution"
)

// Problem types: the stable "type" of every error response. Clients
// branch on them, or on the execution sentinels [Problem] unwraps to.
const (
	TypeValidation          = "urn:execkit:problem:validation"
	TypeNotFound            = "urn:execkit:problem:not-found"
	TypeConflict            = "urn:execkit:problem:conflict"
	TypeIdempotencyConflict = "urn:execkit:problem:idempotency-conflict"
	TypeTooLarge            = "urn:execkit:problem:too-large"
	TypeUnauthorized        = "urn:execkit:problem:unauthorized"
	TypeMethodNotAllowed    = "urn:execkit:problem:method-not-allowed"
	TypeInternal            = "urn:execkit:problem:internal"
)

// Problem is an RFC 9457 problem details body. The handler answers every
// error with one, as application/problem+json; the client returns it as
// an error.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	// Field names the request field that was wrong, for validation
	// problems.
	Field string `json:"field,omitempty"`
	// Execution is the execution as it stands, for a conflict such as a
	// cancel that lost the race to completion.
	Execution *Execution `json:"execution,omitempty"`
}

// Error says what went wrong.
func (p *Problem) Error() string {
	if p.Detail == "" {
		return fmt.Sprintf("%d %s", p.Status, p.Title)
	}
	return fmt.Sprintf("%d %s: %s", p.Status, p.Title, p.Detail)
}

// Unwrap maps the problem type to the matching execution sentinel, so that
// errors.Is(err, execution.ErrNotFound) works on the client side too.
func (p *Problem) Unwrap() error {
	switch p.Type {
	case TypeValidation:
		return execution.ErrInvalid
	case TypeNotFound:
		return execution.ErrNotFound
	case TypeConflict:
		return execution.ErrConflict
	case TypeIdempotencyConflict:
		return execution.ErrIdempotencyConflict
	}
	return nil
}

var titles = map[string]string{
	TypeValidation:          "Invalid request",
	TypeNotFound:            "Execution not found",
	TypeConflict:            "Conflict with the execution's state",
	TypeIdempotencyConflict: "Idempotency key reused with a different request",
	TypeTooLarge:            "Request body too large",
	TypeUnauthorized:        "Unauthorized",
	TypeMethodNotAllowed:    "Method not allowed",
	TypeInternal:            "Internal error",
}

func newProblem(typ string, status int, detail string) *Problem {
	return &Problem{Type: typ, Title: titles[typ], Status: status, Detail: detail}
}

// problemFor turns an engine error into the problem to answer. The
// engine's messages name the step and what was wrong, never stored data;
// errors of unknown kinds are internal and their text is not shown.
func problemFor(err error) *Problem {
	var ve *execution.ValidationError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &ve):
		p := newProblem(TypeValidation, http.StatusBadRequest, ve.Error())
		p.Field = ve.Field
		return p
	case errors.As(err, &mbe):
		return newProblem(TypeTooLarge, http.StatusRequestEntityTooLarge,
			fmt.Sprintf("the body exceeds %d bytes", mbe.Limit))
	case errors.Is(err, execution.ErrUnknownAction):
		p := newProblem(TypeValidation, http.StatusBadRequest, err.Error())
		p.Field = "action"
		return p
	case errors.Is(err, execution.ErrNotFound):
		return newProblem(TypeNotFound, http.StatusNotFound, "")
	case errors.Is(err, execution.ErrIdempotencyConflict):
		return newProblem(TypeIdempotencyConflict, http.StatusConflict,
			"the Idempotency-Key was used before with a different request")
	case errors.Is(err, execution.ErrTerminal), errors.Is(err, execution.ErrInvalidTransition),
		errors.Is(err, execution.ErrConflict):
		return newProblem(TypeConflict, http.StatusConflict, err.Error())
	}
	return newProblem(TypeInternal, http.StatusInternalServerError, "")
}

func writeProblem(w http.ResponseWriter, p *Problem) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}
