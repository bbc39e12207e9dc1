package awsiot

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
)

type captureHTTP struct{ auth, query string }

func (c *captureHTTP) Do(r *http.Request) (*http.Response, error) {
	c.auth, c.query = r.Header.Get("Authorization"), r.URL.RawQuery
	return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader(`{"version":1}`)), Header: http.Header{}, Request: r}, nil
}

// TestSigningRegionFromEndpoint: a data endpoint of another region than the config's (a standby
// region) is signed for its own region; AWS would refuse the signature otherwise.
func TestSigningRegionFromEndpoint(t *testing.T) {
	for _, tc := range []struct{ endpoint, want string }{
		{"https://a1b2c3d4e5f6g7-ats.iot.us-west-2.amazonaws.com", "/us-west-2/iotdata/aws4_request"},
		{"https://data-ats.iot.ap-southeast-1.amazonaws.com", "/ap-southeast-1/iotdata/aws4_request"},
		{"https://x-ats.iot.cn-north-1.amazonaws.com.cn", "/cn-north-1/iotdata/aws4_request"},
		{"http://127.0.0.1:5000", "/eu-west-1/iotdata/aws4_request"}, // an emulator: the config's
	} {
		hc := &captureHTTP{}
		cfg := aws.Config{Region: "eu-west-1", HTTPClient: hc, Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", "")}
		c := newDataClient(cfg, func(context.Context) (string, error) { return tc.endpoint, nil }, nil)
		if _, err := c.UpdateThingShadow(t.Context(), &UpdateThingShadowInput{ThingName: "dev-1", ShadowName: RegistryShadow, Payload: []byte(`{}`)}); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(hc.auth, tc.want) {
			t.Errorf("%s: signed %q, want scope %s", tc.endpoint, hc.auth, tc.want)
		}
		if hc.query != "name=coapgw" {
			t.Errorf("query %q", hc.query)
		}
	}
}
