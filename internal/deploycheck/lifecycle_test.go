package deploycheck

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awssqs "github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/coapgw/coapgw/internal/awstest"
	"github.com/coapgw/coapgw/internal/coapmsg"
	"github.com/coapgw/coapgw/internal/coaptest"
	"github.com/coapgw/coapgw/internal/envelope"
)

// TestLifecycleDrain runs the Terraform deployment's scale-in path for real, as far as it can
// run off EC2: deploy/systemd/coapgw-lifecycle (the script cloud-init installs) against moto's
// Auto Scaling and SQS, the fake instance metadata of testdata/lifecycle/moto_lifecycle.py, and
// the real coapgw binary.
//
// A gateway whose queue is unreachable acknowledges records with 2.04 that stay in its spool.
// The lifecycle script keeps waiting while the instance is InService; when the metadata says
// Terminated it stops the gateway and drains the spool (COAPGW_DRAIN_CMD stands in for
// `systemctl start coapgw-drain`, whose Conflicts= stops coapgw.service: here a SIGTERM, then
// `coapgw drain`), and completes the lifecycle action. Then every acknowledged record is in SQS,
// the gateway is gone and moto reports the instance Terminating:Proceed.
func TestLifecycleDrain(t *testing.T) {
	for _, tool := range []string{"bash", "aws", "python3"} {
		if _, err := exec.LookPath(tool); err != nil {
			missingPeer(t, tool+" not installed")
		}
	}
	if err := awstest.Install(); err != nil {
		missingPeer(t, "moto: "+err.Error())
	}
	root := filepath.Join("..", "..")
	dir := t.TempDir()
	bin := filepath.Join(dir, "coapgw")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/coapgw/coapgw/cmd/coapgw").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	motoPort, imdsPort, deadPort := freePort(t), freePort(t), freePort(t)
	moto := exec.Command("python3", filepath.Join("testdata", "lifecycle", "moto_lifecycle.py"), strconv.Itoa(motoPort), strconv.Itoa(imdsPort))
	var motoLog bytes.Buffer
	moto.Stdout, moto.Stderr = &motoLog, &motoLog
	if err := moto.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { moto.Process.Kill(); moto.Wait() })
	endpoint := "http://127.0.0.1:" + strconv.Itoa(motoPort)
	imds := "http://127.0.0.1:" + strconv.Itoa(imdsPort)
	waitHTTP(t, endpoint+"/moto-api/", &motoLog)

	env := append(os.Environ(), "AWS_ACCESS_KEY_ID=test", "AWS_SECRET_ACCESS_KEY=test", "AWS_REGION=us-east-1",
		"AWS_DEFAULT_REGION=us-east-1", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null")
	awsCLI := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("aws", append([]string{"--endpoint-url", endpoint, "--output", "text"}, args...)...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("aws %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	const group, hook = "coapgw-gateway", "coapgw-drain" // as gateways.tf names them
	awsCLI("autoscaling", "create-launch-configuration", "--launch-configuration-name", "coapgw", "--image-id", "ami-12c6146b", "--instance-type", "t4g.small")
	awsCLI("autoscaling", "create-auto-scaling-group", "--auto-scaling-group-name", group, "--launch-configuration-name", "coapgw",
		"--min-size", "1", "--max-size", "1", "--desired-capacity", "1", "--availability-zones", "us-east-1a")
	awsCLI("autoscaling", "put-lifecycle-hook", "--auto-scaling-group-name", group, "--lifecycle-hook-name", hook,
		"--lifecycle-transition", "autoscaling:EC2_INSTANCE_TERMINATING", "--heartbeat-timeout", "900", "--default-result", "CONTINUE")
	instanceState := func() (string, string) {
		f := strings.Fields(awsCLI("autoscaling", "describe-auto-scaling-instances", "--query", "AutoScalingInstances[0].[InstanceId,LifecycleState]"))
		if len(f) != 2 {
			t.Fatalf("describe-auto-scaling-instances: %q", f)
		}
		return f[0], f[1]
	}
	instance, _ := instanceState()
	setIMDS(t, imds, "instance="+instance+"&state=InService")

	sqsClient := awssqs.NewFromConfig(aws.Config{Region: "us-east-1", BaseEndpoint: aws.String(endpoint),
		Credentials: credentials.NewStaticCredentialsProvider("test", "test", "")})
	ctx := t.Context()
	q, err := sqsClient.CreateQueue(ctx, &awssqs.CreateQueueInput{QueueName: aws.String("coapgw")})
	if err != nil {
		t.Fatal(err)
	}
	queue := aws.ToString(q.QueueUrl)

	// The gateway: SQS unreachable, so what devices send stays in the spool.
	dataDir := filepath.Join(dir, "data")
	coapAddr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(freeUDPPort(t)))
	httpAddr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	gw := exec.Command(bin, "serve", "--data-dir", dataDir, "--gateway-id", "i-0123456789abcdef0", "--queue", queue,
		"--aws-endpoint", "http://127.0.0.1:"+strconv.Itoa(deadPort), "--coap-addr", coapAddr.String(), "--http-addr", httpAddr)
	gw.Env = env
	var gwLog bytes.Buffer
	gw.Stderr = &gwLog
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	gwDone := make(chan error, 1)
	go func() { gwDone <- gw.Wait() }()
	// Cleanup kills whatever still runs; it does not read ProcessState, which Wait writes in
	// another goroutine, and does not wait for a gwDone already read.
	t.Cleanup(func() { _ = gw.Process.Kill() })
	waitHTTP(t, "http://"+httpAddr+"/readyz", &gwLog)
	c, err := coaptest.Dial(coapAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const records = 25
	for i := range records {
		resp, err := c.Post(fmt.Sprintf("/meter/dev-%d", i%4), fmt.Sprintf(`{"i":%d}`, i))
		if err != nil || resp.Code != coapmsg.Changed {
			t.Fatalf("post %d: %v %+v\n%s", i, err, resp, &gwLog)
		}
	}
	if n := len(receiveAll(t, sqsClient, queue, 2*time.Second)); n != 0 {
		t.Fatalf("%d records reached SQS before the drain; the queue should have been unreachable", n)
	}

	// The drain command: what `systemctl start coapgw-drain` does on the instance.
	drain := filepath.Join(dir, "drain.sh")
	script := fmt.Sprintf("#!/bin/sh\nkill -TERM %d\nwhile kill -0 %d 2>/dev/null; do sleep 0.1; done\nexec %q drain --data-dir %q --queue %q --aws-endpoint %q\n",
		gw.Process.Pid, gw.Process.Pid, bin, dataDir, queue, endpoint)
	if err := os.WriteFile(drain, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	lc := exec.Command("bash", filepath.Join(root, "deploy", "systemd", "coapgw-lifecycle"))
	lc.Env = append(env, "COAPGW_ASG_NAME="+group, "COAPGW_LIFECYCLE_HOOK="+hook, "COAPGW_IMDS="+imds,
		"COAPGW_LIFECYCLE_POLL=0.2", "COAPGW_DRAIN_CMD="+drain, "COAPGW_AWS_ENDPOINT_ARGS=--endpoint-url "+endpoint)
	var lcLog bytes.Buffer
	lc.Stdout, lc.Stderr = &lcLog, &lcLog
	if err := lc.Start(); err != nil {
		t.Fatal(err)
	}
	lcDone := make(chan error, 1)
	go func() { lcDone <- lc.Wait() }()
	t.Cleanup(func() { _ = lc.Process.Kill() })

	// InService: the script waits, the gateway keeps serving.
	time.Sleep(time.Second)
	select {
	case err := <-lcDone:
		t.Fatalf("the lifecycle script ended while the instance was in service: %v\n%s", err, &lcLog)
	case err := <-gwDone:
		t.Fatalf("the gateway stopped while the instance was in service: %v\n%s", err, &gwLog)
	default:
	}

	setIMDS(t, imds, "state=Terminated")
	select {
	case err := <-lcDone:
		if err != nil {
			t.Fatalf("lifecycle script: %v\n%s\ngateway:\n%s", err, &lcLog, &gwLog)
		}
	case <-time.After(90 * time.Second):
		t.Fatalf("lifecycle script still running after 90s\n%s", &lcLog)
	}
	select {
	case err := <-gwDone:
		if err != nil {
			t.Errorf("the gateway did not stop cleanly: %v\n%s", err, &gwLog)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("the gateway still runs after the lifecycle script finished\n%s", &gwLog)
	}
	if _, state := instanceState(); state != "Terminating:Proceed" {
		t.Errorf("instance lifecycle state %q, want Terminating:Proceed (lifecycle action completed)\n%s", state, &lcLog)
	}
	got := receiveAll(t, sqsClient, queue, 3*time.Second)
	seen := map[string]bool{}
	for _, m := range got {
		rec, err := envelope.Decode(aws.ToString(m.Body))
		if err != nil {
			t.Fatalf("message %q: %v", aws.ToString(m.Body), err)
		}
		seen[string(rec.Payload)] = true
	}
	for i := range records {
		if !seen[fmt.Sprintf(`{"i":%d}`, i)] {
			t.Errorf("record %d acknowledged with 2.04 is not in SQS after the drain", i)
		}
	}
	if len(got) != records {
		t.Errorf("%d messages in SQS, want %d", len(got), records)
	}
	if !strings.Contains(lcLog.String(), "lifecycle action completed") {
		t.Errorf("script log:\n%s", &lcLog)
	}
}

// missingPeer skips the test, or fails it when COAPGW_REQUIRE_PEERS is set (as scripts/test.sh does).
func missingPeer(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("COAPGW_REQUIRE_PEERS") != "" {
		t.Fatal(why)
	}
	t.Skip(why)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// waitHTTP polls url until it answers 200.
func waitHTTP(t *testing.T, url string, log fmt.Stringer) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready: %v\n%s", url, err, log)
		}
	}
}

func setIMDS(t *testing.T, imds, query string) {
	t.Helper()
	resp, err := http.Post(imds+"/_test?"+query, "text/plain", nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("set metadata %s: %v %v", query, err, resp)
	}
	resp.Body.Close()
}

// receiveAll receives and deletes messages until the queue has given none for quiet.
func receiveAll(t *testing.T, c *awssqs.Client, queue string, quiet time.Duration) []types.Message {
	t.Helper()
	var all []types.Message
	for last := time.Now(); time.Since(last) < quiet; {
		out, err := c.ReceiveMessage(context.Background(), &awssqs.ReceiveMessageInput{QueueUrl: aws.String(queue), MaxNumberOfMessages: 10, WaitTimeSeconds: 1})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range out.Messages {
			all = append(all, m)
			if _, err := c.DeleteMessage(context.Background(), &awssqs.DeleteMessageInput{QueueUrl: aws.String(queue), ReceiptHandle: m.ReceiptHandle}); err != nil {
				t.Fatal(err)
			}
		}
		if len(out.Messages) > 0 {
			last = time.Now()
		}
	}
	return all
}
