package webhook_test

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/execkit/execkit/webhook"
)

// The test vector published with the Standard Webhooks specification.
const (
	vectorSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	vectorID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	vectorTimestamp = 1614265330
	vectorPayload   = `{"test": 2432232314}`
	vectorSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func mustSecret(t *testing.T, s string) webhook.Secret {
	t.Helper()
	sec, err := webhook.ParseSecret(s)
	if err != nil {
		t.Fatal(err)
	}
	return sec
}

func TestSignMatchesThePublishedVector(t *testing.T) {
	t.Parallel()
	got := webhook.Sign(vectorID, time.Unix(vectorTimestamp, 0), []byte(vectorPayload), mustSecret(t, vectorSecret))
	if got != vectorSignature {
		t.Fatalf("Sign = %s, want %s", got, vectorSignature)
	}
	h := http.Header{}
	h.Set(webhook.HeaderID, vectorID)
	h.Set(webhook.HeaderTimestamp, "1614265330")
	h.Set(webhook.HeaderSignature, vectorSignature)
	id, err := webhook.Verify(h, []byte(vectorPayload), time.Unix(vectorTimestamp+10, 0), time.Minute, mustSecret(t, vectorSecret))
	if err != nil || id != vectorID {
		t.Fatalf("Verify = %q, %v", id, err)
	}
}

func TestSignaturesCrossVerifyWithTheReferenceLibrary(t *testing.T) {
	t.Parallel()
	secret := webhook.NewSecret()
	ref, err := standardwebhooks.NewWebhook(secret.Reveal())
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"id":"evt_1","event":"execution.completed","version":4}`)
	now := time.Now()

	// Ours verified by theirs.
	h := http.Header{}
	webhook.SetHeaders(h, "evt_1", now, body, secret)
	if err := ref.Verify(body, h); err != nil {
		t.Fatalf("reference rejects our signature: %v", err)
	}
	// Theirs verified by ours.
	sig, err := ref.Sign("evt_2", now, body)
	if err != nil {
		t.Fatal(err)
	}
	h = http.Header{}
	h.Set(webhook.HeaderID, "evt_2")
	h.Set(webhook.HeaderTimestamp, strconv.FormatInt(now.Unix(), 10))
	h.Set(webhook.HeaderSignature, sig)
	if _, err := webhook.Verify(h, body, now, time.Minute, secret); err != nil {
		t.Fatalf("we reject the reference's signature: %v", err)
	}
	// A body changed by one byte fails both.
	body[2] = 'X'
	if _, err := webhook.Verify(h, body, now, time.Minute, secret); !errors.Is(err, webhook.ErrBadSignature) {
		t.Fatalf("tampered body: %v", err)
	}
}

func TestVerifyRefusals(t *testing.T) {
	t.Parallel()
	secret, other := webhook.NewSecret(), webhook.NewSecret()
	body := []byte(`{}`)
	now := time.Unix(1_800_000_000, 0)
	signed := func(at time.Time, with ...webhook.Secret) http.Header {
		h := http.Header{}
		webhook.SetHeaders(h, "evt_1", at, body, with...)
		return h
	}
	tests := []struct {
		name string
		h    http.Header
		want error
	}{
		{"no headers", http.Header{}, webhook.ErrMissingHeaders},
		{"a timestamp that is not a number", func() http.Header {
			h := signed(now, secret)
			h.Set(webhook.HeaderTimestamp, "yesterday")
			return h
		}(), webhook.ErrMissingHeaders},
		{"six minutes old", signed(now.Add(-6*time.Minute), secret), webhook.ErrStaleTimestamp},
		{"six minutes ahead", signed(now.Add(6*time.Minute), secret), webhook.ErrStaleTimestamp},
		{"another secret", signed(now, other), webhook.ErrBadSignature},
		{"a v2 signature", func() http.Header {
			h := signed(now, secret)
			h.Set(webhook.HeaderSignature, strings.Replace(h.Get(webhook.HeaderSignature), "v1,", "v2,", 1))
			return h
		}(), webhook.ErrBadSignature},
		{"a replayed signature with a new id", func() http.Header {
			h := signed(now, secret)
			h.Set(webhook.HeaderID, "evt_2")
			return h
		}(), webhook.ErrBadSignature},
	}
	for _, tt := range tests {
		if _, err := webhook.Verify(tt.h, body, now, webhook.DefaultTolerance, secret); !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
		}
	}
	// During a rotation both secrets sign, and either verifies.
	both := signed(now, other, secret)
	if n := len(strings.Fields(both.Get(webhook.HeaderSignature))); n != 2 {
		t.Fatalf("%d signatures, want 2", n)
	}
	for _, s := range []webhook.Secret{secret, other} {
		if _, err := webhook.Verify(both, body, now, webhook.DefaultTolerance, s); err != nil {
			t.Errorf("rotation: %v", err)
		}
	}
}

func TestParseSecret(t *testing.T) {
	t.Parallel()
	good := webhook.NewSecret().Reveal()
	if _, err := webhook.ParseSecret(good); err != nil {
		t.Errorf("NewSecret's text: %v", err)
	}
	if _, err := webhook.ParseSecret(strings.TrimPrefix(good, "whsec_")); err != nil {
		t.Errorf("without the prefix: %v", err)
	}
	for _, bad := range []string{"", "whsec_", "whsec_not base64!", "whsec_" + strings.Repeat("A", 20), // 15 bytes
		"whsec_" + strings.Repeat("A", 88)} { // 66 bytes
		if _, err := webhook.ParseSecret(bad); !errors.Is(err, webhook.ErrInvalid) {
			t.Errorf("ParseSecret(%.30q) = %v", bad, err)
		}
	}
	if s := webhook.NewSecret().String(); strings.Contains(s, good[6:12]) || s != "whsec_…" {
		t.Errorf("String() = %q reveals the key", s)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
