//go:build linux

package supervisor

import (
	"testing"
	"time"
)

// A client that does not read is dropped once its buffer is full; emit
// never waits for it, and the others keep getting every event.
func TestEmitDropsASlowSubscriberWithoutBlocking(t *testing.T) {
	var b eventBus
	slow, fast := b.subscribe(), b.subscribe()
	got := make(chan int)
	go func() {
		n := 0
		for range fast.ch {
			n++
		}
		got <- n
	}()
	const n = subscriberBuffer + 50
	done := make(chan struct{})
	go func() {
		for i := range n {
			b.emit(Event{Type: EventStarted, Generation: i})
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Minute): // a hang guard, not a speed limit
		t.Fatal("emit blocked on a client that does not read")
	}
	b.mu.Lock()
	dropped := slow.dropped
	b.mu.Unlock()
	if !dropped {
		t.Error("the client that never read was not dropped")
	}
	buffered := 0
	for range slow.ch { // closed by emit: the loop ends
		buffered++
	}
	if buffered != subscriberBuffer {
		t.Errorf("the dropped client kept %d events, want its buffer's %d", buffered, subscriberBuffer)
	}
	b.unsubscribe(slow) // forgotten already: a no-op, no double close
	b.unsubscribe(fast)
	if m := <-got; m < subscriberBuffer {
		t.Errorf("the reading client got %d of %d events", m, n)
	}
}

func TestEmitStampsTheTime(t *testing.T) {
	var b eventBus
	sub := b.subscribe()
	defer b.unsubscribe(sub)
	b.emit(Event{Type: EventReady})
	if e := <-sub.ch; e.At.IsZero() || e.At.Location() == nil {
		t.Fatalf("event %+v has no time", e)
	}
}
