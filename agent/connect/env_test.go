package connect

import (
	"reflect"
	"testing"
)

func TestMergeEnvPrefersTheProcessAndKeepsContainerOnlyVariablesOut(t *testing.T) {
	proc := map[string]string{
		"IMAGE_GREETING": "from the image", // the image's config only
		"POD_IP":         "10.1.0.7",       // the process's value wins
		"PATH":           "/usr/local/bin:/bin",
		"HOME":           "/root",
		"HOSTNAME":       "uwu-app-7d9f",
		"TERM":           "xterm",
	}
	spec := map[string]string{
		"POD_IP":  "stale",
		"ONLY_IN": "spec",     // a key the process lacks (it unset it)
		"HOME":    "/srv/app", // the spec sets HOME: then it is the app's configuration
	}
	got := mergeEnv(proc, spec, []string{"TERM", "*"})
	want := map[string]string{
		"IMAGE_GREETING": "from the image",
		"POD_IP":         "10.1.0.7",
		"ONLY_IN":        "spec",
		"HOME":           "/root",
		"TERM":           "xterm", // named by include
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("mergeEnv =\n%v\nwant\n%v", got, want)
	}
	if got := mergeEnv(nil, spec, nil); !reflect.DeepEqual(got, spec) {
		t.Errorf("no process environment: %v, want the spec's %v", got, spec)
	}
}
