package dtlsserver

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/coapgw/coapgw/internal/dtlsrecord"
)

// stateVersion names the state file's format; a file of another version is not loaded.
// Version 2 added key_sha256: a session of a version-1 file could not be checked against key
// rotation (recheck.go), so such a file is not loaded.
const stateVersion = "coapgw-dtls-sessions-2"

// stateFile is what Shutdown writes and Listen reads: the established sessions, each with the
// pion state that resumes it (keys and record counters: the file is secret and used once).
type stateFile struct {
	Version  string         `json:"version"`
	Saved    time.Time      `json:"saved"`
	Sessions []savedSession `json:"sessions"`
}

type savedSession struct {
	Addr     netip.AddrPort `json:"addr"`
	CID      []byte         `json:"cid"`
	Identity string         `json:"identity"`
	Last     int64          `json:"last"` // unix nanoseconds of the last datagram
	State    []byte         `json:"state"`
	KeySum   []byte         `json:"key_sha256"` // of the PSK it was established with
}

// save writes the exported sessions to Config.StateFile, atomically (a temporary file, fsync,
// rename).
func (s *Server) save(saved []savedSession) error {
	f := stateFile{Version: stateVersion, Saved: time.Now(), Sessions: saved}
	b, err := json.Marshal(&f)
	if err != nil {
		return fmt.Errorf("encode dtls sessions: %w", err)
	}
	if err := writeFileAtomic(s.cfg.StateFile, b); err != nil {
		return fmt.Errorf("save dtls sessions: %w", err)
	}
	s.m.saved.Add(float64(len(f.Sessions)))
	s.log.Info("dtls sessions saved", "file", s.cfg.StateFile, "sessions", len(f.Sessions))
	return nil
}

func writeFileAtomic(name string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(name), filepath.Base(name)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), name)
}

// loadState reads the sessions saved in name and removes the file: a saved session must be
// resumed at most once, or record sequence numbers (and so nonces) would repeat. A missing file
// is no error.
func loadState(name string) ([]savedSession, error) {
	b, err := os.ReadFile(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if err := os.Remove(name); err != nil {
		return nil, fmt.Errorf("remove %s (sessions must be resumed once): %w", name, err)
	}
	var f stateFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("decode %s: %w", name, err)
	}
	if f.Version != stateVersion {
		return nil, fmt.Errorf("%s: version %q, want %q", name, f.Version, stateVersion)
	}
	return f.Sessions, nil
}

// restore registers the loaded sessions that are not idle past IdleTimeout, up to MaxSessions,
// hibernated: each wakes on its first datagram.
func (s *Server) restore(saved []savedSession) {
	cutoff := time.Now().Add(-s.cfg.IdleTimeout).UnixNano()
	n := 0
	for _, sv := range saved {
		if sv.Last < cutoff || len(sv.CID) != cidLen || !sv.Addr.IsValid() {
			continue
		}
		st, err := dtlsrecord.ParseState(sv.State)
		var rec *dtlsrecord.Conn
		if err == nil {
			rec, err = dtlsrecord.NewAsleep(st)
		}
		if err != nil {
			s.log.Warn("dtls session not restored", "peer", sv.Addr, "err", err)
			continue
		}
		s.mu.Lock()
		if s.established >= s.cfg.MaxSessions || s.byCID[string(sv.CID)] != nil {
			s.mu.Unlock()
			continue
		}
		ss := s.newSession(sv.Addr, string(sv.CID))
		ss.last.Store(sv.Last)
		ss.identity = sv.Identity
		if len(sv.KeySum) == sha256.Size {
			ss.keySum.Store((*[sha256.Size]byte)(sv.KeySum))
		}
		ss.rec = rec
		ss.est.Store(true)
		s.established++
		s.mu.Unlock()
		s.hibernated.Add(1)
		n++
	}
	s.m.restored.Add(float64(n))
	if len(saved) > 0 {
		s.log.Info("dtls sessions restored", "sessions", n, "saved", len(saved))
	}
}
