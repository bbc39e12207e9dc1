package awsiot

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// The AWS IoT data plane (iot-data: device shadows, publish) is called through this small
// client because the SDK's service/iotdataplane module is not available from the module proxy
// this project builds with. It runs the SDK's own machinery — a smithy middleware stack with the
// config's APIOptions, the SDK retryer (adaptive mode), SigV4 signing with the config's
// credentials (the default chain) and the config's HTTP client — for the three REST operations
// the sink uses, with the same operation names, inputs and error codes as the SDK client, so
// swapping in iotdataplane.Client later is a change of constructor.

const (
	dataServiceID   = "IoT Data Plane"
	dataSigningName = "iotdata"
)

// UpdateThingShadowInput is iotdataplane.UpdateThingShadowInput's subset used here.
type UpdateThingShadowInput struct {
	ThingName  string
	ShadowName string // a named shadow; "" = the classic shadow
	Payload    []byte
}

// UpdateThingShadowOutput carries the response document.
type UpdateThingShadowOutput struct{ Payload []byte }

// GetThingShadowInput names the thing whose shadow to read.
type GetThingShadowInput struct {
	ThingName  string
	ShadowName string // a named shadow; "" = the classic shadow
}

// GetThingShadowOutput carries the shadow document.
type GetThingShadowOutput struct{ Payload []byte }

// PublishInput is an MQTT publish through the data plane's HTTPS API.
type PublishInput struct {
	Topic   string
	Payload []byte
	Qos     int32
}

// PublishOutput is empty.
type PublishOutput struct{}

// dataClient calls the IoT data plane.
type dataClient struct {
	cfg      aws.Config
	endpoint func(ctx context.Context) (string, error) // base URL
	retryer  aws.Retryer
	signer   *v4.Signer
	http     aws.HTTPClient
}

func newDataClient(cfg aws.Config, endpoint func(ctx context.Context) (string, error), retryer aws.Retryer) *dataClient {
	if retryer == nil {
		retryer = retry.NewStandard()
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = awshttp.NewBuildableClient()
	}
	return &dataClient{cfg: cfg, endpoint: endpoint, retryer: retryer, signer: v4.NewSigner(), http: hc}
}

// UpdateThingShadow is POST /things/{thingName}/shadow.
func (c *dataClient) UpdateThingShadow(ctx context.Context, in *UpdateThingShadowInput) (*UpdateThingShadowOutput, error) {
	body, err := c.invoke(ctx, "UpdateThingShadow", http.MethodPost, "/things/"+url.PathEscape(in.ThingName)+"/shadow", shadowQuery(in.ShadowName), in.Payload)
	if err != nil {
		return nil, err
	}
	return &UpdateThingShadowOutput{Payload: body}, nil
}

// GetThingShadow is GET /things/{thingName}/shadow.
func (c *dataClient) GetThingShadow(ctx context.Context, in *GetThingShadowInput) (*GetThingShadowOutput, error) {
	body, err := c.invoke(ctx, "GetThingShadow", http.MethodGet, "/things/"+url.PathEscape(in.ThingName)+"/shadow", shadowQuery(in.ShadowName), nil)
	if err != nil {
		return nil, err
	}
	return &GetThingShadowOutput{Payload: body}, nil
}

// shadowQuery is the query string naming a named shadow ("" for the classic one).
func shadowQuery(name string) string {
	if name == "" {
		return ""
	}
	return "name=" + url.QueryEscape(name)
}

// Publish is POST /topics/{topic}?qos=N.
func (c *dataClient) Publish(ctx context.Context, in *PublishInput) (*PublishOutput, error) {
	q := "qos=" + strconv.Itoa(int(in.Qos))
	if _, err := c.invoke(ctx, "Publish", http.MethodPost, "/topics/"+url.PathEscape(in.Topic), q, in.Payload); err != nil {
		return nil, err
	}
	return &PublishOutput{}, nil
}

// request is what the serialize step turns into an HTTP request.
type request struct {
	method, path, query string
	body                []byte
}

