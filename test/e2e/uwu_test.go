package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trafficpolice/trafficpolice/test/apps/uwu"
	"github.com/trafficpolice/trafficpolice/test/cluster"
)

// The seed's sentence, from "The Traffic Police".
const seedSentence = "Hey, are you enjoying mirrord? Why not star us on github? It would be very cool of you."

// uwuWorld is the seed's setup: uwu-service, the target uwu-app and the
// cluster's messages-db in the cluster, a local messages-db on the host.
type uwuWorld struct {
	*world
	client               *cluster.Pod
	clusterDB, otherDB   string // data files of the cluster's databases
	localDB              string
	uwuApp, messagesDB   string
	svc                  *cluster.Process
	clusterDBProc, appDB *cluster.Process
}

func newUWUWorld(t *testing.T) *uwuWorld {
	t.Helper()
	w := &uwuWorld{world: newWorld(t)}
	w.uwuApp = cluster.BuildApp(t, "./test/apps/uwu-app")
	w.messagesDB = cluster.BuildApp(t, "./test/apps/messages-db")
	uwuService := cluster.BuildApp(t, "./test/apps/uwu-service")
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	w.clusterDB = filepath.Join(dir, "cluster-messages.jsonl")
	w.otherDB = filepath.Join(dir, "app-db-messages.jsonl")
	w.localDB = filepath.Join(dir, "local-messages.jsonl")

	svcPod := w.c.AddPod(t, "uwu-service")
	dbPod := w.c.AddPod(t, "messages-db")
	appDBPod := w.c.AddPod(t, "app-db")
	w.client = w.c.AddPod(t, "client")
	w.svc = svcPod.Start(t, []string{uwuService, "--listen", ":8080"})
	w.clusterDBProc = dbPod.Start(t, []string{w.messagesDB, "--listen", ":8888", "--data", w.clusterDB})
	w.appDB = appDBPod.Start(t, []string{w.messagesDB, "--listen", ":8888", "--data", w.otherDB})
	w.target.Start(t, []string{w.uwuApp, "--listen", ":9999"}, "MESSAGES_DB=messages-db:8888", "UWU_SERVICE=uwu-service:8080")
	svcPod.WaitPort(t, 8080, 60*time.Second)
	dbPod.WaitPort(t, 8888, 60*time.Second)
	appDBPod.WaitPort(t, 8888, 60*time.Second)
	w.target.WaitPort(t, 9999, 60*time.Second)

	local := exec.Command(w.messagesDB, "--listen", "127.0.0.1:8888", "--data", w.localDB)
	var out bytes.Buffer
	local.Stdout, local.Stderr = &out, &out
	if err := local.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		local.Process.Kill()
		local.Wait()
		t.Logf("local messages-db:\n%s", out.String())
	})
	waitHostPort(t, "127.0.0.1:8888")
	return w
}

func waitHostPort(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("nothing listens on %s", addr)
}

// sandboxApp runs the developer's uwu-app under `sandbox run` until the
// test ends, and waits until the pod's port is stolen.
func (w *uwuWorld) sandboxApp(t *testing.T, config, messagesDB string) {
	t.Helper()
	cmd := w.command(w.tp, "sandbox", "run", "-f", writeConfig(t, config), "--agent-address", w.agentAddr,
		"--agent-token-file", w.tokenFile, "--", w.uwuApp, "--listen", ":9999")
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Env = append(cmd.Env, "MESSAGES_DB="+messagesDB, "UWU_SERVICE=uwu-service:8080")
	r, wr := io.Pipe()
	cmd.Stdout, cmd.Stderr = wr, wr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var log strings.Builder
	stolen := make(chan struct{})
	var once sync.Once
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			mu.Lock()
			log.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if strings.Contains(sc.Text(), "stealing") {
				once.Do(func() { close(stolen) })
			}
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		wr.Close()
		mu.Lock()
		t.Logf("sandbox run:\n%s", log.String())
		mu.Unlock()
	})
	select {
	case <-stolen:
	case <-time.After(30 * time.Second):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("the sandbox did not start stealing:\n%s", log.String())
	}
}

type stored struct {
	ID   int    `json:"id"`
	Text string `json:"text"`
}

func readStore(t *testing.T, path string) []stored {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []stored
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if line == "" {
			continue
		}
		var s stored
		if err := json.Unmarshal([]byte(line), &s); err != nil {
			t.Fatalf("%s: %q: %v", path, line, err)
		}
		out = append(out, s)
	}
	return out
}

// post sends the seed's sentence from the client pod to the target pod.
func (w *uwuWorld) post(t *testing.T) string {
	t.Helper()
	out, err := w.client.Run(t, "curl", "-sS", "--max-time", "10", "-d", seedSentence, "-X", "POST", "http://uwu-app:9999/uwu")
	if err != nil {
		t.Fatalf("curl: %v\n%s", err, out)
	}
	return out
}

