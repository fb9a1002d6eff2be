//go:build linux

package supervisor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Event is one line of `rpwrap ctl events`: something that happened to
// rpwrap or a generation. Fields that do not apply are left out.
type Event struct {
	At          time.Time     `json:"at"`
	Type        EventType     `json:"event"`
	Generation  int           `json:"generation,omitempty"`
	Pid         int           `json:"pid,omitempty"`
	Predecessor int           `json:"predecessor,omitempty"` // the generation being replaced
	Source      string        `json:"source,omitempty"`      // restart_asked: SIGHUP or control
	Reason      string        `json:"reason,omitempty"`      // rolled_back, crashed, dropped: why
	Deadline    *time.Time    `json:"deadline,omitempty"`    // drain_began: when it is killed at the latest
	Took        time.Duration `json:"took_ns,omitempty"`     // ready: since start; flipped: since the trigger; drain_ended: since the flip; rollout_ended: the flip back
	HandedOver  bool          `json:"handed_over,omitempty"` // drain_ended: its queue was migrated or relayed
	// rollout_began, canary_stage, rollout_ended: the canary or watch.
	Phase         string  `json:"phase,omitempty"`          // rollout_began: canary or watch; rollout_ended: promoted or rolled back
	Percent       float64 `json:"percent,omitempty"`        // canary_stage: the share asked for
	ToSuccessor   uint64  `json:"to_successor,omitempty"`   // canary_stage: new connections the successor got
	ToPredecessor uint64  `json:"to_predecessor,omitempty"` // canary_stage: and the predecessor
}

// EventType names an Event.
type EventType string

// The events, in the order a restart emits them.
const (
	EventFollowing    EventType = "following"     // first line to each client: the generation serving now (0 before the first is ready)
	EventRestartAsked EventType = "restart_asked" // SIGHUP or ctl restart; it may wait for the one running
	EventStarted      EventType = "started"       // a successor's process started
	EventReady        EventType = "ready"         // it passed its readiness check
	EventFlipped      EventType = "flipped"       // new connections go to it
	EventDrainBegan   EventType = "drain_began"   // the predecessor drains
	EventDrainEnded   EventType = "drain_ended"   // the predecessor is stopped and retired
	EventRolledBack   EventType = "rolled_back"   // the restart failed; the predecessor serves on
	EventRolloutBegan EventType = "rollout_began" // after ready (canary) or the flip (watch): the successor is on trial
	EventCanaryStage  EventType = "canary_stage"  // a canary stage ended, with what each side got
	EventRolloutEnded EventType = "rollout_ended" // the trial ended: promoted or watched to its end, or rolled back (Reason)
	EventCrashed      EventType = "crashed"       // the serving generation exited on its own
	EventRespawned    EventType = "respawned"     // a new generation serves on the sockets of the one that crashed
	EventDropped      EventType = "dropped"       // last line to a client that read too slowly
)

// subscriberBuffer is how many events may wait for one client before it
// is dropped.
const subscriberBuffer = 256

// eventBus hands events to the clients of `ctl events`. emit never blocks:
// a client whose buffer is full is dropped, and told so in a last line.
type eventBus struct {
	mu   sync.Mutex
	subs map[*subscriber]bool
}

type subscriber struct {
	ch      chan Event
	dropped bool // set, under eventBus.mu, before ch is closed by emit
}

// emit stamps e with the time, if it has none, and sends it to every
// subscriber. Safe to call from any goroutine, with or without
// Supervisor.mu held.
func (b *eventBus) emit(e Event) {
	if e.At.IsZero() {
		e.At = time.Now()
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for sub := range b.subs {
		select {
		case sub.ch <- e:
		default:
			sub.dropped = true
			close(sub.ch)
			delete(b.subs, sub)
		}
	}
}

func (b *eventBus) subscribe() *subscriber {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.subs == nil {
		b.subs = map[*subscriber]bool{}
	}
	sub := &subscriber{ch: make(chan Event, subscriberBuffer)}
	b.subs[sub] = true
	return sub
}

// unsubscribe forgets sub; a sub that emit dropped is forgotten already.
func (b *eventBus) unsubscribe(sub *subscriber) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.subs[sub] {
		delete(b.subs, sub)
		close(sub.ch)
	}
}

