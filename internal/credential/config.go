package credential

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/coapgw/coapgw/internal/registry"
)

// Config selects the credential source: Local when an operator key is set, Fleet when a fleet
// master key is, none (Open returns nil) when neither is. Both at once is an error.
type Config struct {
	KeyFile string // operator key file (key_file, --key-file, COAPGW_KEY_FILE)
	Key     string // operator key text (COAPGW_KEY); KeyFile wins

	FleetKeyFile      string // fleet master key file (fleet_key_file, --fleet-key-file, COAPGW_FLEET_KEY_FILE)
	FleetKey          string // fleet master key text (COAPGW_FLEET_KEY)
	FleetKeySecretARN string // Secrets Manager secret holding the master key (fleet_key_secret_arn)

	RevocationFile  string        // fleet: identities revoked, one a line (revocation_file)
	RevocationCheck time.Duration // how often the revocation file is checked; default 1s
	Refresh         time.Duration // local: how often the registry is checked for changes; default 2s
}

// Local reports whether the config selects per-device keys in the registry.
func (c Config) Local() bool { return c.KeyFile != "" || c.Key != "" }

// Fleet reports whether the config selects fleet keys.
func (c Config) Fleet() bool {
	return c.FleetKeyFile != "" || c.FleetKey != "" || c.FleetKeySecretARN != ""
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.Local() && c.Fleet() {
		errs = append(errs, errors.New("credentials: an operator key (per-device keys) and a fleet master key are both set; choose one source"))
	}
	n := 0
	for _, s := range []string{c.FleetKeyFile, c.FleetKey, c.FleetKeySecretARN} {
		if s != "" {
			n++
		}
	}
	if n > 1 {
		errs = append(errs, errors.New("credentials: set the fleet master key one way: fleet_key_file, COAPGW_FLEET_KEY or fleet_key_secret_arn"))
	}
	if c.RevocationFile != "" && !c.Fleet() {
		errs = append(errs, errors.New("credentials: revocation_file is for fleet keys (per-device keys are revoked with coapgw device revoke)"))
	}
	if c.RevocationCheck < 0 || c.Refresh < 0 {
		errs = append(errs, errors.New("credentials: revocation_check and credential_refresh must not be negative"))
	}
	return errors.Join(errs...)
}

// Deps is what Open may need besides the config.
type Deps struct {
	Registry *registry.Registry                        // Local: the local registry
	AWS      func(context.Context) (aws.Config, error) // Fleet with FleetKeySecretARN
	Logger   *slog.Logger
}

// Open builds the configured source: *Local, *Fleet, or nil (no error) when none is configured.
// It does I/O: reads key files, loads the registry's credentials, asks Secrets Manager.
func Open(ctx context.Context, cfg Config, deps Deps) (Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	switch {
	case cfg.Local():
		key, err := LoadKey(cfg.KeyFile, cfg.Key, "COAPGW_KEY", OperatorKeyLen, OperatorKeyLen)
		if err != nil {
			return nil, fmt.Errorf("operator key: %w", err)
		}
		sealer, err := NewSealer(key)
		if err != nil {
			return nil, err
		}
		if deps.Registry == nil {
			return nil, errors.New("credentials: per-device keys need the local registry")
		}
		l, err := NewLocal(ctx, deps.Registry, sealer, LocalOptions{Refresh: cfg.Refresh, Logger: deps.Logger})
		if err != nil {
			return nil, err
		}
		return l, nil
	case cfg.Fleet():
		master, err := LoadMaster(ctx, cfg, deps.AWS)
		if err != nil {
			return nil, err
		}
		var rev Revoker
		if cfg.RevocationFile != "" {
			rf, err := OpenRevocationFile(cfg.RevocationFile, cfg.RevocationCheck, nil, deps.Logger)
			if err != nil {
				return nil, err
			}
			rev = rf
		}
		f, err := NewFleet(master, rev)
		if err != nil {
			return nil, err
		}
		return f, nil
	}
	return nil, nil
}

// LoadMaster reads the fleet master key from the source cfg names; awsCfg is called only for a
// secret ARN.
func LoadMaster(ctx context.Context, cfg Config, awsCfg func(context.Context) (aws.Config, error)) ([]byte, error) {
	if cfg.FleetKeySecretARN != "" {
		if awsCfg == nil {
			return nil, errors.New("fleet master key: a secret ARN needs an AWS configuration")
		}
		ac, err := awsCfg(ctx)
		if err != nil {
			return nil, fmt.Errorf("fleet master key: %w", err)
		}
		return MasterFromSecret(ctx, ac, cfg.FleetKeySecretARN)
	}
	key, err := LoadKey(cfg.FleetKeyFile, cfg.FleetKey, "COAPGW_FLEET_KEY", MinMasterLen, 0)
	if err != nil {
		return nil, fmt.Errorf("fleet master key: %w", err)
	}
	if key == nil {
		return nil, errors.New("fleet master key: not set (fleet_key_file, COAPGW_FLEET_KEY or fleet_key_secret_arn)")
	}
	return key, nil
}
