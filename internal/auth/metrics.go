package auth

import "github.com/prometheus/client_golang/prometheus"

// RefusalCounter registers nodeward_auth_refusals_total{reason} on reg, with
// every reason at zero so dashboards and alerts see the series from the
// start, and returns the function ServerConfig.Refused wants.
func RefusalCounter(reg prometheus.Registerer) (func(Reason), error) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "nodeward_auth_refusals_total",
		Help: "Calls to the collector refused by authentication or authorization, by reason.",
	}, []string{"reason"})
	if err := reg.Register(vec); err != nil {
		return nil, err
	}
	for _, r := range Reasons {
		vec.WithLabelValues(string(r))
	}
	return func(r Reason) { vec.WithLabelValues(string(r)).Inc() }, nil
}
