package cluster

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/trafficpolice/trafficpolice/netns/netnstest"
	"github.com/trafficpolice/trafficpolice/test/apps/uwu"
)

// seedSentence is the request of the seed story (shared/seed/000_*.txt).
const seedSentence = "Hey, are you enjoying mirrord? Why not star us on github? It would be very cool of you."

// storedMessage is one line of messages-db's --data file.
type storedMessage struct {
	ID   uint64 `json:"id"`
	Text string `json:"text"`
}

func readMessages(t *testing.T, path string) []storedMessage {
	t.Helper()
	raw, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatalf("read messages-db data: %v", err)
	}
	var msgs []storedMessage
	for i, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		if line == "" {
			continue
		}
		var m storedMessage
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("messages-db data line %d %q: %v", i+1, line, err)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

func TestTheThreeAppsRunTheSeedStoryInTheCluster(t *testing.T) {
	t.Parallel()
	netnstest.RequireRoot(t)
	curl := netnstest.RequireCommand(t, "curl", "curl")
	uwuService := BuildApp(t, "./test/apps/uwu-service")
	messagesDB := BuildApp(t, "./test/apps/messages-db")
	uwuApp := BuildApp(t, "./test/apps/uwu-app")

	c := New(t)
	svc := c.AddPod(t, "uwu-service")
	db := c.AddPod(t, "messages-db")
	app := c.AddPod(t, "uwu-app")
	client := c.AddPod(t, "client")

	data := filepath.Join(t.TempDir(), "messages.jsonl")
	svcProc := svc.Start(t, []string{uwuService})
	dbProc := db.Start(t, []string{messagesDB, "--data", data})
	appProc := app.Start(t, []string{uwuApp}, "MESSAGES_DB=messages-db:8888", "UWU_SERVICE=uwu-service:8080")
	svc.WaitPort(t, 8080, waitListen)
	db.WaitPort(t, 8888, waitListen)
	app.WaitPort(t, 9999, waitListen)

	post := func(text string) (string, error) {
		return client.Run(t, curl, "-sS", "--fail-with-body", "--max-time", "20", "--data-binary", text, "http://uwu-app:9999/uwu")
	}

	out, err := post(seedSentence)
	if err != nil {
		t.Fatalf("POST the seed sentence to uwu-app: %v\n%s", err, out)
	}
	want := "Added new message\n" + uwu.Transform(seedSentence) + "\nwith id 0\n"
	if out != want {
		t.Errorf("uwu-app answered %q, want %q", out, want)
	}
	msgs := readMessages(t, data)
	if len(msgs) != 1 || msgs[0].ID != 0 || msgs[0].Text != uwu.Transform(seedSentence) {
		t.Fatalf("messages-db stored %+v, want the uwu'd seed sentence under id 0", msgs)
	}
	// Each hop came from the pod before it, by its pod address.
	svcProc.WaitOutput(t, "] "+app.IP().String()+":", waitListen)
	dbProc.WaitOutput(t, "] "+app.IP().String()+":", waitListen)
	dbProc.WaitOutput(t, fmt.Sprintf("store; new_message=%q", uwu.Transform(seedSentence)), waitListen)
	appProc.WaitOutput(t, "] "+client.IP().String()+":", waitListen)

	if out, err := post("second message"); err != nil || !strings.HasSuffix(out, "\nwith id 1\n") {
		t.Errorf("second POST = %q, %v, want id 1", out, err)
	}
	if n := len(readMessages(t, data)); n != 2 {
		t.Errorf("messages-db holds %d messages after two POSTs, want 2", n)
	}

	// With uwu-service gone, the app names the failed hop.
	if err := svcProc.Stop(); err != nil {
		t.Fatal(err)
	}
	out, err = post("anyone there?")
	if err == nil || !strings.Contains(out, "uwu-service at http://uwu-service:8080 failed") {
		t.Errorf("POST with uwu-service down = %q, %v, want a 502 naming uwu-service", out, err)
	}
	if n := len(readMessages(t, data)); n != 2 {
		t.Errorf("messages-db holds %d messages after a failed POST, want still 2", n)
	}
}
