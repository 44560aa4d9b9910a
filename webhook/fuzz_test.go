package webhook_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/execkit/execkit/webhook"
)

// FuzzVerify feeds Verify arbitrary headers and bodies: it never panics,
// accepts nothing it did not sign, and accepts everything it did.
func FuzzVerify(f *testing.F) {
	f.Add("evt_1", "1800000000", "v1,abc", []byte(`{}`), false)
	f.Add("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", []byte(`{"test": 2432232314}`), true)
	f.Add("", "", "", []byte(nil), false)
	f.Add("evt_x", "-1", "v1, v1,,, v2,xx", []byte("\x00\xff"), true)
	secret, _ := webhook.ParseSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	now := time.Unix(1800000000, 0)
	f.Fuzz(func(t *testing.T, id, ts, sig string, body []byte, sign bool) {
		h := http.Header{}
		h.Set(webhook.HeaderID, id)
		h.Set(webhook.HeaderTimestamp, ts)
		h.Set(webhook.HeaderSignature, sig)
		if sign {
			webhook.SetHeaders(h, id, now, body, secret)
		}
		got, err := webhook.Verify(h, body, now, time.Minute, secret)
		signed := sign && id != "" && len(id) <= 255 && h.Get(webhook.HeaderID) == id
		switch {
		case signed && (err != nil || got != id):
			t.Fatalf("our own signature refused: %v", err)
		case !signed && err == nil && !strings.Contains(sig, webhook.Sign(id, timeOf(ts), body, secret)[3:]):
			t.Fatalf("accepted a signature it did not make: id %q ts %q sig %q", id, ts, sig)
		}
	})
}

func timeOf(ts string) time.Time {
	n, _ := strconv.ParseInt(ts, 10, 64)
	return time.Unix(n, 0)
}

// FuzzReceiver posts arbitrary deliveries, signed or not, to a receiver:
// it answers only with the documented statuses and hands the host only
// signed, well-formed events.
func FuzzReceiver(f *testing.F) {
	f.Add([]byte(`{"id":"evt_1","event":"execution.running","executionId":"exe_01JZZZZZZZZZZZZZZZZZZZZZZZ","action":"a","status":"running","version":3,"timestamp":"x"}`), "evt_1", true)
	f.Add([]byte(`{}`), "evt_1", true)
	f.Add([]byte(`not json`), "", false)
	f.Add([]byte(`{"id":"evt_1","id":"evt_2"}`), "evt_1", true)
	e := setupReceiver(f, 4096)
	e.current["exe_01JZZZZZZZZZZZZZZZZZZZZZZZ"] = "running"
	f.Fuzz(func(t *testing.T, body []byte, id string, sign bool) {
		before := e.calls.Load()
		req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		secret := e.secret
		if !sign {
			secret = webhook.NewSecret()
		}
		webhook.SetHeaders(req.Header, id, time.Now(), body, secret)
		resp, err := http.DefaultClient.Do(withURL(req, e.srv.URL))
		if err != nil {
			return // a header net/http itself refuses to send
		}
		resp.Body.Close()
		switch resp.StatusCode {
		case 204, 400, 401, 413, 500, 503:
		default:
			t.Fatalf("status %d", resp.StatusCode)
		}
		if !sign && (resp.StatusCode == 204 || e.calls.Load() != before) {
			t.Fatalf("unsigned delivery handled: %d", resp.StatusCode)
		}
	})
}

func withURL(r *http.Request, base string) *http.Request {
	out, _ := http.NewRequest(r.Method, base, r.Body)
	out.Header = r.Header
	return out
}
