package registry

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/coapgw/coapgw/internal/processor"
)

func TestCredentials(t *testing.T) {
	e := newEnv(t, Options{})
	ctx := t.Context()
	if err := e.r.AddCredential(ctx, "sensor", "dev-1", []byte("sealed-1")); err != nil {
		t.Fatal(err)
	}
	if err := e.r.AddCredential(ctx, "sensor", "dev-1", []byte("sealed-2")); !errors.Is(err, ErrCredentialExists) {
		t.Fatalf("second add: %v", err)
	}
	// The thing and its type exist, counted, and take records like any other.
	c, err := e.r.Counts(ctx)
	if err != nil || c.Things != 1 || c.ThingTypes != 1 {
		t.Fatalf("counts after add: %+v, %v", c, err)
	}
	e.send(rec("sensor", "dev-1", 1001, `{"t":1}`))
	th, err := e.r.Thing(ctx, "dev-1")
	if err != nil || th.Type != "sensor" || th.Messages != 1 {
		t.Fatalf("thing: %+v, %v", th, err)
	}
	// A thing that exists with another type cannot get a credential under this one.
	e.send(rec("meter", "m-1", 1002, `{"t":1}`))
	if err := e.r.AddCredential(ctx, "sensor", "m-1", []byte("x")); err == nil || !strings.Contains(err.Error(), "exists with type meter") {
		t.Fatalf("add under another type: %v", err)
	}
	if err := e.r.AddCredential(ctx, "meter", "m-1", []byte("sealed-m")); err != nil {
		t.Fatal(err)
	}
	if c, _ := e.r.Counts(ctx); c.Things != 2 || c.ThingTypes != 2 {
		t.Fatalf("counts: %+v, an existing thing counted again", c)
	}

	gen0, _ := e.r.CredentialGeneration(ctx)
	if err := e.r.RevokeCredential(ctx, "sensor/dev-1"); err != nil {
		t.Fatal(err)
	}
	got, err := e.r.Credential(ctx, "sensor/dev-1")
	if err != nil || got.Revoked.IsZero() || string(got.SealedKey) != "sealed-1" || got.Thing != "dev-1" || got.Type != "sensor" {
		t.Fatalf("after revoke: %+v, %v", got, err)
	}
	if b, _ := e.r.CredentialBound(ctx, "sensor", "dev-1"); !b {
		t.Fatal("a revoked credential no longer binds")
	}
	if err := e.r.RotateCredential(ctx, "sensor/dev-1", []byte("sealed-3")); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.r.Credential(ctx, "sensor/dev-1"); !got.Revoked.IsZero() || string(got.SealedKey) != "sealed-3" {
		t.Fatalf("after rotate: %+v", got)
	}
	if gen, _ := e.r.CredentialGeneration(ctx); gen != gen0+2 {
		t.Fatalf("generation %d after two changes from %d", gen, gen0)
	}
	for _, err := range []error{
		e.r.RevokeCredential(ctx, "sensor/nope"), e.r.RotateCredential(ctx, "sensor/nope", nil),
		func() error { _, err := e.r.Credential(ctx, "sensor/nope"); return err }(),
	} {
		if !errors.Is(err, ErrNoCredential) {
			t.Errorf("unknown identity: %v", err)
		}
	}
	list, err := e.r.Credentials(ctx)
	if err != nil || len(list) != 2 || list[0].Identity != "meter/m-1" || list[1].Identity != "sensor/dev-1" {
		t.Fatalf("list: %+v, %v", list, err)
	}
	if b, _ := e.r.CredentialBound(ctx, "sensor", "dev-2"); b {
		t.Fatal("a thing without a credential is bound")
	}
}

// TestCredentialTypeFromOtherProcess: a thing type created by another process (coapgw device
// add) after this registry loaded its types does not break Apply.
func TestCredentialTypeFromOtherProcess(t *testing.T) {
	e := newEnv(t, Options{})
	e.send(rec("sensor", "dev-1", 1001, `{"t":1}`))
	other, err := Open(e.path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.AddCredential(t.Context(), "valve", "v-1", []byte("k")); err != nil {
		t.Fatal(err)
	}
	for _, o := range e.apply(e.batch(rec("valve", "v-2", 1002, `{"t":1}`), rec("valve", "v-1", 1003, `{"t":2}`))) {
		if o.Result != processor.Applied {
			t.Fatalf("%v %s", o.Result, o.Reason)
		}
	}
	types, err := e.r.ThingTypes(t.Context())
	if err != nil || len(types) != 2 {
		t.Fatalf("types: %+v, %v", types, err)
	}
}

// TestRegistryFileModes: the database and its WAL and SHM files are 0600 whatever the umask,
// and a file made wider by hand is narrowed at open.
func TestRegistryFileModes(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := t.TempDir()
	path := filepath.Join(dir, "registry.db")
	r, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.AddCredential(t.Context(), "sensor", "dev-1", []byte("k")); err != nil {
		t.Fatal(err)
	}
	check := func() {
		t.Helper()
		for _, p := range []string{path, path + "-wal", path + "-shm"} {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if m := fi.Mode().Perm(); m != 0o600 {
				t.Errorf("%s: mode %o, want 600", filepath.Base(p), m)
			}
		}
	}
	check()
	r.Close()
	os.Chmod(path, 0o644)
	r, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	check()
}
