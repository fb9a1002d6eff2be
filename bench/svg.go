//go:build linux

package main

import (
	"fmt"
	"html"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The timeline pictures: one panel per row, requests/s that succeeded as
// a blue line, failed requests per bucket as red bars (own scale, right),
// restart windows shaded grey. Hand-written SVG, no dependency.
const (
	svgWidth  = 960
	panelH    = 130
	plotLeft  = 70
	plotRight = 60
	headH     = 46
)

// writeSVGs writes timeline-STRATEGY.svg for every strategy and
// compare-SCENARIO.svg (closed loop, every strategy) for every scenario,
// of the rows that have a timeline (not the UDP rows).
func writeSVGs(dir string, rep report) error {
	groups := map[string][]row{}
	var names []string
	add := func(name string, r row) {
		if _, ok := groups[name]; !ok {
			names = append(names, name)
		}
		groups[name] = append(groups[name], r)
	}
	for _, r := range rep.Rows {
		if r.NoWindows {
			continue // the UDP rows: their load records no timeline to draw
		}
		add("timeline-"+r.Strategy, r)
		if r.Load == "closed" {
			add("compare-"+r.Scenario, r)
		}
	}
	for _, name := range names {
		svg := renderSVG(name, groups[name], rep.Machine)
		if err := os.WriteFile(filepath.Join(dir, name+".svg"), []byte(svg), 0o644); err != nil {
			return fmt.Errorf("write %s.svg: %w", name, err)
		}
	}
	return nil
}

func renderSVG(title string, rows []row, m machine) string {
	var b strings.Builder
	h := headH + len(rows)*panelH + 10
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">`+"\n", svgWidth, h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="10" y="18" font-size="14" font-weight="bold">%s</text>`+"\n", esc(title+": successful requests/s (blue), failed requests per 100 ms (red, right scale), restarts (grey)"))
	fmt.Fprintf(&b, `<text x="10" y="34" fill="#555">%s</text>`+"\n", esc(fmt.Sprintf("%s · %s · %s (%d CPUs) · %s", m.Command, m.Kernel, m.CPU, m.CPUs, m.Date)))
	for i, r := range rows {
		panel(&b, r, headH+i*panelH)
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// panel draws one row's timeline with its top at y.
func panel(b *strings.Builder, r row, y int) {
	x0, x1 := float64(plotLeft), float64(svgWidth-plotRight)
	top, bottom := float64(y+18), float64(y+panelH-22)
	n := max(len(r.Timeline), 1)
	span := time.Duration(n) * r.Bucket
	xAt := func(d time.Duration) float64 { return x0 + (x1-x0)*float64(d)/float64(max(span, 1)) }
	var maxOK, maxFail int64 = 1, 1
	for _, t := range r.Timeline {
		maxOK, maxFail = max(maxOK, t.OK), max(maxFail, t.Failed)
	}
	perSec := float64(time.Second) / float64(max(r.Bucket, 1))
	fmt.Fprintf(b, `<text x="%d" y="%d" font-weight="bold">%s</text>`+"\n", plotLeft, y+12,
		esc(fmt.Sprintf("%s · %s · %s — %d restarts, %d requests, %d failed", r.Strategy, r.Scenario, r.Load, r.Restarts, r.Sent, r.Failed)))
	fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#ccc"/>`+"\n", x0, top, x1-x0, bottom-top)
	for _, w := range r.Windows {
		xa, xb := xAt(w.Start), xAt(w.End)
		fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#999" fill-opacity="0.35"/>`+"\n", xa, top, max(xb-xa, 1), bottom-top)
	}
	var pts []string
	for i, t := range r.Timeline {
		x := xAt(time.Duration(i)*r.Bucket + r.Bucket/2)
		pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, bottom-(bottom-top)*float64(t.OK)/float64(maxOK)))
		if t.Failed > 0 {
			hgt := max((bottom-top)*float64(t.Failed)/float64(maxFail), 2)
			fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#d62728"/>`+"\n", xAt(time.Duration(i)*r.Bucket), bottom-hgt, max(xAt(r.Bucket)-x0, 1.5), hgt)
		}
	}
	fmt.Fprintf(b, `<polyline points="%s" fill="none" stroke="#1f77b4" stroke-width="1.2"/>`+"\n", strings.Join(pts, " "))
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end" fill="#1f77b4">%.0f/s</text>`+"\n", x0-4, top+8, float64(maxOK)*perSec)
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end" fill="#1f77b4">0</text>`+"\n", x0-4, bottom)
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" fill="#d62728">%d</text>`+"\n", x1+4, top+8, maxFail)
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" fill="#555">0 s</text>`+"\n", x0, bottom+13)
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end" fill="#555">%.1f s</text>`+"\n", x1, bottom+13, span.Seconds())
}

func esc(s string) string { return html.EscapeString(s) }
