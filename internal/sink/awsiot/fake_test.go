package awsiot

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"
	"github.com/aws/aws-sdk-go-v2/service/iot/types"
	"github.com/aws/smithy-go"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeAWS is an in-memory AWS IoT: registry (things, types) and classic shadows, with AWS's
// semantics for what the sink uses (CreateThing is idempotent for the same configuration and
// says ResourceAlreadyExists for another; shadow updates merge reported state as a JSON merge
// patch and honour "version"). It counts calls by operation. Hooks fail calls.
type fakeAWS struct {
	iotAPI // embedded: calling a method the sink should not use panics

	mu      sync.Mutex
	types   map[string]bool
	things  map[string]string // name → type
	shadows map[string]*fakeShadow
	calls   map[string]int
	now     int64 // shadow timestamps, seconds
	// published holds the payloads published, in order.
	published []string

	// fail, if set, is asked before every call; a non-nil error fails it.
	fail func(op, thing string) error
	// beforeUpdate, if set, runs before an update is applied (to interleave another writer).
	beforeUpdate func(thing string)
}

type fakeShadow struct {
	reported map[string]any
	desired  map[string]any // set by setDesired only
	version  int64
}

func newFakeAWS() *fakeAWS {
	return &fakeAWS{types: map[string]bool{}, things: map[string]string{}, shadows: map[string]*fakeShadow{},
		calls: map[string]int{}, now: 1_800_000_000}
}

func (f *fakeAWS) call(op, thing string) error {
	f.mu.Lock()
	f.calls[op]++
	hook := f.fail
	f.mu.Unlock()
	if hook != nil {
		return hook(op, thing)
	}
	return nil
}

// count returns the calls of op so far.
func (f *fakeAWS) count(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op]
}

// classic returns the calls of op on classic shadows so far (op counts named shadows' too; the
// calls on a named shadow are counted as op@name).
func (f *fakeAWS) classic(op string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[op] - f.calls[op+"@"+RegistryShadow]
}

// controlPlane is the number of registry calls.
func (f *fakeAWS) controlPlane() int {
	return f.count("CreateThingType") + f.count("CreateThing") + f.count("DescribeThing") + f.count("DescribeEndpoint")
}

func apiErr(code string) error {
	return &smithy.OperationError{ServiceID: "fake", OperationName: "x", Err: &smithy.GenericAPIError{Code: code, Message: "fake " + code}}
}

func (f *fakeAWS) CreateThingType(ctx context.Context, in *iot.CreateThingTypeInput, _ ...func(*iot.Options)) (*iot.CreateThingTypeOutput, error) {
	if err := f.call("CreateThingType", ""); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.types[*in.ThingTypeName] {
		return nil, &types.ResourceAlreadyExistsException{Message: aws.String("exists")}
	}
	f.types[*in.ThingTypeName] = true
	return &iot.CreateThingTypeOutput{ThingTypeName: in.ThingTypeName}, nil
}

func (f *fakeAWS) CreateThing(ctx context.Context, in *iot.CreateThingInput, _ ...func(*iot.Options)) (*iot.CreateThingOutput, error) {
	if err := f.call("CreateThing", *in.ThingName); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	typ := aws.ToString(in.ThingTypeName)
	if typ != "" && !f.types[typ] {
		return nil, &types.ResourceNotFoundException{Message: aws.String("no such type")}
	}
	if cur, ok := f.things[*in.ThingName]; ok {
		if cur != typ {
			return nil, &types.ResourceAlreadyExistsException{Message: aws.String("exists with different attributes")}
		}
		return &iot.CreateThingOutput{ThingName: in.ThingName}, nil
	}
	f.things[*in.ThingName] = typ
	return &iot.CreateThingOutput{ThingName: in.ThingName}, nil
}

func (f *fakeAWS) DescribeThing(ctx context.Context, in *iot.DescribeThingInput, _ ...func(*iot.Options)) (*iot.DescribeThingOutput, error) {
	if err := f.call("DescribeThing", *in.ThingName); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	typ, ok := f.things[*in.ThingName]
	if !ok {
		return nil, &types.ResourceNotFoundException{Message: aws.String("no such thing")}
	}
	out := &iot.DescribeThingOutput{ThingName: in.ThingName}
	if typ != "" {
		out.ThingTypeName = aws.String(typ)
	}
	return out, nil
}

