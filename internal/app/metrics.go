package app

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ward-idp/ward/internal/activity"
	"github.com/ward-idp/ward/internal/bus"
	"github.com/ward-idp/ward/internal/metrics"
	"github.com/ward-idp/ward/internal/model"
	"github.com/ward-idp/ward/internal/store/postgres"
)

// Metric names of `ward serve` (docs/deploy.md, "Monitoring"). The HTTP
// series are the server's (internal/server).
const (
	MetricTokenRequests   = "ward_token_requests_total"
	MetricDPoPRefusals    = "ward_dpop_proof_refusals_total"
	MetricSignIns         = "ward_signins_total"
	MetricRiskDetections  = "ward_risk_detections_total"
	MetricIncidentsOpened = "ward_incidents_opened_total"
	MetricEvents          = "ward_events_total"
	MetricSETsQueued      = "ward_ssf_sets_queued_total"
	MetricSETsDelivered   = "ward_ssf_sets_delivered_total"
	MetricSETsRefused     = "ward_ssf_sets_refused_total"
	MetricSETsRetried     = "ward_ssf_push_retries_total"
	MetricSSFOutbox       = "ward_ssf_outbox_depth"
	MetricExportLag       = "ward_export_lag_records"
	MetricExportDelivered = "ward_export_delivered_records_total"
	MetricExportFailures  = "ward_export_failures_total"
	MetricExportHolding   = "ward_export_lease_held"
	MetricAuditSealErrors = "ward_audit_seal_errors_total"
	MetricAuditProblems   = "ward_audit_verify_problems_total"
	MetricBusEmitFailures = "ward_bus_emit_failures_total"
	MetricBusRelayed      = "ward_bus_relay_published_total"
	MetricBusRelayFailed  = "ward_bus_relay_failures_total"
	MetricBusRelayRefused = "ward_bus_relay_refused_total"
	MetricBusRelayHolding = "ward_bus_relay_lease_held"
	MetricDBConns         = "ward_db_pool_connections"
	MetricDBMaxConns      = "ward_db_pool_max_connections"
)

// The closed label values. Event data is set by Ward's own code, but a
// value outside these lists (a new grant, a new code) is recorded as
// "other" rather than widening the label: the lists are the contract.
var (
	grantTypes = []string{"authorization_code", "refresh_token", "client_credentials",
		"urn:ietf:params:oauth:grant-type:device_code", "urn:ietf:params:oauth:grant-type:token-exchange",
		"urn:ietf:params:oauth:grant-type:jwt-bearer", "none"}
	// tokenResults: "issued" or an OAuth error code (RFC 6749, 6750, 9449,
	// 8628, OIDC).
	tokenResults = []string{"issued", "invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
		"unsupported_grant_type", "invalid_scope", "access_denied", "server_error", "invalid_dpop_proof",
		"use_dpop_nonce", "invalid_token", "insufficient_scope", "login_required", "invalid_request_uri",
		"request_not_supported", "authorization_pending", "slow_down", "expired_token", "invalid_target",
		"temporarily_unavailable"}
	// dpopReasons are the dpop package's Reason codes, and "required"
	// (a DPoP-bound client sent no proof).
	dpopReasons = []string{"missing", "multiple", "too_large", "malformed", "bad_typ", "bad_alg", "bad_header", "bad_jwk",
		"bad_signature", "missing_claim", "htm_mismatch", "htu_mismatch", "iat_too_old", "iat_in_future", "ath_missing",
		"ath_mismatch", "jkt_mismatch", "nonce_missing", "nonce_invalid", "replay", "required"}
	signInMethods = []string{"password", "passkey", "totp", "recovery_code", "sso", "other"}
	signInResults = []string{"success", "failure", "blocked"}
	severities    = []string{"info", "low", "medium", "high", "critical"}
)

