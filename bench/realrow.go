//go:build linux

package main

import (
	"context"
	"fmt"
	"time"

	"github.com/rpwrap/rpwrap/internal/loadgen"
)

// realInstance is a real server under one strategy: its own mechanism or
// rpwrap.
type realInstance interface {
	instance
	Site() *site
	// RestartHooked restarts; hook gets the old generation's processes
	// right after the handover (not called when there is none).
	RestartHooked(ctx context.Context, hook func(old []int)) (timings, error)
	// Serving tells whether a server still runs after a restart.
	Serving() bool
	// Recover starts the server anew when a restart left none.
	Recover(ctx context.Context) error
}

// realFigures are what the real-server rows add to a row.
type realFigures struct {
	Server    string `json:"server"`
	Hung      int    `json:"hung"`       // restarts whose old generation was frozen
	NewBinary int    `json:"new_binary"` // restarts after which every server process ran the new binary copy
	NewConfig int    `json:"new_config"` // restarts after which the new configuration answered
	NewMaster int    `json:"new_master"` // restarts after which the server's top process was another
	KeptOld   int    `json:"kept_old"`   // bad configuration: the old configuration still answered
	Down      int    `json:"down"`       // restarts that left no server running (started anew)
}

// runRealRow is runRow for a real server: each restart installs a fresh
// binary copy and configuration number i+1 (a refused one in bad-config),
// and the row records what the restart replaced.
func runRealRow(ctx context.Context, st strategy, srv realServer, sc scenario, ls loadShape, p plan) (row, error) {
	r := row{Strategy: st.Name(), Scenario: sc.Name, Load: ls.Name, Real: &realFigures{Server: srv.Name}}
	i0, err := st.Start(ctx, sc)
	if err != nil {
		return r, fmt.Errorf("%s %s: %w", st.Name(), sc.Name, err)
	}
	in, ok := i0.(realInstance)
	if !ok {
		i0.Close()
		return r, fmt.Errorf("%s %s: the strategy started %T, not a real server", st.Name(), sc.Name, i0)
	}
	defer in.Close()
	load, err := loadgen.Start(ctx, loadgen.Config{
		Target: in.Addr(), Clients: ls.Clients, KeepAlive: ls.KeepAlive, Timeout: 5 * time.Second,
		Duration: p.Steady + time.Duration(p.Restarts+1)*(p.Gap+30*time.Second),
	})
	if err != nil {
		return r, err
	}
	sleepCtx(ctx, p.Steady) // steady state before the first restart: pacing
	var ts []timings
	for i := 0; i < p.Restarts && ctx.Err() == nil; i++ {
		if i > 0 {
			sleepCtx(ctx, p.Gap) // pacing between restarts
		}
		t, err := restartReal(ctx, in, srv, sc, load, i, r.Real)
		if err != nil {
			r.RestartErrors = append(r.RestartErrors, err.Error())
		}
		ts = append(ts, t)
	}
	sleepCtx(ctx, p.Gap) // steady state after the last restart
	load.Stop()
	r.fill(load.Wait(), ts)
	return r, nil
}

// restartReal is one restart inside a load window: new binary copy and
// configuration, the strategy's restart with the hang hook, recovery when
// no server is left, then what the restart replaced.
func restartReal(ctx context.Context, in realInstance, srv realServer, sc scenario, load *loadgen.Load, i int, f *realFigures) (timings, error) {
	s := in.Site()
	if err := s.newBinary(); err != nil {
		return timings{}, err
	}
	if err := s.writeConfig(i+1, sc.BadConfig); err != nil {
		return timings{}, err
	}
	before := masters(serverProcs(srv.Comm))
	end := load.Window(fmt.Sprintf("restart %d", i+1))
	t, err := in.RestartHooked(ctx, func(old []int) {
		if sc.HangAfter && freezeIdle(old, portOf(in.Addr()), 2*time.Second) {
			f.Hung++
		}
	})
	if sc.BadConfig {
		s.writeConfig(0, false) // the operator puts the good one back
	}
	if !in.Serving() {
		f.Down++
		if rerr := in.Recover(ctx); rerr != nil {
			err = fmt.Errorf("%v; recover: %w", err, rerr)
		}
	}
	end()
	replaced(in, srv, sc, i, before, f)
	return t, err
}

// replaced counts what restart i replaced: the configuration that answers,
// the top process, the binary every server process runs.
func replaced(in realInstance, srv realServer, sc scenario, i int, before map[int]bool, f *realFigures) {
	switch got := servedConfig(in.Addr()); {
	case got == i+1:
		f.NewConfig++
	case sc.BadConfig && got == 0:
		f.KeptOld++
	}
	after := serverProcs(srv.Comm)
	newMaster := len(after) > 0
	for m := range masters(after) {
		newMaster = newMaster && !before[m]
	}
	if newMaster {
		f.NewMaster++
	}
	ino, all := in.Site().binInode(), len(after) > 0
	for _, p := range after {
		all = all && exeInode(p.Pid) == ino
	}
	if all {
		f.NewBinary++
	}
}
