package awsiot

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/smithy-go"
)

// permanentError is a failure that retrying cannot fix; its records are set aside.
type permanentError struct {
	reason string
	label  string // the set_aside metric's reason label
	err    error
}

func (e *permanentError) Error() string { return e.reason }
func (e *permanentError) Unwrap() error { return e.err }

// permanentCodes are the AWS error codes that retrying the same request cannot fix.
var permanentCodes = map[string]bool{
	"InvalidRequestException":              true,
	"RequestEntityTooLargeException":       true,
	"UnsupportedDocumentEncodingException": true,
	"MethodNotAllowedException":            true,
	"ValidationException":                  true,
	"SerializationException":               true,
	"VersionConflictException":             true,
}

// classify returns err as a *permanentError if retrying cannot help, else unchanged (transient:
// throttling the SDK gave up on, 5xx, network, credentials, access denied, anything unknown).
func classify(err error) error {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var api smithy.APIError
	if errors.As(err, &api) && permanentCodes[api.ErrorCode()] {
		reason := api.ErrorCode()
		if msg := api.ErrorMessage(); msg != "" {
			reason += ": " + msg
		}
		return &permanentError{reason: reason, label: "rejected", err: err}
	}
	return err
}

// rejected returns the error for the failed control-plane call named what: a *permanentError
// (label "rejected") whose reason starts with what if retrying cannot help, else err wrapped
// with what.
func rejected(what string, err error) error {
	err = classify(err)
	var pe *permanentError
	if errors.As(err, &pe) {
		return &permanentError{reason: what + ": " + pe.reason, label: "rejected"}
	}
	return fmt.Errorf("%s: %w", what, err)
}

func hasCode(err error, code string) bool {
	var api smithy.APIError
	return errors.As(err, &api) && api.ErrorCode() == code
}
