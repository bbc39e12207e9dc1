// Package awstest runs the moto server (a local emulator of AWS APIs: SQS, IoT, IoT data plane) for
// tests, and builds AWS SDK configurations that talk to it.
//
// Start installs moto if needed (`python3 -m pip install --quiet 'moto[server]'`, once per test
// binary, only when `python3 -c "import moto.server"` fails), starts moto's server on 127.0.0.1
// and a free port (moto_server.py: `python3 -m moto.server` with shadow updates made atomic, as
// AWS IoT's are, and SQS deletes that cannot lose a message sent meanwhile, as SQS's cannot) and
// waits until it answers. If moto cannot be installed or started the test is
// skipped, or fails when COAPGW_REQUIRE_PEERS is set (as the test command sets it), so CI
// never passes by skipping.
//
// Stop and Restart simulate an outage: Restart brings moto back on the same port, so SDK clients
// and queue URLs keep working. Moto keeps no state across a restart: queues (and their messages)
// are gone, so a test recreates its queues after Restart and must account for messages that were
// in the queue when moto stopped.
//
// AWSConfig returns an aws.Config with static test credentials (test/test), region us-east-1 and
// BaseEndpoint set to moto, independent of the machine's AWS_* variables and shared config files.
// These credentials exist for tests only; the gateway itself uses the SDK default chain.
package awstest

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/smithy-go/middleware"
)

// Region is the region of every config AWSConfig returns.
const Region = "us-east-1"

// motoServer is moto's server with AWS IoT's atomic versioned shadow updates and SQS deletes
// that keep concurrent sends (see the script).
//
//go:embed moto_server.py
var motoServer string

// Moto is one moto server process for a test.
type Moto struct {
	t       testing.TB
	port    int
	logPath string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has exited
	trs    []*http.Transport
}

var (
	installOnce sync.Once
	installErr  error
)

// Install makes sure moto's server is importable, installing it with pip if it is not.
func Install() error {
	installOnce.Do(func() {
		if exec.Command("python3", "-c", "import moto.server").Run() == nil {
			return
		}
		args := []string{"-m", "pip", "install", "--quiet", "moto[server]"}
		out, err := exec.Command("python3", args...).CombinedOutput()
		if err != nil && bytes.Contains(out, []byte("externally-managed-environment")) {
			out, err = exec.Command("python3", append(args, "--break-system-packages")...).CombinedOutput()
		}
		if err != nil {
			installErr = fmt.Errorf("pip install moto[server]: %v\n%s", err, out)
			return
		}
		if out, err := exec.Command("python3", "-c", "import moto.server").CombinedOutput(); err != nil {
			installErr = fmt.Errorf("moto installed but not importable: %v\n%s", err, out)
		}
	})
	return installErr
}

// skipper is the part of testing.TB that unavailable uses.
type skipper interface {
	Helper()
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
}

// unavailable skips the test, or fails it when peers are required.
func unavailable(t skipper, format string, args ...any) {
	t.Helper()
	if v := os.Getenv("COAPGW_REQUIRE_PEERS"); v != "" && v != "0" {
		t.Fatalf("moto required (COAPGW_REQUIRE_PEERS=%s): "+format, append([]any{v}, args...)...)
		return
	}
	t.Skipf("moto unavailable: "+format, args...)
}

// Start runs a moto server on a free loopback port until the test ends.
func Start(t testing.TB) *Moto {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		unavailable(t, "no python3: %v", err)
	}
	if err := Install(); err != nil {
		unavailable(t, "%v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	m := &Moto{t: t, port: port, logPath: filepath.Join(t.TempDir(), "moto.log")}
	t.Cleanup(func() {
		m.Stop()
		m.closeIdle()
		if t.Failed() {
			if b, err := os.ReadFile(m.logPath); err == nil {
				if len(b) > 4000 {
					b = b[len(b)-4000:]
				}
				t.Logf("moto log (tail):\n%s", b)
			}
		}
	})
	if err := m.start(); err != nil {
		unavailable(t, "%v", err)
	}
	return m
}

// Endpoint is moto's base URL, http://127.0.0.1:<port>.
func (m *Moto) Endpoint() string { return "http://127.0.0.1:" + strconv.Itoa(m.port) }

func (m *Moto) start() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		return nil
	}
	var lastErr error
	for try := 0; try < 3; try++ { // the port may take a moment to be free again after Stop
		logf, err := os.OpenFile(m.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		cmd := exec.Command("python3", "-c", motoServer, "-H", "127.0.0.1", "-p", strconv.Itoa(m.port))
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.Env = append(os.Environ(), "PYTHONUNBUFFERED=1")
		if err := cmd.Start(); err != nil {
			logf.Close()
			return fmt.Errorf("start moto: %w", err)
		}
		exited := make(chan struct{})
		go func() {
			cmd.Wait()
			logf.Close()
			close(exited)
		}()
		if lastErr = waitReady(m.Endpoint(), exited, 60*time.Second); lastErr == nil {
			m.cmd, m.exited = cmd, exited
			return nil
		}
		cmd.Process.Kill()
		<-exited
		time.Sleep(200 * time.Millisecond)
	}
	return lastErr
}

