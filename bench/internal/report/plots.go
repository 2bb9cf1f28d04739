package report

import (
	"bufio"
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/tollgate/tollgate/bench/internal/load"
)

// Mode groups: modes that make decisions are plotted together; stale reads
// (which decide nothing) get their own charts.
const (
	GroupDecisions = "decisions"
	GroupReads     = "reads"
)

// PlotWidthPx and PlotHeightPx are the PNG size.
const (
	PlotWidthPx  = 800
	PlotHeightPx = 500
	plotDPI      = 96
)

// ModeGroup is the chart group a mode is plotted in.
func ModeGroup(mode string) string {
	if mode == string(load.Stale) {
		return GroupReads
	}
	return GroupDecisions
}

// Point is one closed-loop result on a chart.
type Point struct {
	Concurrency int
	PerSecond   float64
	P99ms       float64
}

// Series is one line: a system in one mode.
type Series struct {
	System, Mode string
	Points       []Point // by concurrency
}

// Label is the series' legend entry.
func (s Series) Label() string { return s.System + " " + s.Mode }

// Chart is the closed-loop results of one workload, distribution and mode
// group, plotted as throughput and p99 against concurrency.
type Chart struct {
	Workload, Distribution, Group string
	Series                        []Series
}

func (c Chart) base() string {
	s := fileSafe(c.Workload) + "-" + fileSafe(c.Distribution)
	if c.Group != GroupDecisions {
		s += "-" + fileSafe(c.Group)
	}
	return s
}

// ThroughputFile is "throughput-<workload>-<dist>.png" (with "-<group>"
// for groups other than decisions).
func (c Chart) ThroughputFile() string { return "throughput-" + c.base() + ".png" }

// P99File is "p99-<workload>-<dist>.png" (with "-<group>" likewise).
func (c Chart) P99File() string { return "p99-" + c.base() + ".png" }

// Charts lists the charts r calls for: one per workload, distribution and
// mode group whose closed-loop results come from more than one system.
func Charts(r *Run) []Chart {
	type key struct{ w, d, g string }
	type sm struct{ s, m string }
	members := map[key]map[sm]bool{}
	workloads, dists, groups := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for _, res := range r.Results {
		if isOpen(&res) {
			continue
		}
		k := key{res.Workload, res.Distribution, ModeGroup(res.Mode)}
		if members[k] == nil {
			members[k] = map[sm]bool{}
		}
		members[k][sm{res.System, res.Mode}] = true
		workloads[res.Workload], dists[res.Distribution], groups[k.g] = true, true, true
	}
	groupRank := rankOf(GroupDecisions, GroupReads)
	var out []Chart
	for _, w := range sortedBy(workloadRank, workloads) {
		for _, d := range sortedBy(distRank, dists) {
			for _, g := range sortedBy(groupRank, groups) {
				k := key{w, d, g}
				systems := map[string]bool{}
				for m := range members[k] {
					systems[m.s] = true
				}
				if len(systems) < 2 {
					continue
				}
				ch := Chart{Workload: w, Distribution: d, Group: g}
				for _, s := range sortedBy(systemRank, systems) {
					modes := map[string]bool{}
					for m := range members[k] {
						if m.s == s {
							modes[m.m] = true
						}
					}
					for _, m := range sortedBy(modeRank, modes) {
						ser := Series{System: s, Mode: m}
						for _, res := range r.closedSeries(s, w, d, m) {
							ser.Points = append(ser.Points, Point{
								Concurrency: res.Concurrency,
								PerSecond:   res.PerSecond,
								P99ms:       res.P99us / 1000,
							})
						}
						ch.Series = append(ch.Series, ser)
					}
				}
				out = append(out, ch)
			}
		}
	}
	return out
}

// WritePlots writes the two PNGs of every chart in Charts(r) into dir and
// returns their names.
func WritePlots(dir string, r *Run) ([]string, error) {
	var files []string
	for _, c := range Charts(r) {
		for _, f := range []struct {
			name  string
			write func(io.Writer) error
		}{
			{c.ThroughputFile(), c.WriteThroughputPNG},
			{c.P99File(), c.WriteP99PNG},
		} {
			if err := writeFile(filepath.Join(dir, f.name), f.write); err != nil {
				return files, err
			}
			files = append(files, f.name)
		}
	}
	return files, nil
}

