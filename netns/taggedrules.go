package netns

import (
	"fmt"
	"os/exec"
	"strings"

	"github.com/coreos/go-iptables/iptables"
)

// RemoveTaggedRules deletes, in the calling thread's namespace, every rule
// of proto's family, in any table and chain, whose comment is tag (-m
// comment --comment TAG), however the rest of it reads: what a killed
// process's rules are found by. They go in one iptables-restore; a remover
// racing with us may delete some first, then the ones still there are
// tried again. Rules already gone are not an error.
func RemoveTaggedRules(proto iptables.Protocol, tag string) error {
	var last error
	for range 3 {
		saved, err := iptablesSave(proto)
		if err != nil {
			return err
		}
		deletes := taggedDeletes(saved, tag)
		if deletes == "" {
			return nil
		}
		if last = IPTablesRestore(proto, deletes, true); last == nil {
			return nil
		}
	}
	return last
}

// taggedDeletes turns iptables-save output into the iptables-restore
// input that deletes its rules whose comment is tag ("" if none).
func taggedDeletes(saved, tag string) string {
	var b strings.Builder
	table, opened := "", false
	for _, line := range strings.Split(saved, "\n") {
		switch {
		case strings.HasPrefix(line, "*"):
			table, opened = line, false
		case line == "COMMIT":
			if opened {
				b.WriteString("COMMIT\n")
			}
			table = ""
		case strings.HasPrefix(line, "-A ") && table != "" && RuleHasComment(line, tag):
			if !opened {
				b.WriteString(table + "\n")
				opened = true
			}
			b.WriteString("-D " + strings.TrimPrefix(line, "-A ") + "\n")
		}
	}
	return b.String()
}

// RuleHasComment reports whether a rule line as iptables-save prints it
// has the comment tag (iptables-save quotes comments with spaces; tags
// have none).
func RuleHasComment(line, tag string) bool {
	f := strings.Fields(line)
	for i := 1; i < len(f); i++ {
		if f[i-1] == "--comment" && strings.Trim(f[i], `"`) == tag {
			return true
		}
	}
	return false
}

// iptablesSave runs iptables-save (or ip6tables-save) in the calling
// thread's namespace: the child inherits it.
func iptablesSave(proto iptables.Protocol) (string, error) {
	name := cmdName(proto) + "-save"
	path, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("find %s (install the iptables package): %w", name, err)
	}
	out, err := exec.Command(path).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}
