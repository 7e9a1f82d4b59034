package config

import (
	"fmt"
	"strings"
	"time"
	_ "time/tzdata" // off-peak spans name time zones; do not depend on the host's tz database
)

// offPeakSpan is one of the batch tier's off-peak spans
// (tiers.batch.off_peak): a daily span of local time, such as 18:00-08:00 in Europe/Berlin; it
// may wrap past midnight. (A deployment's windows are another thing: the
// spans its provider counts over.)
type offPeakSpan struct {
	from, to int // minutes after midnight
	loc      *time.Location
}

// parseOffPeak reads "HH:MM-HH:MM [Zone/Name]" (UTC when no zone is given).
func parseOffPeak(s string) (offPeakSpan, error) {
	fields := strings.Fields(s)
	if len(fields) == 0 || len(fields) > 2 {
		return offPeakSpan{}, fmt.Errorf("%q: want HH:MM-HH:MM and an optional time zone, such as 18:00-08:00 Europe/Berlin", s)
	}
	span := strings.Split(fields[0], "-")
	if len(span) != 2 {
		return offPeakSpan{}, fmt.Errorf("%q: want HH:MM-HH:MM", s)
	}
	var w offPeakSpan
	var err error
	if w.from, err = minutes(span[0]); err != nil {
		return offPeakSpan{}, fmt.Errorf("%q: %w", s, err)
	}
	if w.to, err = minutes(span[1]); err != nil {
		return offPeakSpan{}, fmt.Errorf("%q: %w", s, err)
	}
	if w.from == w.to {
		return offPeakSpan{}, fmt.Errorf("%q: an empty span", s)
	}
	w.loc = time.UTC
	if len(fields) == 2 {
		if w.loc, err = time.LoadLocation(fields[1]); err != nil {
			return offPeakSpan{}, fmt.Errorf("%q: unknown time zone %q", s, fields[1])
		}
	}
	return w, nil
}

func minutes(s string) (int, error) {
	t, err := time.Parse("15:04", s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a time of day such as 08:00", s)
	}
	return t.Hour()*60 + t.Minute(), nil
}

// contains reports whether t falls in the span.
func (w offPeakSpan) contains(t time.Time) bool {
	lt := t.In(w.loc)
	m := lt.Hour()*60 + lt.Minute()
	if w.from < w.to {
		return m >= w.from && m < w.to
	}
	return m >= w.from || m < w.to
}

// OffPeakAt reports whether t is inside one of the batch tier's off-peak
// spans.
func (p *TierPolicy) OffPeakAt(t time.Time) bool {
	for _, w := range p.offPeak {
		if w.contains(t) {
			return true
		}
	}
	return false
}
