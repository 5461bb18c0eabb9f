package connect

import (
	"encoding/json"
	"os"
	"testing"
)

// An object a run announced but did not create (another run's shared
// agent won the create) leaves its record, so that gc never takes it for
// this run's; the record goes with its last object.
func TestRecordForgetsWhatTheRunDidNotCreate(t *testing.T) {
	r, err := newClusterRecord(t.TempDir(), "/k/config", "ctx")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.add("secret", "shop", "trafficpolice-shared-abc"); err != nil {
		t.Fatal(err)
	}
	if err := r.add("job", "shop", "trafficpolice-shared-abc-123456"); err != nil {
		t.Fatal(err)
	}
	r.forget("secret", "shop", "trafficpolice-shared-abc")
	b, err := os.ReadFile(r.path)
	if err != nil {
		t.Fatal(err)
	}
	var got clusterRecord
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Objects) != 1 || got.Objects[0].Kind != "job" || got.Kubeconfig != "/k/config" {
		t.Fatalf("record after forgetting the secret: objects %+v, kubeconfig %q", got.Objects, got.Kubeconfig)
	}
	r.forget("job", "shop", "trafficpolice-shared-abc-123456")
	if _, err := os.Stat(r.path); !os.IsNotExist(err) {
		t.Fatalf("the record without objects is still there: %v", err)
	}
}
