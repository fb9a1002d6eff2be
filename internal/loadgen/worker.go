package loadgen

import (
	"time"
)

// work sends requests until the load is over.
func (l *Load) work() {
	defer l.workers.Done()
	c := newClient(l.cfg)
	defer c.close()
	for {
		due, ok := l.next()
		if !ok {
			return
		}
		sent := time.Now()
		if l.cfg.Rate == 0 {
			due = sent
		} else if sent.Sub(due) > l.cfg.Timeout {
			l.recordUnsent(due.Sub(l.start))
			continue
		}
		err := c.do(sent.Add(l.cfg.Timeout))
		l.record(due.Sub(l.start), time.Since(due), err)
	}
}

// next takes the next request and returns when it is due, or false when
// the load is over. With a Rate it waits until the request is due.
func (l *Load) next() (time.Time, bool) {
	if l.isStopped() && l.cfg.Rate == 0 {
		return time.Time{}, false
	}
	// With a Rate, a stopped load still sends the requests that fell due
	// before the stop (see drainDue).
	i := l.ticket.Add(1) - 1
	if l.cfg.Requests > 0 && i >= int64(l.cfg.Requests) {
		return time.Time{}, false
	}
	if l.cfg.Rate == 0 {
		over := l.cfg.Duration > 0 && time.Since(l.start) >= l.cfg.Duration
		return time.Time{}, !over
	}
	offset := time.Duration(float64(i) / l.cfg.Rate * float64(time.Second))
	if l.cfg.Duration > 0 && offset >= l.cfg.Duration {
		return time.Time{}, false
	}
	if stopped, at := l.stoppedAtTime(); stopped && offset >= at {
		return time.Time{}, false
	}
	due := l.start.Add(offset)
	return due, l.sleepUntil(due) || l.dueBeforeStop(offset)
}

func (l *Load) isStopped() bool {
	select {
	case <-l.stopped:
		return true
	default:
		return false
	}
}

// sleepUntil waits until t, or reports false if the load is stopped first.
func (l *Load) sleepUntil(t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return true
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-l.stopped:
		return false
	}
}
