package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// cleanup is --clean-up: after the run, the things it wrote are deleted through the gateway's
// HTTP API (local mode), so that a benchmark leaves no devices behind in the registry.
type cleanup struct {
	API       string        // the gateway's HTTP address, e.g. http://127.0.0.1:8080 ("" = off)
	TokenFile string        // file holding the API token (writes always need it); else $COAPGW_HTTP_TOKEN
	Wait      time.Duration // how long to wait for the gateway to apply what it acknowledged
}

// run waits until the gateway has applied every record it acknowledged (/api/status: spoolDepth
// 0 and processorLagSeconds 0), then deletes every thing of type typ whose name starts with
// prefix (listed with /api/things?type=&prefix=, so a thing of another type is never touched).
// It returns how many it deleted.
func (c cleanup) run(ctx context.Context, typ, prefix string) (int, error) {
	base := strings.TrimRight(c.API, "/")
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	token := strings.TrimSpace(os.Getenv("COAPGW_HTTP_TOKEN"))
	if c.TokenFile != "" {
		b, err := os.ReadFile(c.TokenFile)
		if err != nil {
			return 0, fmt.Errorf("clean-up: %w", err)
		}
		token = strings.TrimSpace(string(b))
	}
	if token == "" {
		return 0, errors.New("clean-up: deleting things needs the gateway's HTTP API token: --api-token-file or COAPGW_HTTP_TOKEN")
	}
	if err := c.waitApplied(ctx, base); err != nil {
		return 0, err
	}
	names, err := listThings(ctx, base, typ, prefix)
	if err != nil {
		return 0, err
	}
	deleted := 0
	for _, name := range names {
		code, msg, err := call(ctx, http.MethodDelete, base+"/api/things/"+url.PathEscape(name), token, nil)
		switch {
		case err != nil:
			return deleted, fmt.Errorf("clean-up: delete %s: %w", name, err)
		case code == http.StatusNoContent:
			deleted++
		case code == http.StatusNotFound: // gone already
		default:
			return deleted, fmt.Errorf("clean-up: delete %s: HTTP %d %s", name, code, msg)
		}
	}
	return deleted, nil
}

// waitApplied polls /api/status until nothing acknowledged is waiting to be applied.
func (c cleanup) waitApplied(ctx context.Context, base string) error {
	wait := c.Wait
	if wait <= 0 {
		wait = time.Minute
	}
	deadline := time.Now().Add(wait)
	for {
		var st struct {
			SpoolDepth          int64   `json:"spoolDepth"`
			ProcessorLagSeconds float64 `json:"processorLagSeconds"`
		}
		code, msg, err := call(ctx, http.MethodGet, base+"/api/status", "", &st)
		if err != nil {
			return fmt.Errorf("clean-up: %w", err)
		}
		if code != http.StatusOK {
			return fmt.Errorf("clean-up: GET /api/status: HTTP %d %s", code, msg)
		}
		if st.SpoolDepth == 0 && st.ProcessorLagSeconds == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("clean-up: the gateway has not applied its records after %s (spool depth %d)", wait, st.SpoolDepth)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// listThings returns the names of every thing of type typ whose name starts with prefix.
func listThings(ctx context.Context, base, typ, prefix string) ([]string, error) {
	var names []string
	cursor := ""
	for {
		q := url.Values{"type": {typ}, "prefix": {prefix}, "limit": {"1000"}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		var page struct {
			Things []struct {
				Name string `json:"thingName"`
			} `json:"things"`
			Next string `json:"nextToken"`
		}
		code, msg, err := call(ctx, http.MethodGet, base+"/api/things?"+q.Encode(), "", &page)
		if err != nil {
			return nil, fmt.Errorf("clean-up: %w", err)
		}
		if code != http.StatusOK {
			return nil, fmt.Errorf("clean-up: GET /api/things: HTTP %d %s", code, msg)
		}
		for _, t := range page.Things {
			names = append(names, t.Name)
		}
		if page.Next == "" {
			return names, nil
		}
		cursor = page.Next
	}
}

// call sends one API request; a 2xx body is decoded into out (if not nil), another status's
// error message is returned as msg.
func call(ctx context.Context, method, u, token string, out any) (code int, msg string, err error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return 0, "", err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return 0, "", err
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return resp.StatusCode, e.Error, nil
		}
		return resp.StatusCode, strings.TrimSpace(string(body)), nil
	}
	if out != nil && len(body) > 0 {
		if err := json.Unmarshal(body, out); err != nil {
			return resp.StatusCode, "", fmt.Errorf("%s %s: %w", method, u, err)
		}
	}
	return resp.StatusCode, "", nil
}
