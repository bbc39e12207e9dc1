package awsiot

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iot"

	"github.com/coapgw/coapgw/internal/processor"
)

// thingState is what the sink knows of a thing; immutable once cached.
type thingState struct {
	typ     string         // its thing type ("" = none, or unknown for a shadow without stamps)
	version int64          // its shadow's version; 0 = no shadow
	doc     *processor.Doc // its reported state with coapgw's per-leaf times
	desired int            // bytes of its desired state (compact JSON; 0 = none), as last read
	reg     int64          // its registry shadow's version (RegistryShadow); 0 = none
	legacy  bool           // its classic shadow still has an earlier version's reserved key
}

// thingCost estimates the heap a cached thing holds, in bytes: the cache's entry and state, and
// per property its node (key, time, value slice) and its key's and value's bytes. It is
// calibrated on the write path (a state merged from a batch, then compacted), the larger of the
// two; a state read from a shadow takes less (TestThingCostEstimate measures both).
func thingCost(th *thingState) int {
	return 300 + len(th.typ) + 120*th.doc.Properties() + th.doc.Size()
}

// knownCost estimates the heap of an Ordered sink's cached thing (name, type, entry).
func knownCost(k known) int { return 160 + len(k.typ) }

type flight struct {
	done chan struct{}
	err  error
}

// CachedThings is the number of things in the cache.
func (s *Sink) CachedThings() int { return s.things.Len() + s.known.Len() }

// CachedBytes is the estimated heap of the things in the cache (bounded by ThingCacheBytes).
func (s *Sink) CachedBytes() int { return s.things.Bytes() + s.known.Bytes() }

// thing returns what the sink knows of a thing, making sure it exists with type typ: from the
// cache, else from its shadow, else by creating it. A *permanentError says it cannot be used.
func (s *Sink) thing(ctx context.Context, typ, name string) (*thingState, error) {
	if th, ok := s.things.Get(name); ok {
		s.m.cacheHit.Inc()
		return th, s.checkType(name, typ, known{typ: th.typ})
	}
	s.m.cacheMiss.Inc()
	th, err := s.loadShadow(ctx, name)
	if err != nil {
		return nil, err
	}
	if th.typ != "" && th.typ != typ && !s.cfg.AdoptThings {
		// coapgw created it with another type: the registry has the last word.
		actual, exists, err := s.describe(ctx, name)
		if err != nil {
			return nil, err
		}
		if exists {
			th.typ = actual
			s.things.Add(name, th)
			if actual != typ {
				return nil, conflict(name, actual)
			}
			return th, nil
		}
	}
	if th.typ != typ && (th.typ == "" || !s.cfg.AdoptThings) {
		if err := s.ensureType(ctx, typ); err != nil {
			return nil, err
		}
		actual, err := s.createThing(ctx, name, typ)
		if err != nil {
			return nil, err
		}
		th.typ = actual
	}
	s.things.Add(name, th)
	if err := s.checkType(name, typ, known{typ: th.typ}); err != nil {
		return nil, err
	}
	return th, nil
}

func conflict(name, typ string) *permanentError {
	if typ == "" {
		return &permanentError{reason: fmt.Sprintf("thing %s exists without a thing type", name), label: "type_conflict"}
	}
	return &permanentError{reason: fmt.Sprintf("thing %s exists with type %s", name, typ), label: "type_conflict"}
}

// ensureType creates a thing type unless it is known to exist; concurrent callers for the same
// type share one call.
func (s *Sink) ensureType(ctx context.Context, typ string) error {
	if _, ok := s.types.Get(typ); ok {
		return nil
	}
	s.flightMu.Lock()
	if _, ok := s.types.Get(typ); ok {
		s.flightMu.Unlock()
		return nil
	}
	if f := s.flights[typ]; f != nil {
		s.flightMu.Unlock()
		select {
		case <-f.done:
			return f.err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f := &flight{done: make(chan struct{})}
	s.flights[typ] = f
	s.flightMu.Unlock()

	err := s.pace(ctx, s.typeBudget, "CreateThingType "+typ)
	if err == nil {
		_, err = s.iot.CreateThingType(ctx, &iot.CreateThingTypeInput{ThingTypeName: aws.String(typ), ThingTypeProperties: s.typeProperties(typ)})
		s.m.call("CreateThingType", err)
	}
	switch {
	case err == nil, hasCode(err, "ResourceAlreadyExistsException"):
		s.types.Add(typ, struct{}{})
	case deferral(err) != nil:
		f.err = fmt.Errorf("create thing type %s: %w", typ, err)
	default:
		f.err = rejected("create thing type "+typ, err)
	}
	s.flightMu.Lock()
	delete(s.flights, typ)
	s.flightMu.Unlock()
	close(f.done)
	return f.err
}

// createThing creates a thing of type typ and returns the type the thing has: typ, or the type
// of a thing that already existed with another configuration.
func (s *Sink) createThing(ctx context.Context, name, typ string) (string, error) {
	for attempt := 0; ; attempt++ {
		if err := s.pace(ctx, s.thingBudget, "CreateThing "+name); err != nil {
			return "", err
		}
		_, err := s.iot.CreateThing(ctx, &iot.CreateThingInput{ThingName: aws.String(name), ThingTypeName: aws.String(typ), AttributePayload: s.thingAttributes()})
		s.m.call("CreateThing", err)
		switch {
		case err == nil:
			return typ, nil
		case hasCode(err, "ResourceAlreadyExistsException"):
			actual, exists, err := s.describe(ctx, name)
			if err != nil {
				return "", err
			}
			if exists || attempt > 0 {
				return actual, nil
			}
		case hasCode(err, "ResourceNotFoundException") && attempt == 0:
			// The thing type was deleted since it was cached.
			s.types.Remove(typ)
			if err := s.ensureType(ctx, typ); err != nil {
				return "", err
			}
		default:
			return "", rejected("create thing "+name, err)
		}
	}
}

// describe returns a thing's type ("" for none) and whether the thing exists.
func (s *Sink) describe(ctx context.Context, name string) (typ string, exists bool, err error) {
	out, err := s.iot.DescribeThing(ctx, &iot.DescribeThingInput{ThingName: aws.String(name)})
	if err != nil && hasCode(err, "ResourceNotFoundException") {
		s.m.call("DescribeThing", nil)
		return "", false, nil
	}
	s.m.call("DescribeThing", err)
	if err != nil {
		return "", false, fmt.Errorf("describe thing %s: %w", name, classify(err))
	}
	return aws.ToString(out.ThingTypeName), true, nil
}
