package dtlsserver

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pion/logging"
)

// pionLog is the logger factory every Conn gets: one logger for all, which passes pion's
// warnings and errors on to the server's log at debug level (the server logs what a handshake's
// end means itself) and drops the rest unformatted. pion's default factory, built anew for each
// Conn, reads six environment variables and writes errors to stderr: ~5 µs of a handshake.
type pionLog struct{ log *slog.Logger }

var _ logging.LoggerFactory = pionLog{}

func (p pionLog) NewLogger(string) logging.LeveledLogger { return p }

func (p pionLog) Trace(string)          {}
func (p pionLog) Tracef(string, ...any) {}
func (p pionLog) Debug(string)          {}
func (p pionLog) Debugf(string, ...any) {}
func (p pionLog) Info(string)           {}
func (p pionLog) Infof(string, ...any)  {}
func (p pionLog) Warn(msg string)       { p.log.Debug("pion dtls", "warn", msg) }
func (p pionLog) Error(msg string)      { p.log.Debug("pion dtls", "error", msg) }

func (p pionLog) Warnf(format string, args ...any) {
	if p.log.Enabled(context.Background(), slog.LevelDebug) {
		p.Warn(fmt.Sprintf(format, args...))
	}
}

func (p pionLog) Errorf(format string, args ...any) {
	if p.log.Enabled(context.Background(), slog.LevelDebug) {
		p.Error(fmt.Sprintf(format, args...))
	}
}