func writeFile(path string, write func(io.Writer) error) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("report: %w", cerr)
		}
	}()
	bw := bufio.NewWriter(f)
	if err := write(bw); err != nil {
		return fmt.Errorf("report: %s: %w", path, err)
	}
	return bw.Flush()
}

func (c Chart) title(what string) string {
	t := fmt.Sprintf("%s / %s: %s vs concurrency (closed loop)", c.Workload, c.Distribution, what)
	if c.Group != GroupDecisions {
		t = fmt.Sprintf("%s / %s, %s: %s vs concurrency (closed loop)", c.Workload, c.Distribution, c.Group, what)
	}
	return t
}

// WriteThroughputPNG draws decisions/s against concurrency as a PNG.
func (c Chart) WriteThroughputPNG(w io.Writer) error {
	return c.draw(w, c.title("decisions/s"), "decisions/s (log scale)", fmtSI,
		func(p Point) float64 { return p.PerSecond })
}

// WriteP99PNG draws p99 latency against concurrency as a PNG.
func (c Chart) WriteP99PNG(w io.Writer) error {
	return c.draw(w, c.title("p99 latency"), "p99 latency per call, ms (log scale)",
		func(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) },
		func(p Point) float64 { return p.P99ms })
}

var systemColors = map[string]color.Color{
	sysTollgate:      color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	sysEtcd:          color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	sysRedisAlways:   color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	sysRedisEverysec: color.RGBA{R: 0x17, G: 0xbe, B: 0xcf, A: 0xff},
	sysGubernator:    color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff},
}

func seriesStyle(s Series, other int) (color.Color, []vg.Length, draw.GlyphDrawer) {
	col, ok := systemColors[s.System]
	if !ok {
		col = plotutil.DarkColors[other%len(plotutil.DarkColors)]
	}
	switch s.Mode {
	case string(load.Linearizable):
		return col, nil, draw.CircleGlyph{}
	case string(load.Batch16):
		return col, []vg.Length{vg.Points(6), vg.Points(3)}, draw.BoxGlyph{}
	case string(load.Stale):
		return col, []vg.Length{vg.Points(2), vg.Points(2)}, draw.TriangleGlyph{}
	}
	return col, []vg.Length{vg.Points(8), vg.Points(3), vg.Points(2), vg.Points(3)}, draw.PyramidGlyph{}
}