// openMetrics builds the registry of a server: counters fed by the
// domain events this process records (one subscriber on the bus, the way
// every other consumer learns of them) and values read at scrape time
// from their owners (the CAE transmitter, the exporter, the sealer, the
// store, the bus).
func (a *App) openMetrics(version string) {
	r := metrics.NewRegistry()
	a.Metrics = r
	metrics.RegisterProcess(r, "ward", version)

	tokens := r.CounterVec(MetricTokenRequests, "Token endpoint requests by grant type and result (issued, or the OAuth error code). The DPoP nonce handshake (use_dpop_nonce) and device-flow polling are not counted.",
		metrics.Closed("grant_type", grantTypes...), metrics.Closed("result", tokenResults...))
	dpopRefusals := r.CounterVec(MetricDPoPRefusals, "DPoP proofs refused at the token endpoint, by reason (replay, bad_signature, iat_too_old, htu_mismatch, nonce_invalid, required, ...).",
		metrics.Closed("reason", dpopReasons...))
	signIns := r.CounterVec(MetricSignIns, "Interactive sign-ins by result (success, failure, blocked by Conditional Access) and method (password, passkey, totp, recovery_code, sso).",
		metrics.Closed("result", signInResults...), metrics.Closed("method", signInMethods...))
	risk := r.CounterVec(MetricRiskDetections, "Risk detections recorded by this process, by detection type and severity.",
		metrics.Open("type", 48), metrics.Closed("severity", severities...))
	incidents := r.Counter(MetricIncidentsOpened, "Incidents opened by this process.")
	events := r.CounterVec(MetricEvents, "Domain events recorded by this process, by outcome.", metrics.Closed("outcome", model.OutcomeSuccess, model.OutcomeFailure))
	for _, o := range []string{model.OutcomeSuccess, model.OutcomeFailure} {
		events.With(o)
	}
	for _, m := range signInMethods {
		for _, res := range signInResults {
			signIns.With(res, m)
		}
	}
	a.Bus.Subscribe("metrics", func(_ context.Context, e *model.Event) error {
		events.With(e.Outcome)
		switch e.Type {
		case model.EventTokenIssued, model.EventTokenRefreshed:
			tokens.With(grantOf(e), "issued").Inc()
		case model.EventTokenRequestFailed:
			tokens.With(grantOf(e), e.Data["error"]).Inc()
		case model.EventDPoPProofRejected:
			tokens.With(grantOf(e), e.Data["error"]).Inc()
			dpopRefusals.With(strings.TrimPrefix(e.Reason, "dpop_")).Inc()
		case model.EventSignInSucceeded:
			signIns.With("success", signInMethod(e)).Inc()
		case model.EventSignInFailed:
			res := "failure"
			if e.Data["stage"] == "conditional_access" {
				res = "blocked"
			}
			signIns.With(res, signInMethod(e)).Inc()
		case model.EventSSOSignIn:
			res := "success"
			if e.Outcome == model.OutcomeFailure {
				res = "blocked"
			}
			signIns.With(res, "sso").Inc()
		case model.EventRiskDetected:
			risk.With(e.Reason, e.Data[model.DataDetectionSeverity]).Inc()
		case model.EventIncidentCreated:
			incidents.Inc()
		}
		return nil
	})

	// Shared Signals transmitter.
	if a.CAE != nil {
		st := a.CAE.Stats()
		r.CounterFunc(MetricSETsQueued, "SETs this process wrote to the SSF outbox.", func() float64 { return float64(st.Enqueued.Load()) })
		r.CounterFunc(MetricSETsDelivered, "SETs delivered: pushed and answered 2xx (RFC 8935) or acknowledged by a poll (RFC 8936).",
			func() float64 { return float64(st.Delivered.Load() + st.Acked.Load()) })
		r.CounterFunc(MetricSETsRefused, "Pushed SETs the receiver refused for good (400).", func() float64 { return float64(st.Refused.Load()) })
		r.CounterFunc(MetricSETsRetried, "Push attempts that failed and will be retried.", func() float64 { return float64(st.Retried.Load()) })
		depth := a.cached(func(ctx context.Context) (map[string]float64, error) {
			m, err := a.CAE.OutboxDepth(ctx)
			out := map[string]float64{}
			for k, v := range m {
				out[deliveryName(k)] = float64(v)
			}
			return out, err
		})
		r.CollectFunc(MetricSSFOutbox, "gauge", "SETs queued in the outbox (all replicas), by delivery method; read at most every 10 s.",
			[]*metrics.Label{metrics.Closed("method", "push", "poll", metrics.Other)}, func(e metrics.Emit) {
				m := depth()
				for _, k := range []string{"push", "poll"} {
					e(m[k], k)
				}
			})
	}

	// SIEM export.
	if a.exporter != nil {
		sinks := make([]string, len(a.Config.Export.Sinks))
		for i, s := range a.Config.Export.Sinks {
			sinks[i] = s.Name
		}
		sinkLabel := func() []*metrics.Label { return []*metrics.Label{metrics.Closed("sink", sinks...)} }
		lag := a.cached(func(ctx context.Context) (map[string]float64, error) {
			cur, err := a.Store.ListExportCursors(ctx)
			if err != nil {
				return nil, err
			}
			out := map[string]float64{}
			for _, c := range cur {
				if !slices.Contains(sinks, c.Sink) {
					continue // the detectors', the relay's lease
				}
				n, err := a.Store.CountEventsAfter(ctx, c.Seq)
				if err != nil {
					return nil, err
				}
				out[c.Sink] = float64(n)
			}
			return out, nil
		})
		r.CollectFunc(MetricExportLag, "gauge", "Events stored after the sink's cursor (not yet delivered), whichever replica holds the sink; read at most every 10 s.",
			sinkLabel(), func(e metrics.Emit) {
				m := lag()
				for _, s := range sinks {
					if v, ok := m[s]; ok {
						e(v, s)
					}
				}
			})
		collect := func(name, typ, help string, f func(s string) float64) {
			r.CollectFunc(name, typ, help, sinkLabel(), func(e metrics.Emit) {
				for _, s := range sinks {
					e(f(s), s)
				}
			})
		}
		collect(MetricExportDelivered, "counter", "Records this process delivered to the sink (again after a retry counts again).",
			func(s string) float64 { return float64(a.exporter.Stats(s).Delivered) })
		collect(MetricExportFailures, "counter", "Failed deliveries to the sink by this process.",
			func(s string) float64 { return float64(a.exporter.Stats(s).Failures) })
		collect(MetricExportHolding, "gauge", "1 while this process holds the sink's lease (exactly one replica should).",
			func(s string) float64 {
				if a.exporter.Stats(s).Holding {
					return 1
				}
				return 0
			})
	}

	// Audit chain.
	r.CounterFunc(MetricAuditSealErrors, "Sealing rounds of the audit log that failed (events stay unsealed until one works).", func() float64 {
		if a.Sealer == nil {
			return 0
		}
		return float64(a.Sealer.Stats().SealErrors)
	})
	r.CounterFunc(MetricAuditProblems, "Problems the sealer found in the audit chain (a broken link, a bad checkpoint, an event without a valid record MAC): investigate with `ward logs verify`.", func() float64 {
		if a.Sealer == nil {
			return 0
		}
		return float64(a.Sealer.Stats().VerifyProblems)
	})

	// Bus.
	r.CounterFunc(MetricBusEmitFailures, "Events that could not be recorded (the audit persister refused them); the request that caused one failed.",
		func() float64 { return float64(bus.EmitFailures()) })
	if n, ok := a.Bus.(*bus.NATS); ok {
		r.CounterFunc(MetricBusRelayed, "Stored events the relay published to the NATS stream (acknowledged).", func() float64 {
			p, _ := n.RelayStats()
			return float64(p)
		})
		r.CounterFunc(MetricBusRelayFailed, "Relay publishes NATS did not acknowledge (retried from the outbox).", func() float64 {
			_, f := n.RelayStats()
			return float64(f)
		})
		r.CounterFunc(MetricBusRelayRefused, "Relay messages the stream refused because another relay was first or an earlier one of the window failed (relearned, not lost).", func() float64 {
			return float64(n.RelayRefused())
		})
		r.GaugeFunc(MetricBusRelayHolding, "1 while this process's relay publishes to the stream (it holds the relay lease; exactly one replica should).", func() float64 {
			if n.RelayHolding() {
				return 1
			}
			return 0
		})
	}

	// Database pool (PostgreSQL; SQLite has one writer and no pool).
	if pg, ok := a.Store.(*postgres.Store); ok {
		r.CollectFunc(MetricDBConns, "gauge", "PostgreSQL pool connections by state (acquired: in use; idle).",
			[]*metrics.Label{metrics.Closed("state", "acquired", "idle")}, func(e metrics.Emit) {
				s := pg.PoolStat()
				e(float64(s.AcquiredConns), "acquired")
				e(float64(s.IdleConns), "idle")
			})
		r.GaugeFunc(MetricDBMaxConns, "The PostgreSQL pool's size (storage.postgres.max_conns).", func() float64 { return float64(pg.PoolStat().MaxConns) })
	}
}

