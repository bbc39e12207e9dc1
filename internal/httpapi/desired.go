package httpapi

import (
	"context"
	"errors"
	"io"
	"net/http"

	"github.com/coapgw/coapgw/internal/registry"
)

// DesiredStore is the registry's write API for desired state (implemented by
// *registry.Registry). A Store that implements it gets the route
// PUT /api/things/{name}/shadow.
type DesiredStore interface {
	UpdateDesired(ctx context.Context, name string, body []byte) ([]byte, error)
}

// maxShadowRequest bounds the body of PUT /api/things/{name}/shadow: AWS's 8 KB state document
// with room for its JSON.
const maxShadowRequest = 64 << 10

// handlePutShadow is AWS's UpdateThingShadow for the desired state: the body is
// {"state":{"desired":{…}}} with an optional "version"; the answer is the shadow afterwards (200),
// or 400 (not such a document, state.reported, a limit), 404 (no such thing), 409 (version
// conflict), 413 (body over 64 KiB). The things it changes are announced on the event stream.
func (a *API) handlePutShadow(ds DesiredStore) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name, ok := thingName(w, r)
		if !ok || !noParams(w, r) {
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxShadowRequest))
		if err != nil {
			writeError(w, http.StatusRequestEntityTooLarge, "body larger than 64 KiB")
			return
		}
		ctx, cancel := a.ctx(r)
		defer cancel()
		doc, err := ds.UpdateDesired(ctx, name, body)
		var de *registry.DesiredError
		switch {
		case errors.As(err, &de):
			writeError(w, http.StatusBadRequest, de.Reason)
			return
		case errors.Is(err, registry.ErrVersionConflict):
			writeError(w, http.StatusConflict, "version conflict: read the shadow and try again")
			return
		case err != nil:
			a.storeError(w, r, "thing "+quote(name), err)
			return
		}
		a.Notify(name)
		writeRawJSON(w, http.StatusOK, doc)
	}
}
