//go:build linux

package main

import (
	"errors"
	"flag"
	"strings"
)

// flagErrorIn is flagError for an error of fs: an unknown flag also gets
// the nearest flag fs defines, "unknown flag --lisen; did you mean
// --listen?", the way ctl suggests a command.
func flagErrorIn(fs *flag.FlagSet, err error) error {
	err = flagError(err)
	name, ok := strings.CutPrefix(err.Error(), "unknown flag --")
	if !ok {
		return err
	}
	if near := nearestFlag(fs, name); near != "" {
		return errors.New("unknown flag --" + name + "; did you mean " + flagSpelling(near) + "?")
	}
	return err
}

// nearestFlag is the long flag of fs closest to name (a typo, a missing
// or swapped letter, a prefix of it), or "" when none is close. The
// one-letter flags are left out: every short word is close to them.
func nearestFlag(fs *flag.FlagSet, name string) string {
	name, _, _ = strings.Cut(name, "=")
	var names []string
	fs.VisitAll(func(f *flag.Flag) {
		if len(f.Name) > 1 {
			names = append(names, f.Name)
		}
	})
	if near := nearest(name, names); near != "" {
		return near
	}
	var prefixed []string
	for _, n := range names {
		if len(name) >= 3 && strings.HasPrefix(n, name) {
			prefixed = append(prefixed, n)
		}
	}
	if len(prefixed) == 1 {
		return prefixed[0]
	}
	return ""
}