// grantOf is the event's grant type ("none" when the request named
// none, or none Ward knows: the event only carries known ones).
func grantOf(e *model.Event) string {
	if g := e.Data[activity.DataGrant]; g != "" {
		return g
	}
	return "none"
}

// signInMethod names how a sign-in was (or was to be) made.
func signInMethod(e *model.Event) string {
	if e.Data["method"] == "recovery_code" {
		return "recovery_code"
	}
	switch st := e.Data["stage"]; {
	case st == "password", st == "totp", st == "recovery_code":
		return st
	case strings.Contains(st, "passkey"):
		return "passkey"
	}
	amr := strings.Fields(e.Data[activity.DataAMR])
	for _, m := range amr {
		if m == "pwd" {
			return "password"
		}
	}
	for _, m := range amr {
		if m == "hwk" || m == "swk" || m == "user" || m == "pin" {
			return "passkey"
		}
	}
	return "other"
}

func deliveryName(method string) string {
	switch method {
	case model.DeliveryPush:
		return "push"
	case model.DeliveryPoll:
		return "poll"
	}
	return metrics.Other
}

// metricsCacheTTL bounds how often a scrape reads the database: a
// scraper (or anyone who reaches the metrics listener) cannot turn
// scrapes into database load.
const metricsCacheTTL = 10 * time.Second

// cached returns f's last result, read again when older than
// metricsCacheTTL (with a 5 s timeout; on error the previous values stay).
func (a *App) cached(f func(context.Context) (map[string]float64, error)) func() map[string]float64 {
	var mu sync.Mutex
	var last map[string]float64
	var at time.Time
	return func() map[string]float64 {
		mu.Lock()
		defer mu.Unlock()
		if last == nil || time.Since(at) >= metricsCacheTTL {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			m, err := f(ctx)
			cancel()
			at = time.Now()
			if err == nil {
				last = m
			} else {
				a.Log.Warn("metrics: reading a value failed", "err", err)
				if last == nil {
					last = map[string]float64{}
				}
			}
		}
		return last
	}
}
