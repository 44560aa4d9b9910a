package webhook

import "errors"

// Errors callers branch on with errors.Is.
var (
	// ErrEndpointNotFound: no endpoint has the id.
	ErrEndpointNotFound = errors.New("webhook endpoint not found")
	// ErrEventNotFound: no outbox event has the id.
	ErrEventNotFound = errors.New("event not found")
	// ErrLeaseLost: the delivery was taken over (its lease expired, or it
	// was replayed) while an attempt was in flight; the attempt is not
	// recorded.
	ErrLeaseLost = errors.New("delivery lease lost")
	// ErrInvalid: an argument is malformed; the message says which.
	ErrInvalid = errors.New("invalid argument")
	// ErrForbiddenAddress: the endpoint's address is refused by the
	// address policy.
	ErrForbiddenAddress = errors.New("address not allowed")
	// ErrBadSignature: no signature on the request matches a secret.
	ErrBadSignature = errors.New("bad webhook signature")
	// ErrStaleTimestamp: the request's timestamp is outside the tolerance.
	ErrStaleTimestamp = errors.New("webhook timestamp outside tolerance")
	// ErrMissingHeaders: a webhook-id, webhook-timestamp or
	// webhook-signature header is missing or malformed.
	ErrMissingHeaders = errors.New("missing or malformed webhook headers")
	// ErrBodyTooLarge: the request body exceeds the receiver's limit.
	ErrBodyTooLarge = errors.New("webhook body too large")
	// ErrMalformedEvent: the body is not an event this receiver knows.
	ErrMalformedEvent = errors.New("malformed webhook event")
)