func (w *uwuWorld) checkStory(t *testing.T, answer string, untouched ...string) {
	t.Helper()
	want := uwu.Transform(seedSentence)
	if !strings.Contains(answer, "Added new message") || !strings.Contains(answer, want) {
		t.Fatalf("answer %q does not carry the uwu'd text %q", answer, want)
	}
	local := readStore(t, w.localDB)
	if len(local) != 1 || local[0].Text != want {
		t.Fatalf("the local messages-db holds %+v, want the uwu'd message", local)
	}
	if !strings.Contains(answer, fmt.Sprintf("with id %d", local[0].ID)) {
		t.Errorf("the answer does not come from the app that stored into the local database: %q", answer)
	}
	// uwu-service was reached by its short name, from the pod's address.
	if !strings.Contains(w.svc.Output(), w.target.IP().String()) {
		t.Errorf("uwu-service's log does not show a request from the pod %s:\n%s", w.target.IP(), w.svc.Output())
	}
	for _, path := range untouched {
		if got := readStore(t, path); len(got) != 0 {
			t.Errorf("%s received %+v; it must receive nothing", filepath.Base(path), got)
		}
	}
}

// The seed's second config: steal, and 127.0.0.1:8888 goes to the host.
func TestSeedStoryLocalPort(t *testing.T) {
	w := newUWUWorld(t)
	w.sandboxApp(t, `{"target": "pod/uwu-app", "feature": {"network": {"incoming": "steal", "outgoing": {"filter": {"local": [":8888"]}}}}}`,
		"127.0.0.1:8888")
	answer := w.post(t)
	t.Logf("answer: %s", answer)
	w.checkStory(t, answer, w.clusterDB, w.otherDB)
	if strings.Contains(w.clusterDBProc.Output(), "store;") {
		t.Errorf("the cluster's messages-db logged a store:\n%s", w.clusterDBProc.Output())
	}
}

// The seed's second config, run by an ordinary user: rootless.
func TestSeedStoryLocalPortRootless(t *testing.T) {
	w := newUWUWorld(t)
	w.rootless(t, w.uwuApp)
	w.sandboxApp(t, `{"target": "pod/uwu-app", "feature": {"network": {"incoming": "steal", "outgoing": {"filter": {"local": [":8888"]}}}}}`,
		"127.0.0.1:8888")
	answer := w.post(t)
	t.Logf("answer: %s", answer)
	w.checkStory(t, answer, w.clusterDB, w.otherDB)
}

// The seed's first config: the name app-db is resolved and reached
// locally (the host's /etc/hosts), while the cluster's app-db gets nothing.
func TestSeedStoryLocalName(t *testing.T) {
	w := newUWUWorld(t)
	restore := addHostsEntry(t, "127.0.0.1 app-db")
	defer restore()
	w.sandboxApp(t, `{"target": "pod/uwu-app", "feature": {"network": {"incoming": "steal", "outgoing": {"filter": {"local": ["app-db"]}}}}}`,
		"app-db:8888")
	answer := w.post(t)
	t.Logf("answer: %s", answer)
	w.checkStory(t, answer, w.clusterDB, w.otherDB)
	if strings.Contains(w.appDB.Output(), "store;") {
		t.Errorf("the cluster's app-db logged a store:\n%s", w.appDB.Output())
	}
}

var hostsMu sync.Mutex

// addHostsEntry appends a line to the host's /etc/hosts and returns the
// function that puts the file back exactly as it was (also registered as
// a cleanup, in case the test fails first).
func addHostsEntry(t *testing.T, line string) func() {
	t.Helper()
	hostsMu.Lock()
	orig, err := os.ReadFile("/etc/hosts")
	if err != nil {
		hostsMu.Unlock()
		t.Fatal(err)
	}
	// A run killed before its cleanup left its entry: the next run takes
	// it out, and puts the file back without it.
	orig = dropTestEntries(orig)
	var once sync.Once
	restore := func() {
		once.Do(func() {
			if err := os.WriteFile("/etc/hosts", orig, 0o644); err != nil {
				t.Errorf("restore /etc/hosts: %v", err)
			}
			hostsMu.Unlock()
		})
	}
	t.Cleanup(restore)
	content := append(bytes.TrimRight(append([]byte{}, orig...), "\n"), []byte("\n"+line+" # trafficpolice test\n")...)
	if err := os.WriteFile("/etc/hosts", content, 0o644); err != nil {
		restore()
		t.Fatal(err)
	}
	return restore
}

// dropTestEntries is hosts without the lines tests added.
func dropTestEntries(hosts []byte) []byte {
	var out []byte
	for _, line := range bytes.SplitAfter(hosts, []byte("\n")) {
		if !bytes.HasSuffix(bytes.TrimRight(line, "\n"), []byte(" # trafficpolice test")) {
			out = append(out, line...)
		}
	}
	return out
}
