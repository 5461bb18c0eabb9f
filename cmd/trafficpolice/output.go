package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/pflag"
)

// outputFlag is -o text|json, for commands whose output scripts read.
type outputFlag struct{ format string }

func (o *outputFlag) add(fl *pflag.FlagSet) {
	fl.StringVarP(&o.format, "output", "o", "text", "output format: text or json")
}

// json says whether JSON was asked for; any value but text and json is an error.
func (o outputFlag) json() (bool, error) {
	switch o.format {
	case "text", "":
		return false, nil
	case "json":
		return true, nil
	}
	return false, fmt.Errorf("--output %q is not valid; valid: text or json", o.format)
}

// writeJSON writes v as one indented JSON document.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write JSON: %w", err)
	}
	return nil
}
