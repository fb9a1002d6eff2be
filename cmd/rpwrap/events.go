//go:build linux

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/rpwrap/rpwrap/supervisor"
)

// followEvents is `rpwrap ctl events`: it copies the event lines to
// stdout until rpwrap ends the stream or --timeout passes.
func followEvents(e env, o *ctlOptions, path string) int {
	ctx, cancel := context.WithCancel(context.Background())
	if o.timeout > 0 {
		ctx, cancel = context.WithTimeout(context.Background(), o.timeout)
	}
	defer cancel()
	dropped := false
	err := supervisor.Events(ctx, path, func(line []byte) error {
		var ev supervisor.Event
		if json.Unmarshal(line, &ev) == nil && ev.Type == supervisor.EventDropped {
			dropped = true
		}
		_, err := fmt.Fprintf(e.stdout, "%s\n", line)
		return err
	})
	switch {
	case dropped:
		printError(e.stderr, "rpwrap ctl events", "rpwrap dropped this client: it read too slowly (see the last line)")
		return 1
	case errors.Is(err, io.EOF):
		fmt.Fprintln(e.stderr, "rpwrap ctl events: rpwrap ended the stream: it stopped")
		return 0
	case err != nil:
		printError(e.stderr, "rpwrap ctl events", err.Error())
		return 1
	}
	return 0
}
