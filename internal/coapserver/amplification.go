package coapserver

import "github.com/coapgw/coapgw/internal/coapmsg"

// MaxAmplification bounds what the gateway sends to an address it has not verified: no response
// longer than MaxAmplification times the request datagram (RFC 7252 §11.3). Over UDP anyone can
// send a request with a victim's address as its source; a server answering with more bytes than
// it received amplifies the attack. The exchange layer keeps its own answers within it
// (Diagnostic); handlers compare ResponseWriter.Size with RequestSize for theirs, and may answer
// 4.01 with an Echo option (RFC 9175) to have the client prove its address first.
const MaxAmplification = 3

// Diagnostic returns diag, the diagnostic payload of an error response (RFC 7252 §5.5.2), or nil
// if a response carrying it, with the options set so far, would be longer than MaxAmplification
// times the request: the diagnostic is optional, the response code is what counts.
func (w *ResponseWriter) Diagnostic(diag []byte) []byte {
	return w.diagnostic(coapmsg.BadRequest, diag)
}

// diagnostic is Diagnostic for an error response of code.
func (w *ResponseWriter) diagnostic(code coapmsg.Code, diag []byte) []byte {
	if w.size(code, len(diag)) > MaxAmplification*w.RequestSize() {
		return nil
	}
	return diag
}
