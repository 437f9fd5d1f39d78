package main

import (
	"fmt"
	"net/mail"
	"slices"
	"strconv"

	"github.com/gravitycar/tollgate/internal/alert"
	"github.com/gravitycar/tollgate/internal/config"
	"github.com/gravitycar/tollgate/internal/pricing"
)

// settings is everything the alerter reads from its environment.
type settings struct {
	config.Common
	MetricsAddr string
	DailyBudget pricing.Nanos
	Thresholds  []float64
	AlertEmail  string
	From        string // SMTP_FROM
	SMTP        alert.SMTPConfig
	PricingFile string
}

func loadSettings(getenv func(string) string) (settings, error) {
	env := config.New(getenv)
	s := settings{
		Common:      env.Common(),
		MetricsAddr: env.String("METRICS_ADDR", "127.0.0.1:9091"),
		AlertEmail:  env.String("ALERT_EMAIL", "owner@localhost"),
		PricingFile: env.String("PRICING_FILE", ""),
		From:        env.String("SMTP_FROM", "tollgate@localhost"),
		SMTP: alert.SMTPConfig{
			Host:     env.String("SMTP_HOST", ""),
			Port:     env.IntRange("SMTP_PORT", alert.DefaultSMTPPort, 1, 65535),
			Username: env.String("SMTP_USERNAME", ""),
			Password: env.String("SMTP_PASSWORD", ""),
			TLS:      env.OneOf("SMTP_TLS", "mandatory", "mandatory", "opportunistic", "none"),
		},
	}
	budget := env.String("DAILY_BUDGET_USD", "1.00")
	if n, err := pricing.ParseUSD(budget); err != nil || n <= 0 {
		env.Fail("DAILY_BUDGET_USD", budget, "must be a positive amount of US dollars, like 1.00")
	} else {
		s.DailyBudget = n
	}
	for _, t := range env.List("ALERT_THRESHOLDS", []string{"0.8", "1.0"}) {
		f, err := strconv.ParseFloat(t, 64)
		if err != nil || f <= 0 || f > 10 {
			env.Fail("ALERT_THRESHOLDS", t, "each threshold must be a fraction of the budget, like 0.8 or 1.0")
			continue
		}
		s.Thresholds = append(s.Thresholds, f)
	}
	slices.Sort(s.Thresholds)
	for _, a := range [][2]string{{"ALERT_EMAIL", s.AlertEmail}, {"SMTP_FROM", s.From}} {
		if _, err := mail.ParseAddress(a[1]); err != nil {
			env.Fail(a[0], a[1], fmt.Sprintf("not an email address (%v)", err))
		}
	}
	if err := env.Err(); err != nil {
		return settings{}, err
	}
	return s, nil
}
