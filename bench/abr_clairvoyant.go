// The ceiling for bench/abr.py: the most QoE a rung chooser could get on a trace it knew in
// advance, in the same live player model.
//
//	go run bench/abr_clairvoyant.go -grid 0.1 -beam 32 < job.json
//
// The job (bench/abr_clairvoyant.py writes it) holds the regime, the ladder's nominal Mbps,
// every rung's chunk sizes, the QoE weights and the traces, in bench/abr_sim.py's units and
// with its trace arrays as they are, so the arithmetic below is bench/abr_sim.py's, float for
// float: Player.run with a rung per chunk, and a wait before the first request (start-up is
// not rebuffering, so a later start buys latency, and with it room before the live edge, for
// nothing in the QoE: a controller may do it, so the search may too). Nothing else: waiting
// later, abandoning a download, or hls.js's bitrate test never makes a chunk arrive sooner
// (unless a trace's round trip falls by more than the wait; the HSDPA traces' is 100 ms
// throughout).
//
// Per trace and per start wait (the job's start_waits_s, one search each, the best plan
// kept), a dynamic programme over the chunks: a state is the wall time, the buffer and
// the rung of the last chunk, with the QoE so far (bitrate earned, stalls and switches lost);
// every state is extended by every rung; states in the same cell of a `grid`-second lattice
// of (time, buffer) at the same rung are merged, keeping the best; and of the states at one
// rung and one buffer cell, only the `beam` best are kept. Each kept state is a real sequence
// of choices, so the result is a plan any player could follow; the search may miss a better
// one (bench/abr.py also runs a wider beam, keeps each trace's best plan of both, and prints
// what the wider one added). Prints one
// JSON line per trace: {"trace": name, "wait_s": the start's wait, "levels": [rung of each
// chunk], "qoe": QoE per 2 s}.
// bench/abr_clairvoyant.py replays each plan in bench/abr_sim.py, which scores it.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"math"
	"os"
	"sort"
)

type trace struct {
	Name      string    `json:"name"`
	Durations []float64 `json:"durations_s"`
	Bandwidth []float64 `json:"bandwidths_bps"`
	Rtts      []float64 `json:"rtts_s"`
	Starts    []float64 `json:"starts_s"`
	Bits      []float64 `json:"bits_at_start"`
}

type job struct {
	ChunkS       float64     `json:"chunk_s"`
	TargetS      float64     `json:"target_latency_s"`
	JoinS        float64     `json:"join_s"`
	Chunks       int         `json:"chunks"`
	First        int         `json:"first"`
	Mbps         []float64   `json:"nominal_mbps"`
	Sizes        [][]float64 `json:"chunk_bytes"` // [rung][chunk index mod its length]
	StartWaits   []float64   `json:"start_waits_s"`
	StallWeight  float64     `json:"stall_weight"`
	SwitchWeight float64     `json:"switch_weight"`
	Traces       []trace     `json:"traces"`
}

// divmod is Python's divmod for floats (bench/abr_sim.py loops its traces with it).
func divmod(x, y float64) (float64, float64) {
	mod := math.Mod(x, y)
	div := (x - mod) / y
	if mod != 0 {
		if (y < 0) != (mod < 0) {
			mod += y
			div--
		}
	} else {
		mod = math.Copysign(0, y)
	}
	if div == 0 {
		return math.Copysign(0, x/y), mod
	}
	floor := math.Floor(div)
	if div-floor > 0.5 {
		floor++
	}
	return floor, mod
}

func bisectRight(a []float64, x float64) int {
	return sort.Search(len(a), func(i int) bool { return a[i] > x })
}

func bisectLeft(a []float64, x float64) int {
	return sort.Search(len(a), func(i int) bool { return a[i] >= x })
}

func (t *trace) loopS() float64    { return t.Starts[len(t.Starts)-1] }
func (t *trace) loopBits() float64 { return t.Bits[len(t.Bits)-1] }

func (t *trace) interval(offset float64) int {
	return min(bisectRight(t.Starts, offset)-1, len(t.Durations)-1)
}

func (t *trace) rttAt(x float64) float64 {
	_, offset := divmod(x, t.loopS())
	return t.Rtts[t.interval(offset)]
}

func (t *trace) bitsBy(x float64) float64 {
	loops, offset := divmod(x, t.loopS())
	i := t.interval(offset)
	return loops*t.loopBits() + t.Bits[i] + (offset-t.Starts[i])*t.Bandwidth[i]
}

func (t *trace) timeFor(bits float64) float64 {
	loops, rest := divmod(bits, t.loopBits())
	if rest == 0 && loops > 0 {
		loops, rest = loops-1, t.loopBits()
	}
	i := min(max(bisectLeft(t.Bits, rest)-1, 0), len(t.Durations)-1)
	for t.Bandwidth[i] <= 0 || t.Bits[i+1] < rest {
		i++ // skip outages (and rounding at a boundary)
	}
	return loops*t.loopS() + t.Starts[i] + (rest-t.Bits[i])/t.Bandwidth[i]
}

type choice struct {
	level int
	prev  *choice
}