// invoke runs one operation through a smithy stack and returns the response body.
func (c *dataClient) invoke(ctx context.Context, op, method, path, query string, body []byte) ([]byte, error) {
	base, err := c.endpoint(ctx)
	if err != nil {
		return nil, &smithy.OperationError{ServiceID: dataServiceID, OperationName: op, Err: err}
	}
	ctx = middleware.ClearStackValues(ctx)
	ctx = middleware.WithServiceID(ctx, dataServiceID)
	ctx = middleware.WithOperationName(ctx, op)
	stack := middleware.NewStack(op, smithyhttp.NewStackRequest)
	if err := c.build(stack, op, base); err != nil {
		return nil, err
	}
	for _, fn := range c.cfg.APIOptions {
		if err := fn(stack); err != nil {
			return nil, err
		}
	}
	h := middleware.DecorateHandler(smithyhttp.NewClientHandlerWithOptions(c.http), stack)
	out, _, err := h.Handle(ctx, &request{method: method, path: path, query: query, body: body})
	if err != nil {
		return nil, &smithy.OperationError{ServiceID: dataServiceID, OperationName: op, Err: err}
	}
	b, _ := out.([]byte)
	return b, nil
}

func (c *dataClient) build(stack *middleware.Stack, op, base string) error {
	steps := []error{
		stack.Initialize.Add(&awsmiddleware.RegisterServiceMetadata{
			ServiceID: dataServiceID, SigningName: dataSigningName, Region: c.cfg.Region, OperationName: op,
		}, middleware.Before),
		stack.Serialize.Add(middleware.SerializeMiddlewareFunc("coapgwSerialize", func(ctx context.Context, in middleware.SerializeInput, next middleware.SerializeHandler) (middleware.SerializeOutput, middleware.Metadata, error) {
			return serialize(ctx, in, next, base)
		}), middleware.After),
		awsmiddleware.AddClientRequestIDMiddleware(stack),
		stack.Finalize.Add(&signer{creds: c.cfg.Credentials, s: c.signer, region: c.cfg.Region}, middleware.After),
		retry.AddRetryMiddlewares(stack, retry.AddRetryMiddlewaresOptions{Retryer: c.retryer}),
		stack.Deserialize.Add(middleware.DeserializeMiddlewareFunc("coapgwDeserialize", deserialize), middleware.After),
	}
	for _, err := range steps {
		if err != nil {
			return err
		}
	}
	return nil
}

func serialize(ctx context.Context, in middleware.SerializeInput, next middleware.SerializeHandler, base string) (middleware.SerializeOutput, middleware.Metadata, error) {
	req, ok := in.Request.(*smithyhttp.Request)
	p, ok2 := in.Parameters.(*request)
	if !ok || !ok2 {
		return middleware.SerializeOutput{}, middleware.Metadata{}, &smithy.SerializationError{Err: fmt.Errorf("unexpected request %T", in.Request)}
	}
	u, err := url.Parse(base)
	if err != nil {
		return middleware.SerializeOutput{}, middleware.Metadata{}, &smithy.SerializationError{Err: err}
	}
	unescaped, err := url.PathUnescape(p.path)
	if err != nil {
		return middleware.SerializeOutput{}, middleware.Metadata{}, &smithy.SerializationError{Err: err}
	}
	req.URL.Scheme, req.URL.Host = u.Scheme, u.Host
	req.URL.Path = strings.TrimSuffix(u.Path, "/") + unescaped
	req.URL.RawPath = strings.TrimSuffix(u.EscapedPath(), "/") + p.path
	req.URL.RawQuery = p.query
	req.Method = p.method
	if p.body != nil {
		req.Header.Set("Content-Type", "application/json")
		if req, err = req.SetStream(bytes.NewReader(p.body)); err != nil {
			return middleware.SerializeOutput{}, middleware.Metadata{}, &smithy.SerializationError{Err: err}
		}
	}
	ctx = v4.SetPayloadHash(ctx, payloadHash(p.body))
	in.Request = req
	return next.HandleSerialize(ctx, in)
}

