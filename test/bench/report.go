package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// Row is one measurement on one path, beside the kernel's.
type Row struct {
	Path string `json:"path"` // local, rootless, remote, or a peer: pasta, slirp4netns
	// Tool carries the path's flows: trafficpolice, pasta or slirp4netns.
	Tool string `json:"tool"`
	Name string `json:"name"`
	Unit string `json:"unit"`
	// TP is the path's figure (trafficpolice's, or on a peer's path the
	// peer's; the key stays "trafficpolice" for comparing with older
	// runs), Kernel the kernel path's in the same run, Ratio TP/Kernel (0
	// when Kernel is 0).
	TP     float64 `json:"trafficpolice"`
	Kernel float64 `json:"kernel"`
	Ratio  float64 `json:"ratio"`
	// Higher says more is better (throughput, rates); otherwise less is.
	Higher bool `json:"higher_is_better"`
	// Added is set on latency rows, where TP-Kernel is what the router adds.
	Added bool    `json:"-"`
	Delta float64 `json:"delta,omitempty"`
	Note  string  `json:"note,omitempty"`
	Error string  `json:"error,omitempty"`
	// Skipped says why the path's rows did not run (a peer not installed).
	Skipped string `json:"skipped,omitempty"`
}

// Machine describes where the bench ran.
type Machine struct {
	CPU       string `json:"cpu"`
	CPUs      int    `json:"cpus"`
	MemoryGiB int    `json:"memory_gib"`
	Kernel    string `json:"kernel"`
	Go        string `json:"go"`
	Commit    string `json:"commit"`
	Date      string `json:"date"`
}

type report struct {
	Machine  Machine  `json:"machine"`
	Duration string   `json:"duration"`
	Repeat   int      `json:"repeat"`
	Rows     []Row    `json:"rows"`
	Notes    []string `json:"notes,omitempty"`
}

func newReport(ctx context.Context, o options) *report {
	return &report{Machine: machine(ctx), Duration: o.duration.String(), Repeat: o.repeat}
}

func (r *report) add(row Row) {
	if row.Tool == "" {
		row.Tool = toolOf(row.Path)
	}
	if row.Error == "" && row.Kernel != 0 {
		row.Ratio = row.TP / row.Kernel
	}
	if row.Added {
		row.Delta = row.TP - row.Kernel
	}
	r.Rows = append(r.Rows, row)
}

func machine(ctx context.Context) Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), Date: time.Now().UTC().Format(time.RFC3339)}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if kb, err := procStatusKB("/proc/meminfo", "MemTotal:"); err == nil {
		m.MemoryGiB = int(math.Round(float64(kb) / (1 << 30)))
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	if root, err := moduleRoot(); err == nil {
		cmd := exec.CommandContext(ctx, "git", "describe", "--always", "--dirty")
		cmd.Dir = root
		if out, err := cmd.Output(); err == nil {
			m.Commit = strings.TrimSpace(string(out))
		}
	}
	return m
}

func (r *report) writeJSON(w io.Writer) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(r)
}

func (r *report) writeTable(w io.Writer) {
	m := r.Machine
	fmt.Fprintf(w, "trafficpolice bench, %s: %s, %d CPUs, %d GiB, Linux %s, %s, commit %s, %s per measurement, median of %d\n\n",
		m.Date, m.CPU, m.CPUs, m.MemoryGiB, m.Kernel, m.Go, m.Commit, r.Duration, r.Repeat)
	cells := [][]string{{"path", "measurement", "unit", "figure", "kernel", "ratio", ""}}
	for _, row := range r.Rows {
		if row.Skipped != "" {
			cells = append(cells, []string{row.Path, row.Name, "", "-", "-", "-", "skipped: " + row.Skipped})
			continue
		}
		if row.Error != "" {
			cells = append(cells, []string{row.Path, row.Name, row.Unit, "-", "-", "-", "error: " + oneLine(row.Error)})
			continue
		}
		ratio := "-"
		if row.Kernel != 0 {
			ratio = fmt.Sprintf("%.2f", row.Ratio)
		}
		note := row.Note
		if row.Added {
			note = strings.TrimSpace(fmt.Sprintf("%+.0f %s added; %s", row.Delta, row.Unit, note))
			note = strings.TrimSuffix(note, ";")
		}
		cells = append(cells, []string{row.Path, row.Name, row.Unit, num(row.TP), num(row.Kernel), ratio, note})
	}
	writeCells(w, cells, func(col int) bool { return col >= 3 && col <= 5 })
	if peers := r.peerCells(); peers != nil {
		fmt.Fprintf(w, "\nbeside the peers: each path's ratio to the kernel in its own pairs (higher is better for throughput and rates, lower for latency)\n\n")
		writeCells(w, peers, func(col int) bool { return col >= 1 })
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}

// writeCells prints cells as aligned columns, the columns right says
// right-aligned.
func writeCells(w io.Writer, cells [][]string, right func(col int) bool) {
	widths := make([]int, len(cells[0]))
	for _, c := range cells {
		for i, v := range c {
			widths[i] = max(widths[i], utf8.RuneCountInString(v))
		}
	}
	for _, c := range cells {
		var b strings.Builder
		for i, v := range c {
			pad := strings.Repeat(" ", widths[i]-utf8.RuneCountInString(v))
			if right(i) {
				b.WriteString(pad + v)
			} else {
				b.WriteString(v + pad)
			}
			b.WriteString("  ")
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}

// peerCells is the comparison of the local paths with the peers, one line
// per measurement a peer has, nil when no peer row ran. The ratios are
// the fair figures to set side by side: each path's kernel figure was
// measured beside it, so the machine's drift between pairs cancels out.
func (r *report) peerCells() [][]string {
	cols := []string{localPath.String(), routerPath.String(), rootlessPath.String(), pastaPath.String(), slirpPath.String()}
	ratio := map[[2]string]string{}
	var names []string
	hasPeer := false
	for _, row := range r.Rows {
		if row.Error != "" || row.Skipped != "" || row.Kernel == 0 || !slices.Contains(cols, row.Path) {
			continue
		}
		if row.Tool != "trafficpolice" {
			hasPeer = true
			if !slices.Contains(names, row.Name) {
				names = append(names, row.Name)
			}
		}
		ratio[[2]string{row.Path, row.Name}] = fmt.Sprintf("%.2f", row.Ratio)
	}
	if !hasPeer {
		return nil
	}
	// A path whose rows did not run (--rows) has no column.
	cols = slices.DeleteFunc(cols, func(c string) bool {
		for k := range ratio {
			if k[0] == c {
				return false
			}
		}
		return true
	})
	cells := [][]string{append([]string{"measurement"}, cols...)}
	for _, n := range names {
		line := []string{n}
		for _, c := range cols {
			v, ok := ratio[[2]string{c, n}]
			if !ok {
				v = "-"
			}
			line = append(line, v)
		}
		cells = append(cells, line)
	}
	return cells
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return s
}

// num prints 3 significant digits, without exponent for usual sizes.
func num(v float64) string {
	switch a := math.Abs(v); {
	case a == 0:
		return "0"
	case a >= 1000:
		return fmt.Sprintf("%.0f", v)
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}
