package budget

import (
	"fmt"
	"time"
)

// Span is the length of a budget's period: a calendar day or month.
type Span uint8

// The spans.
const (
	Day Span = iota + 1
	Month
)

func (s Span) String() string {
	switch s {
	case Day:
		return "day"
	case Month:
		return "month"
	default:
		return fmt.Sprintf("span(%d)", uint8(s))
	}
}

// Period is one calendar day or month in a location.
type Period struct {
	Span Span
	// Start is the first instant of the period; End the first instant
	// of the next one: when the budget resets.
	Start, End time.Time
}

// The layouts of period IDs.
const (
	dayLayout   = "2006-01-02"
	monthLayout = "2006-01"
)

// ID names the period: 2026-12-04 for a day, 2026-12 for a month. IDs
// of one span sort as their periods do.
func (p Period) ID() string {
	if p.Span == Month {
		return p.Start.Format(monthLayout)
	}
	return p.Start.Format(dayLayout)
}

// Contains reports whether t is in the period.
func (p Period) Contains(t time.Time) bool { return !t.Before(p.Start) && t.Before(p.End) }

// PeriodOf returns the day or month (span) that contains t in loc.
func PeriodOf(span Span, t time.Time, loc *time.Location) Period {
	t = t.In(loc)
	y, m, d := t.Date()
	if span == Month {
		return Period{Span: Month, Start: midnight(y, m, 1, loc), End: midnight(y, m+1, 1, loc)}
	}
	return Period{Span: Day, Start: midnight(y, m, d, loc), End: midnight(y, m, d+1, loc)}
}

// ParsePeriod returns the period of span named id (Period.ID) in loc.
func ParsePeriod(span Span, id string, loc *time.Location) (Period, error) {
	layout := dayLayout
	if span == Month {
		layout = monthLayout
	}
	t, err := time.ParseInLocation(layout, id, time.UTC)
	if err != nil {
		return Period{}, fmt.Errorf("budget: period %q: %w", id, err)
	}
	// Noon of the day (or the first) is inside the period in any zone.
	y, m, d := t.Date()
	return PeriodOf(span, time.Date(y, m, d, 12, 0, 0, 0, loc), loc), nil
}

// Previous is the period before p.
func (p Period) Previous() Period {
	return PeriodOf(p.Span, p.Start.Add(-time.Nanosecond), p.Start.Location())
}

// midnight is the first instant of the local date y-m-d in loc (m and
// d may overflow, as time.Date allows). Where the clocks skip midnight
// (America/Santiago in September: 23:59:59 is followed by 01:00),
// time.Date may give the evening before; the day then starts at the
// change.
func midnight(y int, m time.Month, d int, loc *time.Location) time.Time {
	t := time.Date(y, m, d, 0, 0, 0, 0, loc)
	want := time.Date(y, m, d, 0, 0, 0, 0, time.UTC) // normalizes the overflow
	if ty, tm, td := t.Date(); ty != want.Year() || tm != want.Month() || td != want.Day() {
		if _, end := t.ZoneBounds(); !end.IsZero() {
			return end
		}
	}
	return t
}
