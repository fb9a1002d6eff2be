//go:build linux

package supervisor

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"
)

// pause stops accepting control clients without closing the socket: the
// clients that connect meanwhile wait in its queue, for this rpwrap or
// the one that takes over. The channel closes once every client accepted
// has had its request answered or handed to the event loop.
func (c *controlServer) pause() <-chan struct{} {
	c.l.SetDeadline(time.Now()) // serve returns
	c.wg.Wait()
	settled := make(chan struct{})
	go func() { c.busy.Wait(); close(settled) }()
	return settled
}

// resume accepts clients again after pause.
func (c *controlServer) resume() {
	c.l.SetDeadline(time.Time{})
	c.start()
}

// addLate records clients answered once a drain ends (ctl restart --wait),
// to be carried across an upgrade.
func (u *upgrader) addLate(late []restartRequest, res RestartResult) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.late == nil {
		u.late = map[*restartRequest]lateWaiter{}
	}
	for i := range late {
		u.late[&late[i]] = lateWaiter{drains: res.Predecessor, result: res}
	}
}

func (u *upgrader) removeLate(late []restartRequest) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for i := range late {
		delete(u.late, &late[i])
	}
}

// replyOn writes one control Response to the client f, carried across an
// upgrade, and closes it.
func replyOn(f *os.File, r Response) {
	defer f.Close()
	f.SetWriteDeadline(time.Now().Add(10 * time.Second))
	json.NewEncoder(f).Encode(r)
}

// writeBinary writes the binary rpwrap runs from and its last upgrade.
func (p *Process) writeBinary(w io.Writer) {
	fmt.Fprintf(w, "binary:    %s, since %s\n", p.Binary, p.Since.Format(time.RFC3339))
	if n := len(p.Upgrades); n > 0 {
		u := p.Upgrades[n-1]
		what := fmt.Sprintf("%s -> %s in %s", u.From, u.To, u.Took.Round(time.Millisecond))
		if u.Error != "" {
			what = "failed: " + u.Error
		}
		fmt.Fprintf(w, "upgraded:  in place at %s, %s (%d upgrades listed in --json)\n", u.At.Format(time.RFC3339), what, n)
	}
}
