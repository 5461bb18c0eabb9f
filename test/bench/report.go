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
	Path string `json:"path"` // local or remote
	Name string `json:"name"`
	Unit string `json:"unit"`
	// TP is trafficpolice's figure, Kernel the kernel path's in the same
	// run, Ratio TP/Kernel (0 when Kernel is 0).
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
	cells := [][]string{{"path", "measurement", "unit", "trafficpolice", "kernel", "ratio", ""}}
	for _, row := range r.Rows {
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
			if i >= 3 && i <= 5 { // numbers: right-aligned
				b.WriteString(pad + v)
			} else {
				b.WriteString(v + pad)
			}
			b.WriteString("  ")
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
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
