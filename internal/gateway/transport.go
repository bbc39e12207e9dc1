package gateway

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"

	"github.com/coapgw/coapgw/internal/coapserver"
	"github.com/coapgw/coapgw/internal/credential"
	"github.com/coapgw/coapgw/internal/dtlsserver"
	"github.com/coapgw/coapgw/internal/registry"
)

// transport is a server devices reach: plain CoAP over UDP or CoAP over DTLS. Both feed the
// same device API (ingest) through their own exchange layer.
type transport interface {
	Listen() error
	Serve(ctx context.Context) error
	// Shutdown stops reading, waits for the requests in flight to be answered (until ctx ends)
	// and closes; the DTLS server also saves its sessions.
	Shutdown(ctx context.Context) error
	LocalAddr() netip.AddrPort
}

type namedTransport struct {
	name string
	transport
}

var (
	_ transport = (*coapserver.Server)(nil)
	_ transport = (*dtlsserver.Server)(nil)
)

// exchangeOptions are the exchange layer's settings, shared by both transports.
func (g *Gateway) exchangeOptions() coapserver.Options {
	return coapserver.Options{
		PiggybackDeadline: g.cfg.CoAP.PiggybackDeadline,
		DedupGlobalCap:    g.cfg.CoAP.DedupMaxEntries,
		DedupPerPeerCap:   g.cfg.CoAP.DedupPerPeer,
		MaxRequestBody:    int(g.cfg.Ingest.MaxPayload),
		BlockWise:         true, BlockSize: int(g.cfg.CoAP.BlockSize), BlockMaxBytes: int(g.cfg.CoAP.BlockMaxBytes),
		BlockPerPeer: g.cfg.CoAP.BlockPerPeer, BlockTimeout: g.cfg.CoAP.BlockTimeout, RetryAfter: g.cfg.Ingest.RetryAfter,
		MaxObservers: g.cfg.CoAP.MaxObservers, ObserveKeepAlive: g.cfg.CoAP.ObserveKeepAlive,
	}
}

// openCoAP binds the plain CoAP server.
func (g *Gateway) openCoAP() error {
	c := g.cfg
	srv, err := coapserver.New(coapserver.Config{
		Addr: c.CoAP.Addr, Sockets: c.CoAP.Sockets, SocketBytes: int(c.CoAP.SocketBuffer),
		MaxDatagram: max(16<<10, int(c.Ingest.MaxPayload)+2048),
		Exchange:    g.exchangeOptions(),
	}, g.ingest, g.log.With("component", "coap"), g.reg)
	if err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		return err
	}
	g.coap = srv
	g.ingest.AddNotifier(srv.Endpoint().Notify) // Observe: the downlink's notifications
	g.transports = append(g.transports, namedTransport{"coap", srv})
	return nil
}

// openDTLS binds the DTLS server; handshakes look keys up in the credential store. Like the
// plain CoAP server it first takes the port's lock (coapserver.LockPort), so that a second
// gateway on a DTLS port another one serves refuses to start with a clear message.
func (g *Gateway) openDTLS() error {
	c := g.cfg
	port, err := coapserver.ListenPort(c.DTLS.Addr)
	if err != nil {
		return fmt.Errorf("listen dtls %s: %w", c.DTLS.Addr, err)
	}
	lk := &portLock{}
	if port != 0 {
		if lk.release, err = coapserver.LockPort("dtls", c.DTLS.Addr, port); err != nil {
			return err
		}
	}
	if err := g.listenDTLS(lk); err != nil {
		lk.unlock()
		return err
	}
	return nil
}

// listenDTLS builds and binds the DTLS server, holding lk (taken here for a port 0 address).
func (g *Gateway) listenDTLS(lk *portLock) error {
	c := g.cfg
	state := c.DTLS.StateFile
	if state == "" {
		state = filepath.Join(c.Spool.DataDir, "dtls-sessions")
	}
	srv, err := dtlsserver.New(dtlsserver.Config{
		Addr: c.DTLS.Addr, PSK: dtlsserver.PSKFunc(credential.PSKFunc(g.creds)),
		MaxSessions: c.DTLS.MaxSessions, IdleTimeout: c.DTLS.IdleTimeout,
		HibernateAfter: c.DTLS.HibernateAfter, StateFile: state,
		MaxHandshakes: c.DTLS.MaxHandshakes, HandshakeTimeout: c.DTLS.HandshakeTimeout, RecheckInterval: c.DTLS.RecheckInterval,
		// A record longer than this is dropped whole (a cut one cannot be decrypted to answer
		// 4.13), so it must hold the largest payload with its CoAP and DTLS headers.
		MaxDatagram: max(2048, int(c.Ingest.MaxPayload)+1024),
	}, g.ingest, g.exchangeOptions(), g.log.With("component", "dtls"), g.reg)
	if err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		return err
	}
	if lk.release == nil { // port 0: lock the port the kernel chose
		if lk.release, err = coapserver.LockPort("dtls", c.DTLS.Addr, srv.LocalAddr().Port()); err != nil {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			_ = srv.Shutdown(ctx)
			return err
		}
	}
	g.dtls = srv
	g.ingest.AddNotifier(srv.Endpoint().Notify)
	g.transports = append(g.transports, namedTransport{"dtls", lockedTransport{srv, lk}})
	return nil
}

// portLock is a held port lock (coapserver.LockPort), released once.
type portLock struct {
	once    sync.Once
	release func()
}

func (l *portLock) unlock() {
	l.once.Do(func() {
		if l.release != nil {
			l.release()
		}
	})
}

// lockedTransport is a transport that releases its port's lock once it is shut down.
type lockedTransport struct {
	transport
	lk *portLock
}

func (t lockedTransport) Shutdown(ctx context.Context) error {
	defer t.lk.unlock()
	return t.transport.Shutdown(ctx)
}

// closeTransports closes what openCoAP and openDTLS bound, when New fails after them.
func (g *Gateway) closeTransports() {
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // nothing is in flight before Serve
	for _, t := range g.transports {
		_ = t.Shutdown(ctx)
	}
	g.transports = nil
}

// openCredentials opens the configured credential source: per-device keys in the local
// registry, or fleet keys; nil without one.
func (g *Gateway) openCredentials() (credential.Store, error) {
	cr := g.cfg.Credentials
	if !cr.Configured() {
		return nil, nil
	}
	var reg *registry.Registry
	if g.local != nil {
		reg = g.local.reg
	}
	store, err := credential.Open(context.Background(), credential.Config{
		KeyFile: cr.KeyFile, Key: cr.Key,
		FleetKeyFile: cr.FleetKeyFile, FleetKey: cr.FleetKey, FleetKeySecretARN: cr.FleetKeySecretARN,
		RevocationFile: cr.RevocationFile,
	}, credential.Deps{Registry: reg, AWS: g.awsConfig, Logger: g.log.With("component", "credential")})
	if err != nil {
		return nil, fmt.Errorf("credentials: %w", err)
	}
	return store, nil
}

// awsConfig is the SDK's default chain, pointed at --aws-endpoint when set (emulators).
func (g *Gateway) awsConfig(ctx context.Context) (aws.Config, error) {
	cfg, err := awsconfig.LoadDefaultConfig(ctx)
	if err != nil {
		return cfg, fmt.Errorf("load AWS config: %w", err)
	}
	if ep := g.cfg.AWS.Endpoint; ep != "" {
		cfg.BaseEndpoint = &ep
	}
	return cfg, nil
}
