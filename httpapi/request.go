package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/execkit/execkit/execution"
	"github.com/execkit/execkit/fsm"
	"github.com/execkit/execkit/internal/jsonx"
)

// maxEcho bounds how much of a caller's input an error repeats.
const maxEcho = 60

// echo quotes s for an error message, cut to maxEcho bytes.
func echo(s string) string {
	if len(s) > maxEcho {
		s = s[:maxEcho]
	}
	return strings.ToValidUTF8(s, "?")
}

func validation(field, problem string) *Problem {
	field = echo(field)
	p := newProblem(TypeValidation, http.StatusBadRequest, fmt.Sprintf("invalid %s: %s", field, problem))
	p.Field = field
	return p
}

// checkQuery parses the query strictly: well-formed, only the allowed
// parameters, none repeated.
func checkQuery(r *http.Request, allowed ...string) (url.Values, *Problem) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, validation("query", "malformed query string")
	}
	for k, v := range q {
		known := false
		for _, a := range allowed {
			known = known || k == a
		}
		if !known {
			return nil, validation(k, "unknown query parameter")
		}
		if len(v) > 1 {
			return nil, validation(k, "given more than once")
		}
	}
	return q, nil
}

// checkHeaders refuses repeated copies of headers that must be single.
func checkHeaders(r *http.Request, names ...string) *Problem {
	for _, n := range append(names, "Content-Type", "Content-Encoding") {
		if len(r.Header.Values(n)) > 1 {
			return validation(n, "header given more than once")
		}
	}
	return nil
}

// checkJSONContent accepts a body declared as JSON in UTF-8, or not
// declared at all, and not encoded.
func checkJSONContent(r *http.Request) *Problem {
	if ce := r.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		p := validation("Content-Encoding", fmt.Sprintf("%q is not supported; send the body unencoded", echo(ce)))
		p.Status = http.StatusUnsupportedMediaType
		return p
	}
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return nil
	}
	mt, params, err := mime.ParseMediaType(ct)
	ok := err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json"))
	if cs, has := params["charset"]; ok && has && !strings.EqualFold(cs, "utf-8") {
		ok = false
	}
	if !ok {
		p := validation("Content-Type", fmt.Sprintf("%q is not application/json in UTF-8", echo(ct)))
		p.Status = http.StatusUnsupportedMediaType
		return p
	}
	return nil
}

// decodeBody reads a JSON object body into fields, a map from each field
// name (matched exactly) to a pointer to decode it into. It refuses
// bodies over the cap, unknown and duplicate fields, invalid UTF-8 and
// trailing data, naming the field at fault. An empty body is allowed if
// optional.
func (h *handler) decodeBody(w http.ResponseWriter, r *http.Request, optional bool, fields map[string]any) *Problem {
	if p := checkJSONContent(r); p != nil {
		return p
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return problemFor(err)
		}
		return validation("body", "could not be read")
	}
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		if optional {
			return nil
		}
		return validation("body", "empty; send a JSON object")
	}
	if !utf8.Valid(body) {
		return validation("body", "not valid UTF-8")
	}
	if body[0] != '{' {
		return validation("body", "must be a JSON object")
	}
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&raw); err != nil {
		var syntax *json.SyntaxError
		if errors.As(err, &syntax) {
			return validation("body", fmt.Sprintf("malformed JSON at byte %d", syntax.Offset))
		}
		return validation("body", "malformed JSON")
	}
	if _, err := dec.Token(); err != io.EOF {
		return validation("body", "trailing data after the JSON object")
	}
	if key, dup := jsonx.DuplicateKey(body); dup {
		return validation(key, "field given more than once")
	}
	for name, value := range raw {
		dst, ok := fields[name]
		if !ok {
			return validation(name, "unknown field")
		}
		if err := json.Unmarshal(value, dst); err != nil {
			return validation(name, fieldProblem(err))
		}
	}
	return nil
}

// fieldProblem says what was wrong with one field's value.
func fieldProblem(err error) string {
	var typ *json.UnmarshalTypeError
	if errors.As(err, &typ) {
		switch typ.Type.Kind().String() {
		case "string":
			return "must be a string"
		case "ptr", "struct":
			return "must be an RFC 3339 time"
		}
		return "has the wrong type"
	}
	if strings.Contains(err.Error(), "Time") || errors.As(err, new(*time.ParseError)) {
		return "must be an RFC 3339 time"
	}
	return "has the wrong type or form"
}

func parseFilter(q url.Values) (execution.Filter, *Problem) {
	var f execution.Filter
	f.Status = fsm.State(q.Get("status"))
	if f.Status != "" && !f.Status.Valid() {
		return f, validation("status", fmt.Sprintf("%q is not a state", echo(q.Get("status"))))
	}
	f.Action = q.Get("action")
	f.Cursor = q.Get("cursor")
	for _, b := range []struct {
		name string
		dst  *time.Time
	}{{"createdAfter", &f.CreatedAfter}, {"createdBefore", &f.CreatedBefore}} {
		if s := q.Get(b.name); s != "" {
			t, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				return f, validation(b.name, "must be an RFC 3339 time")
			}
			*b.dst = t
		}
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return f, validation("limit", "must be a positive integer")
		}
		f.Limit = min(n, execution.MaxPageSize)
	}
	return f, nil
}

// parseWait reads a long-poll wait: a Go duration ("30s") or whole
// seconds. Any wait past the server's cap means the cap.
func parseWait(s string) (time.Duration, error) {
	if s != "" && strings.Trim(s, "0123456789") == "" {
		if len(s) > 9 {
			return math.MaxInt64, nil
		}
		n, _ := strconv.Atoi(s)
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, errors.New(`must be a duration such as "30s", or whole seconds`)
	}
	return d, nil
}

// etagMatches reports whether an If-None-Match list names the version's
// tag, comparing weakly as RFC 9110 asks; "*" matches any.
func etagMatches(header string, version int64) bool {
	want := `"` + strconv.FormatInt(version, 10) + `"`
	for _, tag := range strings.Split(header, ",") {
		tag = strings.TrimSpace(tag)
		if tag == "*" || strings.TrimPrefix(tag, "W/") == want {
			return true
		}
	}
	return false
}
