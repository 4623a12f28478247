package injector

import (
	"errors"
	"testing"
)

// TestInjectKafkaSecret: the cluster credentials Secret is mounted whole,
// read-only, in the sidecar only; the pod annotation picks another one and
// a bad name is refused.
func TestInjectKafkaSecret(t *testing.T) {
	newPod := func(annotations map[string]string) *Pod {
		a := map[string]string{AnnotationInject: "true"}
		for k, v := range annotations {
			a[k] = v
		}
		return &Pod{Metadata: ObjectMeta{Annotations: a, Labels: map[string]string{"app": "orders"}},
			Spec: PodSpec{Containers: []NamedObject{{Name: "app"}}}}
	}
	mounted := func(t *testing.T, pod *Pod, cfg Config) (secret string) {
		t.Helper()
		patch, err := Inject(pod, "shop", cfg)
		if err != nil {
			t.Fatal(err)
		}
		var c Container
		var vols []Volume
		for _, op := range patch {
			switch v := op.Value.(type) {
			case []Container:
				c = v[0]
			case Container:
				c = v
			case []Volume:
				vols = append(vols, v...)
			case Volume:
				vols = append(vols, v)
			}
		}
		for _, v := range vols {
			if v.Name == kafkaSecretVolume {
				secret = v.Secret.SecretName
				if len(v.Secret.Items) != 0 || v.Secret.DefaultMode == nil || *v.Secret.DefaultMode != 0o444 {
					t.Errorf("kafka Secret volume %+v: want every key, mode 0444", v.Secret)
				}
			}
		}
		found := false
		for _, m := range c.VolumeMounts {
			if m.Name == kafkaSecretVolume {
				found = m.MountPath == KafkaSecretDir && m.ReadOnly
			}
		}
		if (secret != "") != found {
			t.Errorf("volume from %q but mounted read-only at %s: %v", secret, KafkaSecretDir, found)
		}
		return secret
	}
	cfg := testConfig()
	if got := mounted(t, newPod(nil), cfg); got != "" {
		t.Errorf("no kafkaSecret configured, but %q mounted", got)
	}
	cfg.KafkaSecret = "kafka-creds"
	if got := mounted(t, newPod(nil), cfg); got != "kafka-creds" {
		t.Errorf("mounted %q, want kafka-creds", got)
	}
	if got := mounted(t, newPod(map[string]string{AnnotationKafkaSecret: "orders-msk"}), cfg); got != "orders-msk" {
		t.Errorf("annotation: mounted %q, want orders-msk", got)
	}
	if _, err := Inject(newPod(map[string]string{AnnotationKafkaSecret: "Not_A_Name"}), "shop", cfg); !errors.Is(err, ErrBadAnnotation) {
		t.Errorf("bad annotation: %v", err)
	}
	cfg.KafkaSecret = "Bad_Name"
	if err := cfg.Validate(); err == nil {
		t.Error("kafkaSecret Bad_Name accepted")
	}
}
