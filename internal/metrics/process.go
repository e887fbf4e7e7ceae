package metrics

import (
	"runtime"
	"time"
)

// startTime is when the process started (near enough: package init).
var startTime = time.Now()

// RegisterProcess adds the process basics: go_goroutines,
// go_memstats_heap_inuse_bytes, process_start_time_seconds,
// process_cpu_seconds_total and <prefix>_build_info{version,go_version}.
func RegisterProcess(r *Registry, prefix, version string) {
	r.GaugeFunc("go_goroutines", "Goroutines that currently exist.", func() float64 { return float64(runtime.NumGoroutine()) })
	r.GaugeFunc("go_memstats_heap_inuse_bytes", "Bytes in in-use heap spans.", func() float64 {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return float64(m.HeapInuse)
	})
	r.GaugeFunc("process_start_time_seconds", "Start time of the process since the Unix epoch in seconds.", func() float64 {
		return float64(startTime.UnixNano()) / 1e9
	})
	r.CounterFunc("process_cpu_seconds_total", "User and system CPU time spent in seconds.", cpuSeconds)
	r.CollectFunc(prefix+"_build_info", "gauge", "Always 1; the labels name the build.",
		[]*Label{Open("version", 1), Open("go_version", 1)}, func(e Emit) { e(1, version, runtime.Version()) })
}
