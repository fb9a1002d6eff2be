package loadgen

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Load is a load in progress, started by Start. Its methods are safe for
// concurrent use.
type Load struct {
	cfg     Config
	start   time.Time
	ticket  atomic.Int64 // the next request's number
	stopped chan struct{}
	stop    sync.Once
	workers sync.WaitGroup
	done    chan struct{} // closed when every worker has returned

	mu   sync.Mutex
	res  Result
	open map[int]string // windows begun and not ended, by index in res.Windows
	end  time.Time      // when the last worker returned
	// stoppedAt is when Stop was called (since start); 0: the load ran out
	stoppedAt time.Duration
	finish    sync.Once
}

// Start validates cfg and starts sending its load in the background. It
// fails only on a Config that cannot run. Cancelling ctx (or calling Stop)
// stops new requests; requests in flight still end within cfg.Timeout, so
// every request sent has exactly one outcome in the Result.
func Start(ctx context.Context, cfg Config) (*Load, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	l := &Load{
		cfg:     cfg,
		start:   time.Now(),
		stopped: make(chan struct{}),
		done:    make(chan struct{}),
		open:    map[int]string{},
	}
	l.res.Bucket = cfg.Bucket
	unwatch := context.AfterFunc(ctx, l.Stop)
	l.workers.Add(cfg.Clients)
	for range cfg.Clients {
		go l.work()
	}
	go func() {
		l.workers.Wait()
		unwatch()
		l.mu.Lock()
		l.end = time.Now()
		l.mu.Unlock()
		close(l.done)
	}()
	return l, nil
}

// Run sends the load that cfg describes and returns its Result once every
// request has ended. It fails only on a Config that cannot run; failed
// requests are counted in the Result, not returned as an error.
func Run(ctx context.Context, cfg Config) (Result, error) {
	l, err := Start(ctx, cfg)
	if err != nil {
		return Result{}, err
	}
	return l.Wait(), nil
}

// Stop stops the load from starting new requests. Requests in flight end
// on their own, within Config.Timeout. With a Rate, the requests that were
// due before Stop are still sent, or counted Unsent when no client is free
// for them within Config.Timeout: Stop ends the schedule, it drops nothing.
func (l *Load) Stop() {
	l.stop.Do(func() {
		l.mu.Lock()
		l.stoppedAt = time.Since(l.start)
		l.mu.Unlock()
		close(l.stopped)
	})
}

// Done is closed once every request has ended.
func (l *Load) Done() <-chan struct{} { return l.done }

// Wait waits until every request has ended and returns the Result. Marks
// and windows added after that are not in it.
func (l *Load) Wait() Result {
	<-l.done
	l.finish.Do(func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.res.Elapsed = l.end.Sub(l.start)
		l.countUntaken()
		for i := range l.open {
			l.res.Windows[i].End = l.res.Elapsed
		}
		clear(l.open) // the Result returned shares Windows: end functions no longer write to it
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.res
}

// Progress is a running count of the load's outcomes.
type Progress struct {
	Sent, OK, Failed int64
	Elapsed          time.Duration
}

// Progress returns the counts so far; cheap enough to call for a progress
// line several times a second.
func (l *Load) Progress() Progress {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Progress{Sent: l.res.Sent, OK: l.res.OK, Failed: l.res.Failed(), Elapsed: time.Since(l.start)}
}

// Mark records label at the current instant of the load's timeline and
// returns that instant, as an offset from the start.
func (l *Load) Mark(label string) time.Duration {
	at := time.Since(l.start)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.res.Marks = append(l.res.Marks, Mark{Label: label, At: at})
	return at
}

// Window begins a window labelled label (a restart, say) now and returns
// the function that ends it and returns it. A window not ended when the
// load ends, ends then.
func (l *Load) Window(label string) (end func() Window) {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := len(l.res.Windows)
	l.res.Windows = append(l.res.Windows, Window{Label: label, Start: time.Since(l.start)})
	l.open[i] = label
	var once sync.Once
	return func() Window {
		at := time.Since(l.start)
		l.mu.Lock()
		defer l.mu.Unlock()
		once.Do(func() {
			if _, ok := l.open[i]; ok {
				l.res.Windows[i].End = at
				delete(l.open, i)
			}
		})
		return l.res.Windows[i]
	}
}

// record counts one request's outcome.
func (l *Load) record(at, latency time.Duration, err error) {
	o := classify(err)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.res.add(at, latency, o)
	if err != nil {
		l.res.addError(describe(o, err))
	}
}
