package awsiot

import (
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot/types"
)

// Registry entries as the 2018 CoAP-to-AWS-IoT processor made them (Config.SeedShadow,
// --seed-shadow; docs/migrate-from-2018.md): a thing type's description is its name, and a new
// thing gets the attribute FirstSeen. That processor wrote the literal "NOW" there; the sink
// writes when it created the thing, in UTC, RFC 3339 to the second (2026-12-06T06:14:58Z:
// characters a thing attribute may hold). The reported-state keys online, uuid and type are
// the processor's (processor.Config.SeedShadow), so that every sink writes them alike.
// Without the option CreateThingType and CreateThing carry nothing but the names.

// FirstSeenAttribute is the thing attribute --seed-shadow sets on the things it creates.
const FirstSeenAttribute = "FirstSeen"

// typeProperties is the thing type's properties for CreateThingType: nil, or with
// Config.SeedShadow the description typ.
func (s *Sink) typeProperties(typ string) *types.ThingTypeProperties {
	if !s.cfg.SeedShadow {
		return nil
	}
	return &types.ThingTypeProperties{ThingTypeDescription: aws.String(typ)}
}

// thingAttributes is a new thing's attributes for CreateThing: nil, or with Config.SeedShadow
// FirstSeen, the time now.
func (s *Sink) thingAttributes() *types.AttributePayload {
	if !s.cfg.SeedShadow {
		return nil
	}
	return &types.AttributePayload{Attributes: map[string]string{
		FirstSeenAttribute: s.now().UTC().Format(time.RFC3339),
	}}
}