func payloadHash(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// signer signs each attempt with SigV4 (the step the SDK's retry middleware is placed before).
type signer struct {
	creds  aws.CredentialsProvider
	s      *v4.Signer
	region string
}

func (*signer) ID() string { return "Signing" }

func (s *signer) HandleFinalize(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
	req, ok := in.Request.(*smithyhttp.Request)
	if !ok {
		return middleware.FinalizeOutput{}, middleware.Metadata{}, fmt.Errorf("unexpected request %T", in.Request)
	}
	if s.creds == nil {
		return next.HandleFinalize(ctx, in)
	}
	creds, err := s.creds.Retrieve(ctx)
	if err != nil {
		return middleware.FinalizeOutput{}, middleware.Metadata{}, fmt.Errorf("retrieve credentials: %w", err)
	}
	region := signingRegion(req.URL.Hostname(), s.region)
	if err := s.s.SignHTTP(ctx, creds, req.Request, v4.GetPayloadHash(ctx), dataSigningName, region, time.Now().UTC()); err != nil {
		return middleware.FinalizeOutput{}, middleware.Metadata{}, fmt.Errorf("sign request: %w", err)
	}
	return next.HandleFinalize(ctx, in)
}

// signingRegion is the region a request to the data endpoint host must be signed for: the one
// in an AWS IoT endpoint's name (<prefix>-ats.iot.<region>.amazonaws.com[.cn], also the
// iot-data/data-ats forms), so that an endpoint of another region (a standby region's) works;
// fallback (the config's region) for any other host.
func signingRegion(host, fallback string) string {
	labels := strings.Split(strings.ToLower(host), ".")
	for i := 0; i+2 < len(labels); i++ {
		if labels[i+2] != "amazonaws" {
			continue
		}
		switch labels[i] {
		case "iot", "iot-data", "data-ats", "data":
			if r := labels[i+1]; r != "" && strings.Count(r, "-") >= 2 {
				return r
			}
		}
	}
	return fallback
}

func deserialize(ctx context.Context, in middleware.DeserializeInput, next middleware.DeserializeHandler) (middleware.DeserializeOutput, middleware.Metadata, error) {
	out, md, err := next.HandleDeserialize(ctx, in)
	if err != nil {
		return out, md, err
	}
	resp, ok := out.RawResponse.(*smithyhttp.Response)
	if !ok {
		return out, md, &smithy.DeserializationError{Err: fmt.Errorf("unexpected response %T", out.RawResponse)}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if err != nil {
		return out, md, &smithy.DeserializationError{Err: fmt.Errorf("read response: %w", err)}
	}
	if resp.StatusCode < 200 || resp.StatusCode >= 300 {
		return out, md, &awshttp.ResponseError{
			ResponseError: &smithyhttp.ResponseError{Response: resp, Err: dataError(resp, body)},
			RequestID:     resp.Header.Get("X-Amzn-Requestid"),
		}
	}
	out.Result = body
	return out, md, nil
}

// dataError builds the API error of a failed response: the code from X-Amzn-ErrorType or the
// body, else from the status.
func dataError(resp *smithyhttp.Response, body []byte) error {
	code := resp.Header.Get("X-Amzn-Errortype")
	var doc struct {
		Type     string `json:"__type"`
		Code     string `json:"code"`
		Message  string `json:"message"`
		Message2 string `json:"Message"`
	}
	_ = json.Unmarshal(body, &doc)
	if code == "" {
		code = doc.Type
	}
	if code == "" {
		code = doc.Code
	}
	if i := strings.IndexAny(code, ":"); i >= 0 {
		code = code[:i]
	}
	if i := strings.LastIndexByte(code, '#'); i >= 0 {
		code = code[i+1:]
	}
	if code == "" {
		code = statusCode(resp.StatusCode)
	}
	msg := doc.Message
	if msg == "" {
		msg = doc.Message2
	}
	if msg == "" && len(body) > 0 && len(body) < 300 && doc.Type == "" {
		msg = string(body)
	}
	fault := smithy.FaultClient
	if resp.StatusCode >= 500 {
		fault = smithy.FaultServer
	}
	return &smithy.GenericAPIError{Code: code, Message: msg, Fault: fault}
}

func statusCode(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "InvalidRequestException"
	case http.StatusUnauthorized, http.StatusForbidden:
		return "UnauthorizedException"
	case http.StatusNotFound:
		return "ResourceNotFoundException"
	case http.StatusMethodNotAllowed:
		return "MethodNotAllowedException"
	case http.StatusConflict:
		return "ConflictException"
	case http.StatusRequestEntityTooLarge:
		return "RequestEntityTooLargeException"
	case http.StatusUnsupportedMediaType:
		return "UnsupportedDocumentEncodingException"
	case http.StatusTooManyRequests:
		return "ThrottlingException"
	case http.StatusServiceUnavailable:
		return "ServiceUnavailableException"
	}
	if status >= 500 {
		return "InternalFailureException"
	}
	return "HTTP" + strconv.Itoa(status)
}