func (f *fakeAWS) GetThingShadow(ctx context.Context, in *GetThingShadowInput) (*GetThingShadowOutput, error) {
	if err := f.call("GetThingShadow", in.ThingName); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if in.ShadowName != "" {
		f.calls["GetThingShadow@"+in.ShadowName]++
	}
	sh := f.shadows[shadowKey(in.ThingName, in.ShadowName)]
	if sh == nil {
		return nil, apiErr("ResourceNotFoundException")
	}
	state := map[string]any{"reported": sh.reported}
	if sh.desired != nil {
		state["desired"] = sh.desired
	}
	b, _ := json.Marshal(map[string]any{"state": state, "version": sh.version, "timestamp": f.now})
	return &GetThingShadowOutput{Payload: b}, nil
}

func (f *fakeAWS) UpdateThingShadow(ctx context.Context, in *UpdateThingShadowInput) (*UpdateThingShadowOutput, error) {
	if err := f.call("UpdateThingShadow", in.ThingName); err != nil {
		return nil, err
	}
	if f.beforeUpdate != nil {
		f.beforeUpdate(in.ThingName)
	}
	var doc struct {
		State struct {
			Reported map[string]any `json:"reported"`
		} `json:"state"`
		Version *int64 `json:"version"`
	}
	if err := json.Unmarshal(in.Payload, &doc); err != nil {
		return nil, apiErr("InvalidRequestException")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if in.ShadowName != "" {
		f.calls["UpdateThingShadow@"+in.ShadowName]++
	}
	key := shadowKey(in.ThingName, in.ShadowName)
	sh := f.shadows[key]
	if doc.Version != nil && (sh == nil || sh.version != *doc.Version) {
		return nil, apiErr("ConflictException")
	}
	if sh == nil {
		sh = &fakeShadow{reported: map[string]any{}}
		f.shadows[key] = sh
	}
	mergePatch(sh.reported, doc.State.Reported)
	sh.version++
	f.now++
	b, _ := json.Marshal(map[string]any{"state": map[string]any{"reported": doc.State.Reported}, "version": sh.version, "timestamp": f.now})
	return &UpdateThingShadowOutput{Payload: b}, nil
}

func (f *fakeAWS) Publish(ctx context.Context, in *PublishInput) (*PublishOutput, error) {
	if err := f.call("Publish", in.Topic); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls["topic:"+in.Topic]++
	f.published = append(f.published, string(in.Payload))
	return &PublishOutput{}, nil
}

// mergePatch applies a JSON merge patch (RFC 7386) as AWS IoT merges reported state.
func mergePatch(dst, patch map[string]any) {
	for k, v := range patch {
		switch pv := v.(type) {
		case nil:
			delete(dst, k)
		case map[string]any:
			sub, ok := dst[k].(map[string]any)
			if !ok {
				sub = map[string]any{}
				dst[k] = sub
			}
			mergePatch(sub, pv)
			if len(sub) == 0 {
				delete(dst, k)
			}
		default:
			dst[k] = v
		}
	}
}

// state returns a thing's classic reported state as it is (coapgw keeps nothing of its own
// there), as compact JSON ("" if none).
func (f *fakeAWS) state(thing string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	sh := f.shadows[thing]
	if sh == nil {
		return ""
	}
	b, _ := json.Marshal(sh.reported)
	return string(b)
}

// setShadow replaces a thing's reported state (a foreign writer).
func (f *fakeAWS) setShadow(thing, reported string) {
	var r map[string]any
	if err := json.Unmarshal([]byte(reported), &r); err != nil {
		panic(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	sh := f.shadows[thing]
	if sh == nil {
		sh = &fakeShadow{}
		f.shadows[thing] = sh
	}
	sh.reported = r
	sh.version++
	f.now++
}

// shadowKey is the key of a thing's shadow in fakeAWS.shadows: the thing's name for the classic
// shadow, "thing#name" for a named one.
func shadowKey(thing, name string) string {
	if name == "" {
		return thing
	}
	return thing + "#" + name
}

// setDesired sets a shadow's desired state (someone else's: an application's).
func (f *fakeAWS) setDesired(thing, desired string) {
	var d map[string]any
	if err := json.Unmarshal([]byte(desired), &d); err != nil {
		panic(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.shadows[thing].desired = d
	f.shadows[thing].version++
}

func (f *fakeAWS) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fmt.Sprint(f.calls)
}

var _ iotDataAPI = (*fakeAWS)(nil)