// waitReady polls moto until it answers, the process exits or the timeout passes.
func waitReady(endpoint string, exited <-chan struct{}, timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errors.New("moto exited while starting (see its log)")
		default:
		}
		resp, err := client.Get(endpoint + "/moto-api/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("moto did not answer on %s within %v", endpoint, timeout)
}

// Stop ends the moto process (SIGTERM, then SIGKILL after 5 s) and waits for it. Idempotent.
func (m *Moto) Stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return
	}
	m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.exited:
	case <-time.After(5 * time.Second):
		m.cmd.Process.Kill()
		<-m.exited
	}
	m.cmd, m.exited = nil, nil
}

// Restart stops moto (if running) and starts it again on the same port, with no state: recreate
// queues afterwards.
func (m *Moto) Restart() {
	m.t.Helper()
	m.Stop()
	if err := m.start(); err != nil {
		m.t.Fatalf("restart moto: %v", err)
	}
}

// AWSConfig returns an SDK configuration for moto: static test credentials, region us-east-1,
// BaseEndpoint = Endpoint(), the SDK's default transport settings. It is built directly, not by
// config.LoadDefaultConfig, so nothing on the machine (AWS_* variables, shared config files, a CA
// bundle) leaks into tests. Its idle connections are closed when the test ends.
func (m *Moto) AWSConfig(ctx context.Context) aws.Config {
	tr := awshttp.NewBuildableClient().GetTransport() // a copy of the SDK's default transport
	m.mu.Lock()
	m.trs = append(m.trs, tr)
	m.mu.Unlock()
	cfg := aws.NewConfig()
	cfg.Region = Region
	cfg.Credentials = aws.NewCredentialsCache(credentials.NewStaticCredentialsProvider("test", "test", ""))
	cfg.BaseEndpoint = aws.String(m.Endpoint())
	cfg.HTTPClient = &http.Client{Transport: tr}
	return *cfg
}

func (m *Moto) closeIdle() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, tr := range m.trs {
		tr.CloseIdleConnections()
	}
}

// CreateQueue creates an SQS queue (attributes may be nil) and returns its URL. Creating an
// existing queue with the same attributes returns the same URL, so it also serves after Restart.
func (m *Moto) CreateQueue(ctx context.Context, name string, attrs map[string]string) string {
	m.t.Helper()
	out, err := sqs.NewFromConfig(m.AWSConfig(ctx)).CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: &name, Attributes: attrs})
	if err != nil {
		m.t.Fatalf("create queue %s: %v", name, err)
	}
	return aws.ToString(out.QueueUrl)
}

// Calls counts SDK operations made with a config passed to CountCalls.
type Calls struct {
	mu       sync.Mutex
	calls    map[string]int
	attempts map[string]int
}

// CountCalls adds middleware to cfg that counts every operation (Initialize step: once per API
// call, whatever the retries) and every attempt (Finalize step, after the retry middleware: once
// per HTTP request). Clients made from cfg afterwards are counted.
func CountCalls(cfg *aws.Config) *Calls {
	c := &Calls{calls: make(map[string]int), attempts: make(map[string]int)}
	cfg.APIOptions = append(cfg.APIOptions, func(st *middleware.Stack) error {
		err := st.Initialize.Add(middleware.InitializeMiddlewareFunc("coapgwCountCalls",
			func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
				c.add(c.calls, middleware.GetOperationName(ctx))
				return next.HandleInitialize(ctx, in)
			}), middleware.After) // at the end of the step: the operation name is set by then
		if err != nil {
			return err
		}
		return st.Finalize.Add(middleware.FinalizeMiddlewareFunc("coapgwCountAttempts",
			func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
				c.add(c.attempts, middleware.GetOperationName(ctx))
				return next.HandleFinalize(ctx, in)
			}), middleware.After)
	})
	return c
}

func (c *Calls) add(m map[string]int, op string) {
	c.mu.Lock()
	m[op]++
	c.mu.Unlock()
}

// Count is the number of calls of operation op (e.g. "SendMessageBatch").
func (c *Calls) Count(op string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[op]
}

// Total is the number of calls of all the operations ops.
func (c *Calls) Total(ops ...string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, op := range ops {
		n += c.calls[op]
	}
	return n
}

// String lists the calls by operation, for test logs.
func (c *Calls) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprint(c.calls)
}

// Attempts is the number of HTTP attempts of operation op, retries included.
func (c *Calls) Attempts(op string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.attempts[op]
}
