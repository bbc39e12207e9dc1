package ingest

import (
	"bytes"

	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coapserver"
)

// link is one entry of /.well-known/core. Device resources are not listed: they would leak names.
type link struct {
	href  string
	attrs [][2]string // name, value; values are emitted quoted except ct
}

var links = []link{
	{href: "/health", attrs: [][2]string{{"rt", "coapgw.health"}, {"ct", "50"}}},
}

// maxFilters is how many Uri-Query filters of a /.well-known/core request count; more are
// ignored.
const maxFilters = 4

// wellKnown serves RFC 6690 link format with query filtering (RFC 6690 §4.1): one filter
// attribute=value, where the value may end in '*' to match a prefix.
func (h *Handler) wellKnown(w *coapserver.ResponseWriter, r *coapserver.Request) {
	var out []byte
	for _, l := range links {
		if !matches(l, r) {
			continue
		}
		if len(out) > 0 {
			out = append(out, ',')
		}
		out = append(out, '<')
		out = append(out, l.href...)
		out = append(out, '>')
		for _, a := range l.attrs {
			out = append(out, ';')
			out = append(out, a[0]...)
			out = append(out, '=')
			if a[0] == "ct" {
				out = append(out, a[1]...)
			} else {
				out = append(out, '"')
				out = append(out, a[1]...)
				out = append(out, '"')
			}
		}
	}
	if len(out) == 0 {
		w.Respond(coapmsg.NotFound, nil)
		return
	}
	if !h.verified(w, r, len(out), coapmsg.FormatLinkFormat) {
		return
	}
	w.SetUintOption(coapmsg.ContentFormat, uint32(coapmsg.FormatLinkFormat))
	w.Respond(coapmsg.Content, out)
}

// matches reports whether l passes every filter of r (the first maxFilters).
func matches(l link, r *coapserver.Request) bool {
	for i := range min(r.NumQuery(), maxFilters) {
		q := r.Query(i)
		name, val, ok := bytes.Cut(q, []byte("="))
		if !ok {
			return false
		}
		prefix := false
		if n := len(val); n > 0 && val[n-1] == '*' {
			val, prefix = val[:n-1], true
		}
		match := func(s string) bool {
			if prefix {
				return len(s) >= len(val) && s[:len(val)] == string(val)
			}
			return s == string(val)
		}
		if string(name) == "href" {
			if !match(l.href) {
				return false
			}
			continue
		}
		found := false
		for _, a := range l.attrs {
			if a[0] != string(name) {
				continue
			}
			// rt, if and rel may hold space-separated values; any of them may match.
			for _, v := range bytes.Fields([]byte(a[1])) {
				if match(string(v)) {
					found = true
				}
			}
		}
		if !found {
			return false
		}
	}
	return true
}
