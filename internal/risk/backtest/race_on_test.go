//go:build race

package backtest

// raceEnabled: the race detector slows the generator and the detectors
// tenfold; TestScoreTargets scores a smaller organisation then.
const raceEnabled = true
