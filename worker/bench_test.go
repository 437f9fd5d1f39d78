package main

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/gravitycar/tollgate/internal/query"
)

// BenchmarkThroughput runs one worker against a model endpoint with a fixed
// latency L and concurrency C, and reports completed queries/s against the
// ideal C/L. Run: go test -run '^$' -bench Throughput -benchtime 400x ./worker/
func BenchmarkThroughput(b *testing.B) {
	const latency = 100 * time.Millisecond
	for _, c := range []int{8, 32} {
		b.Run("C="+strconv.Itoa(c), func(b *testing.B) {
			r := newRig(b, time.Minute, 3)
			m := newModel(b, func(_ int64, w http.ResponseWriter, _ *http.Request) {
				time.Sleep(latency) // the model thinking
				completion(w, "an answer [1]", 400, 20)
			})
			ids := make([]string, b.N)
			for i := range ids {
				ids[i] = r.submit(b, "How many requests can I make per day? "+strconv.Itoa(i))
			}
			b.ResetTimer()
			start := time.Now()
			r.run(b, r.processor(m.generator(), time.Minute, 3), c, time.Second)
			for _, id := range ids {
				for {
					rec, _, err := r.store.Get(b.Context(), id)
					if err == nil && rec.Status == query.Succeeded {
						break
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
			elapsed := time.Since(start)
			b.StopTimer()
			qps := float64(b.N) / elapsed.Seconds()
			ideal := float64(c) / latency.Seconds()
			b.ReportMetric(qps, "queries/s")
			b.ReportMetric(100*qps/ideal, "%ideal")
		})
	}
}
