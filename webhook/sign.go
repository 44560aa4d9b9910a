// Package webhook delivers execution events to subscribers as signed HTTP
// POSTs, and receives them on the other side.
//
// The wire format is Standard Webhooks: the headers webhook-id (the event
// id), webhook-timestamp (Unix seconds of the attempt) and
// webhook-signature ("v1," and the base64 HMAC-SHA256 of
// "id.timestamp.body", several separated by spaces while a secret is
// rotated). The body is the event exactly as the outbox stored it.
//
// A [Dispatcher] fans every outbox event out to the matching endpoints and
// delivers it with retries; a [Receiver] verifies, deduplicates and
// reconciles on the consuming side.
package webhook

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Header names of the wire format.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// SecretPrefix starts every secret's text form.
const SecretPrefix = "whsec_"

// Secret bounds: a secret is 24 to 64 random bytes.
const (
	MinSecretBytes = 24
	MaxSecretBytes = 64
)

// Secret is an HMAC key. Its String form hides the key; [Secret.Reveal]
// gives the whsec_ text to hand to the subscriber once.
type Secret struct {
	key []byte
}

// NewSecret returns a secret of 32 random bytes.
func NewSecret() Secret {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		panic(fmt.Sprintf("webhook: read random bytes: %v", err)) // never fails on supported platforms
	}
	return Secret{key: key}
}

// ParseSecret reads a secret: "whsec_" and the base64 of 24 to 64 bytes.
// The prefix may be left out. A secret that does not decode to that is an
// error, never a short key.
func ParseSecret(s string) (Secret, error) {
	raw := strings.TrimPrefix(s, SecretPrefix)
	key, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		return Secret{}, fmt.Errorf("%w: secret is not whsec_ followed by standard base64", ErrInvalid)
	}
	if len(key) < MinSecretBytes || len(key) > MaxSecretBytes {
		return Secret{}, fmt.Errorf("%w: secret decodes to %d bytes, want %d to %d",
			ErrInvalid, len(key), MinSecretBytes, MaxSecretBytes)
	}
	return Secret{key: key}, nil
}

// Reveal returns the secret's text form, "whsec_" and base64.
func (s Secret) Reveal() string { return SecretPrefix + base64.StdEncoding.EncodeToString(s.key) }

// String hides the key, so that a secret never reaches a log.
func (s Secret) String() string { return "whsec_…" }

// GoString hides the key from %#v too.
func (s Secret) GoString() string { return "webhook.Secret{…}" }

// IsZero reports whether s holds no key.
func (s Secret) IsZero() bool { return len(s.key) == 0 }

// sign returns the base64 HMAC-SHA256 of "id.timestamp.body".
func (s Secret) sign(id string, ts int64, body []byte) string {
	mac := hmac.New(sha256.New, s.key)
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write(strconv.AppendInt(nil, ts, 10))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// Sign returns the webhook-signature header value for the message: one
// "v1,<signature>" per secret, separated by spaces.
func Sign(id string, at time.Time, body []byte, secrets ...Secret) string {
	parts := make([]string, 0, len(secrets))
	for _, s := range secrets {
		parts = append(parts, "v1,"+s.sign(id, at.Unix(), body))
	}
	return strings.Join(parts, " ")
}

// SetHeaders sets the three webhook headers of a request carrying body.
func SetHeaders(h http.Header, id string, at time.Time, body []byte, secrets ...Secret) {
	h.Set(HeaderID, id)
	h.Set(HeaderTimestamp, strconv.FormatInt(at.Unix(), 10))
	h.Set(HeaderSignature, Sign(id, at, body, secrets...))
}

// DefaultTolerance is how far a timestamp may be from the receiver's
// clock, either way.
const DefaultTolerance = 5 * time.Minute

// Verify checks the webhook headers of a request against its raw body: a
// timestamp within tolerance of now (zero means [DefaultTolerance]), and a
// v1 signature made with one of the secrets. It returns the event id.
// Errors wrap [ErrMissingHeaders], [ErrStaleTimestamp] or
// [ErrBadSignature].
func Verify(h http.Header, body []byte, now time.Time, tolerance time.Duration, secrets ...Secret) (string, error) {
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	id, tsText, sigs := h.Get(HeaderID), h.Get(HeaderTimestamp), h.Get(HeaderSignature)
	if id == "" || tsText == "" || sigs == "" {
		return "", fmt.Errorf("%w: need %s, %s and %s", ErrMissingHeaders, HeaderID, HeaderTimestamp, HeaderSignature)
	}
	if len(id) > 255 || len(sigs) > 8192 {
		return "", fmt.Errorf("%w: header too long", ErrMissingHeaders)
	}
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return "", fmt.Errorf("%w: %s is not Unix seconds", ErrMissingHeaders, HeaderTimestamp)
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
		return "", fmt.Errorf("%w: timestamp is %s away from now, more than %s", ErrStaleTimestamp, d.Round(time.Second).Abs(), tolerance)
	}
	for _, s := range secrets {
		want := []byte(s.sign(id, ts, body))
		for _, sig := range strings.Fields(sigs) {
			version, value, ok := strings.Cut(sig, ",")
			if ok && version == "v1" && hmac.Equal([]byte(value), want) {
				return id, nil
			}
		}
	}
	return "", ErrBadSignature
}

// cryptoReader reads from crypto/rand.
type cryptoReader struct{}

func (cryptoReader) Read(p []byte) (int, error) { return rand.Read(p) }