// emit publishes e to the clients of `ctl events`.
func (s *Supervisor) emit(e Event) { s.events.emit(e) }

// emitGen publishes an event about g.
func (s *Supervisor) emitGen(t EventType, g *generation, e Event) {
	e.Type, e.Generation, e.Pid = t, g.n, g.pid
	s.events.emit(e)
}

// eventWriteTimeout bounds the write of one event line to a client.
const eventWriteTimeout = 5 * time.Second

// streamEvents serves `ctl events` on conn: the answer line, then one line
// per event until the client goes, rpwrap stops, or the client reads too
// slowly (a last "dropped" line says so).
func (c *controlServer) streamEvents(conn *net.UnixConn) {
	sub := c.s.events.subscribe()
	defer c.s.events.unsubscribe(sub)
	gone := make(chan struct{})
	go func() { // a client sends nothing more: EOF or an error means it left (or wait ended it)
		defer close(gone)
		var b [1]byte
		for {
			if _, err := conn.Read(b[:]); err != nil {
				return
			}
		}
	}()
	defer func() { conn.Close(); <-gone }()
	enc := json.NewEncoder(conn)
	send := func(v any) bool {
		conn.SetWriteDeadline(time.Now().Add(eventWriteTimeout))
		return enc.Encode(v) == nil
	}
	n, pid := c.s.Active()
	if !send(Response{OK: true}) || !send(Event{At: time.Now(), Type: EventFollowing, Generation: n, Pid: pid}) {
		return
	}
	for {
		select {
		case e, ok := <-sub.ch:
			if !ok {
				send(Event{At: time.Now(), Type: EventDropped, Reason: fmt.Sprintf(
					"this client read too slowly: %d events were waiting, rpwrap stopped sending to it; run rpwrap ctl events again", subscriberBuffer)})
				return
			}
			if !send(e) {
				return
			}
		case <-gone:
			return
		case <-c.s.quit:
			return
		}
	}
}

// Events subscribes to the events of the rpwrap at path and calls fn with
// each line as the supervisor sent it (JSON, without the newline) until ctx
// ends (nil error), rpwrap closes the stream (io.EOF wrapped: it stopped,
// or dropped this client after a "dropped" line), or fn fails (its error).
// It fails, as Call does, when no rpwrap answers there or it refuses.
func Events(ctx context.Context, path string, fn func(line []byte) error) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return fmt.Errorf("no rpwrap answers on %s (is it running? is --control the same?): %w", path, err)
	}
	conn := c.(*net.UnixConn)
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if err := json.NewEncoder(conn).Encode(Request{Command: "events"}); err != nil {
		return fmt.Errorf("send request to rpwrap at %s: %w", path, err)
	}
	r := bufio.NewReader(conn)
	first, err := r.ReadBytes('\n')
	var resp Response
	if err == nil {
		err = json.Unmarshal(first, &resp)
	}
	switch {
	case ctx.Err() != nil:
		return nil
	case err != nil:
		return fmt.Errorf("read answer of rpwrap at %s: %w", path, err)
	case !resp.OK:
		return errors.New(resp.Error)
	}
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 1 {
			if ferr := fn(line[:len(line)-1]); ferr != nil {
				return ferr
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("rpwrap at %s ended the event stream: %w", path, err)
		}
	}
}

// emitAsked publishes a restart trigger.
func (s *Supervisor) emitAsked(r restartRequest) {
	src := "control"
	if r.reply == nil {
		src = "SIGHUP"
	}
	s.emit(Event{Type: EventRestartAsked, Source: src})
}
