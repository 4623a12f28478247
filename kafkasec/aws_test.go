package kafkasec

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// TestAWSMSKIAMPayloadSigned checks the AWS_MSK_IAM first message against
// an independent signer: the credentials come from the standard chain
// (here, the environment), and the SigV4 query signature must equal what
// the AWS SDK's own presigner computes for the same request, credentials,
// region and signing time (the time the payload states — franz-go stamps
// the current time, so the fixed clock is the payload's own, replayed
// into the SDK).
func TestAWSMSKIAMPayloadSigned(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
	t.Setenv("AWS_SESSION_TOKEN", "session/token+with=chars")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_PROFILE", "")

	cfg := Config{TLS: TLS{Enabled: true}, SASL: SASL{Mechanism: "aws_msk_iam"}}
	if err := cfg.Validate("c"); err != nil {
		t.Fatal(err)
	}
	mech, err := mechanism(context.Background(), cfg.SASL)
	if err != nil {
		t.Fatal(err)
	}
	if mech.Name() != "AWS_MSK_IAM" {
		t.Fatalf("mechanism %s", mech.Name())
	}
	const host = "b-1.orders.abc123.c4.kafka.eu-west-1.amazonaws.com"
	before := time.Now().UTC().Truncate(time.Second)
	_, msg, err := mech.Authenticate(context.Background(), host+":9098")
	if err != nil {
		t.Fatalf("authenticate: %v", err)
	}
	var p map[string]string
	if err := json.Unmarshal(msg, &p); err != nil {
		t.Fatalf("payload %q: %v", msg, err)
	}
	for k, want := range map[string]string{
		"version": "2020_10_22", "host": host, "user-agent": UserAgent,
		"action": "kafka-cluster:Connect", "x-amz-algorithm": "AWS4-HMAC-SHA256",
		"x-amz-security-token": "session/token+with=chars", "x-amz-signedheaders": "host",
	} {
		if p[k] != want {
			t.Errorf("%s = %q, want %q", k, p[k], want)
		}
	}
	signedAt, err := time.Parse("20060102T150405Z", p["x-amz-date"])
	if err != nil {
		t.Fatalf("x-amz-date %q: %v", p["x-amz-date"], err)
	}
	if signedAt.Before(before) || signedAt.After(time.Now().Add(time.Second)) {
		t.Errorf("signed at %v, not now", signedAt)
	}
	wantCred := "AKIDEXAMPLE/" + signedAt.Format("20060102") + "/eu-west-1/kafka-cluster/aws4_request"
	if p["x-amz-credential"] != wantCred {
		t.Errorf("credential %q, want %q (region from the host name)", p["x-amz-credential"], wantCred)
	}

	// The SDK's presigner, at the same time, on the same request.
	req, _ := http.NewRequest(http.MethodGet, "https://"+host+"/", nil)
	q := url.Values{}
	q.Set("Action", "kafka-cluster:Connect")
	q.Set("X-Amz-Expires", p["x-amz-expires"])
	req.URL.RawQuery = q.Encode()
	creds := awssdk.Credentials{AccessKeyID: "AKIDEXAMPLE", SecretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
		SessionToken: "session/token+with=chars"}
	const emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	signed, _, err := v4.NewSigner().PresignHTTP(context.Background(), creds, req, emptySHA256, "kafka-cluster", "eu-west-1", signedAt)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(signed)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := p["x-amz-signature"], u.Query().Get("X-Amz-Signature"); got != want || len(got) != 64 {
		t.Errorf("signature %q, the AWS SDK signs %q", got, want)
	}
	// The secret key never travels.
	if strings.Contains(string(msg), "wJalrXUtnFEMI") {
		t.Error("payload contains the secret key")
	}
}

// TestAWSMSKIAMNoCredentials: without credentials anywhere in the chain
// the error says so.
func TestAWSMSKIAMNoCredentials(t *testing.T) {
	dir := t.TempDir()
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
		"AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI"} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	mech, err := mechanism(context.Background(), SASL{Mechanism: MechAWSMSKIAM})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, _, err = mech.Authenticate(ctx, "b-1.x.kafka.us-east-1.amazonaws.com:9098")
	if err == nil || !strings.Contains(err.Error(), "AWS credentials") {
		t.Fatalf("err = %v, want an AWS credentials error", err)
	}
}
