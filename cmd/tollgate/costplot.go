package main

import (
	"fmt"
	"image/color"
	"sort"
	"strconv"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	tollgatev1 "github.com/tollgate/tollgate/gen/tollgate/v1"
)

// plotSeriesMax bounds the lines of a spend plot; smaller groups are summed
// into "other".
const plotSeriesMax = 10

// plotReport draws spend over time per group as a PNG. Amounts become
// floats here only to be drawn; the table and the CSV keep them exact.
func plotReport(path string, resp *tollgatev1.ReportResponse, groupBy []string, loc *time.Location) error {
	if len(resp.Rows) == 0 {
		return fmt.Errorf("--plot: the report has no rows to draw")
	}
	type series struct {
		name   string
		points map[int64]float64
		total  float64
	}
	byName := map[string]*series{}
	var buckets []int64
	seen := map[int64]bool{}
	for _, r := range resp.Rows {
		v, err := strconv.ParseFloat(r.Amount, 64)
		if err != nil {
			return fmt.Errorf("--plot: amount %q: %v", r.Amount, err)
		}
		name := "total"
		if len(groupBy) > 0 {
			parts := make([]string, len(r.Group))
			for i, g := range r.Group {
				parts[i] = orDash(g)
			}
			name = strings.Join(parts, "/")
		}
		s := byName[name]
		if s == nil {
			s = &series{name: name, points: map[int64]float64{}}
			byName[name] = s
		}
		at := r.BucketStart.AsTime().Unix()
		s.points[at] += v
		s.total += v
		if !seen[at] {
			seen[at] = true
			buckets = append(buckets, at)
		}
	}
	sort.Slice(buckets, func(i, j int) bool { return buckets[i] < buckets[j] })
	all := make([]*series, 0, len(byName))
	for _, s := range byName {
		all = append(all, s)
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].total != all[j].total {
			return all[i].total > all[j].total
		}
		return all[i].name < all[j].name
	})
	if len(all) > plotSeriesMax {
		other := &series{name: fmt.Sprintf("other (%d groups)", len(all)-plotSeriesMax+1), points: map[int64]float64{}}
		for _, s := range all[plotSeriesMax-1:] {
			for at, v := range s.points {
				other.points[at] += v
			}
		}
		all = append(all[:plotSeriesMax-1], other)
	}

	p := plot.New()
	p.Title.Text = "Spend per " + strings.Join(groupBy, ", ")
	if len(groupBy) == 0 {
		p.Title.Text = "Spend"
	}
	p.Y.Label.Text = resp.Currency
	p.X.Tick.Marker = plot.TimeTicks{Format: "2006-01-02\n15:04", Time: func(t float64) time.Time { return time.Unix(int64(t), 0).In(loc) }}
	p.Add(plotter.NewGrid())
	for i, s := range all {
		xys := make(plotter.XYs, len(buckets))
		for j, at := range buckets {
			xys[j] = plotter.XY{X: float64(at), Y: s.points[at]}
		}
		line, pts, err := plotter.NewLinePoints(xys)
		if err != nil {
			return fmt.Errorf("--plot: %v", err)
		}
		col := plotutil.Color(i)
		line.Color, line.Width = col, vg.Points(1.5)
		pts.Color, pts.Radius, pts.Shape = col, vg.Points(2), plotutil.Shape(i)
		p.Add(line, pts)
		p.Legend.Add(s.name, line, pts)
	}
	p.Legend.Top = true
	p.Legend.Left = true
	p.BackgroundColor = color.White
	if err := p.Save(10*vg.Inch, 5*vg.Inch, path); err != nil {
		return fmt.Errorf("--plot %s: %v", path, err)
	}
	return nil
}