type state struct {
	value   float64 // QoE so far, not yet divided by the 2 s steps
	now     float64
	playPos float64 // media time of the playhead
	playing bool
	started bool
	level   int // rung of the last chunk, -1 before the first
	path    *choice
}

type cell struct {
	level       int
	now, buffer int64
}

// step fetches chunk `index` at `level` from state `s`, as Player.run does.
func (j *job) step(t *trace, s state, index, level int) state {
	d := j.ChunkS
	capS := math.Max(j.TargetS, d)
	bufferEnd := float64(index) * d
	next := s
	advance := func(to float64) {
		if to <= next.now {
			return
		}
		if !next.started {
			next.now = to
			return
		}
		span := to - next.now
		stall := span
		if next.playing {
			play := math.Min(span, bufferEnd-next.playPos)
			next.playPos += play
			stall = span - play
			if stall > 0 {
				next.playing = false
			}
		}
		if stall > 0 {
			next.value -= j.StallWeight * stall
		}
		next.now = to
	}
	room := 0.0
	if next.playing {
		room = next.now + math.Max(0, bufferEnd-next.playPos+d-capS)
	}
	advance(math.Max(next.now, math.Max(float64(index+1)*d, room)))
	request := next.now
	if level != s.level && s.level >= 0 {
		request += t.rttAt(request) // the new rung's media playlist
	}
	firstByte := request + t.rttAt(request)
	sizes := j.Sizes[level]
	advance(t.timeFor(t.bitsBy(firstByte) + sizes[index%len(sizes)]*8.0))
	next.value += j.Mbps[level] * d / 2
	if s.level >= 0 && level != s.level {
		next.value -= j.SwitchWeight * math.Abs(j.Mbps[level]-j.Mbps[s.level])
	}
	next.playing, next.started, next.level = true, true, level
	next.path = &choice{level, s.path}
	return next
}

// plan searches the rungs of a session that starts with a wait of `wait` seconds.
func (j *job) plan(t *trace, wait, grid float64, beam int) ([]int, float64) {
	states := []state{{now: j.JoinS + wait, playPos: float64(j.First) * j.ChunkS, level: -1}}
	for index := j.First; index < j.First+j.Chunks; index++ {
		best := map[cell]state{}
		for _, s := range states {
			for level := range j.Mbps {
				next := j.step(t, s, index, level)
				buffer := float64(index+1)*j.ChunkS - next.playPos
				key := cell{level, int64(math.Round(next.now / grid)), int64(math.Round(buffer / grid))}
				if old, ok := best[key]; !ok || next.value > old.value {
					best[key] = next
				}
			}
		}
		// the `beam` best of each rung and buffer cell, in an order that does not depend on
		// the maps' (random) iteration order, so that a run repeats exactly
		keys := make([]cell, 0, len(best))
		for key := range best {
			keys = append(keys, key)
		}
		sort.Slice(keys, func(a, b int) bool {
			ka, kb := keys[a], keys[b]
			if ka.level != kb.level || ka.buffer != kb.buffer {
				return ka.level < kb.level || ka.level == kb.level && ka.buffer < kb.buffer
			}
			va, vb := best[ka].value, best[kb].value
			return va > vb || va == vb && ka.now < kb.now
		})
		states = states[:0]
		kept := 0
		for i, key := range keys {
			if i == 0 || key.level != keys[i-1].level || key.buffer != keys[i-1].buffer {
				kept = 0
			}
			if kept < beam {
				states = append(states, best[key])
				kept++
			}
		}
	}
	top := states[0]
	for _, s := range states[1:] {
		if s.value > top.value {
			top = s
		}
	}
	levels := make([]int, j.Chunks)
	c := top.path
	for i := j.Chunks - 1; i >= 0; i-- {
		levels[i], c = c.level, c.prev
	}
	return levels, top.value / (float64(j.Chunks) * j.ChunkS / 2)
}

type result struct {
	Trace  string  `json:"trace"`
	WaitS  float64 `json:"wait_s"`
	Levels []int   `json:"levels"`
	QoE    float64 `json:"qoe"`
}

func main() {
	grid := flag.Float64("grid", 0.1, "seconds: states this close in time and buffer are merged")
	beam := flag.Int("beam", 32, "states kept per rung and buffer cell")
	flag.Parse()
	var j job
	if err := json.NewDecoder(bufio.NewReader(os.Stdin)).Decode(&j); err != nil {
		panic(err)
	}
	if len(j.StartWaits) == 0 {
		j.StartWaits = []float64{0}
	}
	out := json.NewEncoder(os.Stdout)
	for i := range j.Traces {
		// one search per wait: started together, the late starts' states (as good so far,
		// start-up costing nothing) would crowd the early ones out of the beam
		var best *result
		for _, wait := range j.StartWaits {
			levels, qoe := j.plan(&j.Traces[i], wait, *grid, *beam)
			if best == nil || qoe > best.QoE {
				best = &result{j.Traces[i].Name, wait, levels, qoe}
			}
		}
		if err := out.Encode(best); err != nil {
			panic(err)
		}
	}
}