func (c Chart) draw(w io.Writer, title, ylabel string, yfmt func(float64) string, value func(Point) float64) error {
	p := plot.New()
	p.Title.Text = title
	p.Title.TextStyle.Font.Size = vg.Points(13)
	p.X.Label.Text = "concurrency (clients, log scale)"
	p.Y.Label.Text = ylabel
	p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
	p.Add(plotter.NewGrid())

	legend := plot.NewLegend()
	legend.Top, legend.Left = true, true
	legend.TextStyle.Font.Size = vg.Points(10)

	concs := map[int]bool{}
	ymin, ymax := math.Inf(1), math.Inf(-1)
	other := 0
	for _, s := range c.Series {
		var xys plotter.XYs
		for _, pt := range s.Points {
			y := value(pt)
			if pt.Concurrency <= 0 || !valid(y) || y <= 0 {
				continue // not on a log scale
			}
			xys = append(xys, plotter.XY{X: float64(pt.Concurrency), Y: y})
			concs[pt.Concurrency] = true
			ymin, ymax = math.Min(ymin, y), math.Max(ymax, y)
		}
		if _, ok := systemColors[s.System]; !ok {
			other++
		}
		if len(xys) == 0 {
			continue
		}
		col, dashes, glyph := seriesStyle(s, other)
		line, pts, err := plotter.NewLinePoints(xys)
		if err != nil {
			return err
		}
		line.Color, line.Dashes, line.Width = col, dashes, vg.Points(2)
		pts.Color, pts.Shape, pts.Radius = col, glyph, vg.Points(3)
		p.Add(line, pts)
		legend.Add(s.Label(), line, pts)
	}

	// Axes: categorical-looking concurrency ticks on a log x axis; a log y
	// axis snapped to 1-2-5 values so both ends are labelled.
	xs := make([]int, 0, len(concs))
	for x := range concs {
		xs = append(xs, x)
	}
	sort.Ints(xs)
	if len(xs) == 0 {
		xs = []int{1, 16, 64, 256}
	}
	var xticks plot.ConstantTicks
	for _, x := range xs {
		xticks = append(xticks, plot.Tick{Value: float64(x), Label: strconv.Itoa(x)})
	}
	p.X.Tick.Marker = xticks
	p.X.Min, p.X.Max = float64(xs[0])/1.5, float64(xs[len(xs)-1])*1.5
	if math.IsInf(ymin, 1) {
		ymin, ymax = 1, 10
	}
	p.Y.Min, p.Y.Max = snap125(ymin/1.1, false), snap125(ymax*1.1, true)
	p.Y.Tick.Marker = logTicks{format: yfmt}

	width := vg.Length(PlotWidthPx) * vg.Inch / plotDPI
	height := vg.Length(PlotHeightPx) * vg.Inch / plotDPI
	img := vgimg.NewWith(vgimg.UseWH(width, height), vgimg.UseDPI(plotDPI))
	dc := draw.New(img)
	pad := vg.Points(8)
	lr := legend.Rectangle(dc)
	lw := lr.Max.X - lr.Min.X
	if lw > width/3 {
		lw = width / 3
	}
	p.Draw(draw.Crop(dc, pad/2, -(lw + 2*pad), pad/2, -pad/2))
	// Legend to the right of the plot, level with the data area's top.
	titleH := p.Title.TextStyle.Rectangle(p.Title.Text).Size().Y + p.Title.Padding
	legend.Draw(draw.Crop(dc, width-lw-pad, 0, 0, -(titleH + pad)))
	_, err := vgimg.PngCanvas{Canvas: img}.WriteTo(w)
	return err
}

// snap125 rounds x > 0 to a 1-2-5 value: up if up, else down.
func snap125(x float64, up bool) float64 {
	if !(x > 0) || !valid(x) {
		return 1
	}
	e := math.Floor(math.Log10(x))
	d := math.Pow(10, e)
	steps := []float64{1, 2, 5, 10}
	if up {
		for _, s := range steps {
			if s*d >= x*(1-1e-9) {
				return s * d
			}
		}
		return 10 * d
	}
	for i := len(steps) - 1; i >= 0; i-- {
		if steps[i]*d <= x*(1+1e-9) {
			return steps[i] * d
		}
	}
	return d
}

// logTicks labels 1-2-5 values of a log axis (every integer multiple if
// that leaves fewer than two labels) and marks the other multiples.
type logTicks struct{ format func(float64) string }

func (t logTicks) Ticks(min, max float64) []plot.Tick {
	if !(min > 0) || !(max > min) {
		return []plot.Tick{{Value: min, Label: t.format(min)}}
	}
	var ticks []plot.Tick
	labelled := 0
	for e := math.Floor(math.Log10(min)); e <= math.Ceil(math.Log10(max)); e++ {
		d := math.Pow(10, e)
		for m := 1; m <= 9; m++ {
			v := float64(m) * d
			if v < min*(1-1e-9) || v > max*(1+1e-9) {
				continue
			}
			tk := plot.Tick{Value: v}
			if m == 1 || m == 2 || m == 5 {
				tk.Label = t.format(v)
				labelled++
			}
			ticks = append(ticks, tk)
		}
	}
	if labelled < 2 {
		for i := range ticks {
			ticks[i].Label = t.format(ticks[i].Value)
		}
	}
	return ticks
}

// fmtSI formats a rate compactly: 500, 2k, 150k, 1.5M.
func fmtSI(x float64) string {
	switch a := math.Abs(x); {
	case a >= 1e9:
		return strconv.FormatFloat(x/1e9, 'g', 3, 64) + "G"
	case a >= 1e6:
		return strconv.FormatFloat(x/1e6, 'g', 3, 64) + "M"
	case a >= 1e3:
		return strconv.FormatFloat(x/1e3, 'g', 3, 64) + "k"
	}
	return strconv.FormatFloat(x, 'g', 3, 64)
}
