package loadgen

import "time"

// An open loop sends request i at i/Rate whatever the server does, with at
// most Clients in flight. When every client is busy (a stalled server holds
// them until Config.Timeout), the requests falling due meanwhile are not
// sent late and counted as fine, nor left out: a request that could not be
// sent within Config.Timeout of when it was due is counted as failed
// (Unsent), as the user who would have sent it gave up. Stop ends the
// schedule, not the requests already due: the clients still send those (or
// count them Unsent, by the same rule), so none is left out. So an open
// loop's losses are those of the server, not capped by Clients.

// recordUnsent counts one request due at at (since the start) that no
// client sent within Config.Timeout.
func (l *Load) recordUnsent(at time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.res.add(at, 0, outcomeUnsent)
}

// countUntaken counts as Unsent the requests that were due before the load
// stopped (or ran its Duration) and that no client took: none, as the
// clients drain them after Stop; this keeps the count exact if one did
// not. Called once, with l.mu held, after every worker has returned.
func (l *Load) countUntaken() {
	if l.cfg.Rate == 0 {
		return
	}
	end := l.res.Elapsed
	if l.stoppedAt > 0 {
		end = l.stoppedAt
	}
	if l.cfg.Duration > 0 {
		end = min(end, l.cfg.Duration)
	}
	due := int64(end.Seconds()*l.cfg.Rate) + 1 // requests 0..due-1 were due by end
	if l.cfg.Duration > 0 {
		due = min(due, int64((l.cfg.Duration.Seconds()*l.cfg.Rate)+0.999999))
	}
	if l.cfg.Requests > 0 {
		due = min(due, int64(l.cfg.Requests))
	}
	// Tickets taken but never recorded (a worker stopped while waiting
	// for a ticket not yet due) are not due either: their due time is
	// after end, so they are beyond due.
	for i := l.ticket.Load(); i < due; i++ {
		at := time.Duration(float64(i) / l.cfg.Rate * float64(time.Second))
		l.res.add(at, 0, outcomeUnsent)
	}
}

// stoppedAtTime tells whether the load was stopped and when (since the
// start).
func (l *Load) stoppedAtTime() (bool, time.Duration) {
	if !l.isStopped() {
		return false, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return true, l.stoppedAt
}

// dueBeforeStop tells whether a request due at offset, whose wait was cut
// short by Stop, was due before the stop and must still be sent.
func (l *Load) dueBeforeStop(offset time.Duration) bool {
	stopped, at := l.stoppedAtTime()
	return stopped && offset < at
}
