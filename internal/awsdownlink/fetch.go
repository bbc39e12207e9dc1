package awsdownlink

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// shadowGetter is the one IoT data plane call this package makes, so tests can fake it.
type shadowGetter interface {
	// GetThingShadow returns the classic shadow's document of thing, found false when the
	// thing has no shadow (404).
	GetThingShadow(ctx context.Context, thing string) (doc []byte, found bool, err error)
}

// dataPlane calls GetThingShadow (GET /things/{thing}/shadow on the account's data endpoint,
// SigV4 for the service iotdata) with the SDK's credentials and signer. One attempt: a failure
// is retried by the device's next request, under the rate limit.
type dataPlane struct {
	base   string // https://<data endpoint>
	cfg    aws.Config
	signer *v4.Signer
	http   *http.Client
}

// emptyHash is the SHA-256 of an empty body.
var emptyHash = func() string { h := sha256.Sum256(nil); return hex.EncodeToString(h[:]) }()

func newDataPlane(base string, cfg aws.Config) *dataPlane {
	if !strings.Contains(base, "://") {
		base = "https://" + base
	}
	return &dataPlane{base: strings.TrimSuffix(base, "/"), cfg: cfg, signer: v4.NewSigner(), http: &http.Client{Timeout: fetchTimeout}}
}

func (d *dataPlane) GetThingShadow(ctx context.Context, thing string) ([]byte, bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.base+"/things/"+url.PathEscape(thing)+"/shadow", nil)
	if err != nil {
		return nil, false, err
	}
	if d.cfg.Credentials != nil {
		creds, err := d.cfg.Credentials.Retrieve(ctx)
		if err != nil {
			return nil, false, fmt.Errorf("credentials: %w", err)
		}
		if err := d.signer.SignHTTP(ctx, creds, req, emptyHash, "iotdata", d.cfg.Region, time.Now()); err != nil {
			return nil, false, fmt.Errorf("sign: %w", err)
		}
	}
	resp, err := d.http.Do(req)
	if err != nil {
		return nil, false, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, false, err
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, false, nil
	case resp.StatusCode != http.StatusOK:
		return nil, false, fmt.Errorf("GetThingShadow %s: HTTP %d: %.200s", thing, resp.StatusCode, body)
	}
	return body, true, nil
}

// fetchTimeout bounds one GetThingShadow call (the device's answer waits only FetchBudget).
const fetchTimeout = 10 * time.Second

// fetchWorkers is how many GetThingShadow calls run at once.
const fetchWorkers = 8

// fetchLoop runs GetThingShadow for the names queued by Delta until ctx ends.
func (d *Downlink) fetchLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case name := <-d.fetchq:
			d.fetch(ctx, name)
		}
	}
}

func (d *Downlink) fetch(ctx context.Context, name string) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	doc, found, err := d.get.GetThingShadow(ctx, name)
	var version int64
	var delta map[string]any
	if err == nil && found {
		version, delta, err = parseShadow(doc)
	}
	if err != nil {
		d.met.fetches.WithLabelValues("error").Inc()
		d.log.Warn("GetThingShadow failed; the device's next request tries again", "thing", name, "err", err)
		d.cache.fetched(name, 0, nil, false)
		return
	}
	d.met.fetches.WithLabelValues("ok").Inc()
	if d.cache.fetched(name, version, delta, true) {
		d.notify(name)
	}
}

// Delta returns the pending change of the thing named name as the device gets it,
// {"state":{<delta>},"version":N}, or nil (ingest.Deltas). For a thing already known it is a
// map lookup under a read lock, without allocation. On a device's first request since the
// start (or since its entry was evicted or the cache reset, or is older than maxAge: then the
// answer falls back to the entry's delta if the call is late), it queues one GetThingShadow
// (within the rate limit) and waits for it at most FetchBudget (waitFetch); past that, it
// answers nil and the delta comes with the device's next request, or as an Observe
// notification.
func (d *Downlink) Delta(name []byte) []byte {
	now := time.Now()
	if msg, ok, refresh := d.cache.get(name, now.UnixNano()); ok {
		if msg != nil && !d.cfg.Documents {
			d.scheduleRefresh(name, refresh, now)
		}
		return msg
	}
	n := string(name)
	wait, start := d.cache.startFetch(n, now)
	if start {
		select {
		case d.fetchq <- n:
		default:
			d.met.fetches.WithLabelValues("queue_full").Inc()
			d.cache.fetched(n, 0, nil, false)
			return nil
		}
	}
	if wait != nil {
		d.waitFetch(wait)
	}
	return d.cache.msgOf(name)
}

// waitFetch waits for a fetch in flight, at most FetchBudget, and only while the waits of the
// last moments stay within a tenth of the time: the device API calls Delta on a CoAP socket's
// reader, which reads nothing else meanwhile. A burst of first requests (after a restart) thus
// delays other devices' answers by at most FetchBudget at a time and a tenth overall; the
// requests past it are answered without the delta at once.
func (d *Downlink) waitFetch(wait chan struct{}) {
	start := time.Now()
	ok := d.spendWait(start, 0) > 0
	if !ok {
		d.met.waits.WithLabelValues("skipped").Inc()
		return
	}
	t := time.NewTimer(d.cfg.FetchBudget)
	select {
	case <-wait:
		d.met.waits.WithLabelValues("answered").Inc()
	case <-t.C:
		d.met.waits.WithLabelValues("late").Inc()
	}
	t.Stop()
	now := time.Now()
	d.spendWait(now, now.Sub(start))
}

// spendWait refills the wait credit for the time since it was last touched, takes spent from
// it and returns what is left.
func (d *Downlink) spendWait(now time.Time, spent time.Duration) time.Duration {
	d.waitMu.Lock()
	defer d.waitMu.Unlock()
	if !d.waitLast.IsZero() {
		d.waitCredit = min(d.cfg.FetchBudget, d.waitCredit+now.Sub(d.waitLast)/waitShare)
	}
	d.waitLast = now
	d.waitCredit -= spent
	return d.waitCredit
}

// waitShare: waits for GetThingShadow take at most 1/waitShare of a reader's time.
const waitShare = 10
