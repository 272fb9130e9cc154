package api

import (
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the server's Prometheus collectors, in a registry of its own (no global
// state: two servers in one process never share counters).
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	ttft     *prometheus.HistogramVec
	tpot     *prometheus.HistogramVec
	tokens   *prometheus.CounterVec
	overhead *prometheus.HistogramVec
}

func newMetrics(eng Engine) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dsgate_http_requests_total", Help: "HTTP requests by route, method and status code.",
	}, []string{"route", "method", "code"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "dsgate_http_request_duration_seconds", Help: "HTTP request latency (whole response, streams included) by route, method and status code.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 14),
	}, []string{"route", "method", "code"})
	m.ttft = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "dsgate_time_to_first_token_seconds", Help: "Time from request arrival to the first generated token.",
		Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
	}, []string{"route"})
	m.tpot = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "dsgate_time_per_output_token_seconds", Help: "Mean time per output token after the first, per request.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
	}, []string{"route"})
	m.tokens = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dsgate_tokens_total", Help: "Tokens of finished requests by kind (prompt, cached_prompt, completion).",
	}, []string{"kind"})
	m.overhead = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "dsgate_gateway_overhead_seconds", Help: "Time a completed generation request spent in the gateway rather than the engine (HTTP, JSON, template, tokenization, SSE, sessions): whole request time minus the engine's time from Submit to the final event.",
		Buckets: prometheus.ExponentialBuckets(0.00005, 2, 16),
	}, []string{"route"})
	m.reg.MustRegister(m.requests, m.latency, m.ttft, m.tpot, m.tokens, m.overhead,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&engineCollector{eng: eng})
	return m
}

func (m *metrics) observeRequest(route, method string, status int, d time.Duration) {
	code := strconv.Itoa(status)
	m.requests.WithLabelValues(route, method, code).Inc()
	m.latency.WithLabelValues(route, method, code).Observe(d.Seconds())
}

func (s *Server) metricsHandler() echo.HandlerFunc {
	h := promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{})
	return echo.WrapHandler(h)
}

// engineCollector exports Engine.Stats at scrape time.
type engineCollector struct{ eng Engine }

var (
	descQueue     = prometheus.NewDesc("dsgate_engine_queue_length", "Requests waiting in the engine queue.", nil, nil)
	descRunning   = prometheus.NewDesc("dsgate_engine_running_sequences", "Sequences being generated.", nil, nil)
	descKVUsed    = prometheus.NewDesc("dsgate_engine_kv_blocks_used", "KV cache blocks in use.", nil, nil)
	descKVFree    = prometheus.NewDesc("dsgate_engine_kv_blocks_free", "KV cache blocks free.", nil, nil)
	descPrefixHit = prometheus.NewDesc("dsgate_engine_prefix_hit_tokens_total", "Prompt tokens served from the prefix cache.", nil, nil)
	descPrompt    = prometheus.NewDesc("dsgate_engine_prompt_tokens_total", "Prompt tokens submitted to the engine.", nil, nil)
	descGen       = prometheus.NewDesc("dsgate_engine_generated_tokens_total", "Tokens sampled by the engine.", nil, nil)
	descSteps     = prometheus.NewDesc("dsgate_engine_steps_total", "Scheduler steps run.", nil, nil)
	descStepSecs  = prometheus.NewDesc("dsgate_engine_step_seconds_total", "Seconds spent in scheduler steps.", nil, nil)
)

func (ec *engineCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descQueue, descRunning, descKVUsed, descKVFree, descPrefixHit, descPrompt, descGen, descSteps, descStepSecs} {
		ch <- d
	}
}

func (ec *engineCollector) Collect(ch chan<- prometheus.Metric) {
	st := ec.eng.Stats()
	g := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	c := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	g(descQueue, float64(st.QueueLen))
	g(descRunning, float64(st.Running))
	g(descKVUsed, float64(st.KVBlocksUsed))
	g(descKVFree, float64(st.KVBlocksFree))
	c(descPrefixHit, float64(st.PrefixHitTokens))
	c(descPrompt, float64(st.PromptTokens))
	c(descGen, float64(st.GeneratedTokens))
	c(descSteps, float64(st.Steps))
	c(descStepSecs, st.StepSeconds)
}
