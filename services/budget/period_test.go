package budget_test

import (
	"testing"
	"time"

	"github.com/sluicehq/sluice/services/budget"
)

func zone(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// The day and month that contain an instant, in a zone: their start,
// their reset, their ID, across DST changes, month ends and leap years.
func TestPeriodOf(t *testing.T) {
	paris := zone(t, "Europe/Paris")
	santiago := zone(t, "America/Santiago")
	havana := zone(t, "America/Havana")
	for _, tc := range []struct {
		name       string
		span       budget.Span
		at         time.Time
		id         string
		start, end time.Time
		length     time.Duration
		in         *time.Location // nil: at's location
	}{
		// Paris springs forward at 02:00 on 2026-03-29: a 23-hour day.
		{"paris spring forward, before the change", budget.Day, time.Date(2026, 3, 29, 1, 59, 0, 0, paris), "2026-03-29",
			time.Date(2026, 3, 28, 23, 0, 0, 0, time.UTC), time.Date(2026, 3, 29, 22, 0, 0, 0, time.UTC), 23 * time.Hour, nil},
		{"paris spring forward, after the change", budget.Day, time.Date(2026, 3, 29, 3, 0, 0, 0, paris), "2026-03-29",
			time.Date(2026, 3, 28, 23, 0, 0, 0, time.UTC), time.Date(2026, 3, 29, 22, 0, 0, 0, time.UTC), 23 * time.Hour, nil},
		{"paris march: a month an hour short", budget.Month, time.Date(2026, 3, 31, 23, 59, 0, 0, paris), "2026-03",
			time.Date(2026, 2, 28, 23, 0, 0, 0, time.UTC), time.Date(2026, 3, 31, 22, 0, 0, 0, time.UTC), 31*24*time.Hour - time.Hour, nil},
		// Paris falls back at 03:00 on 2026-10-25: a 25-hour day, 02:30 twice.
		{"paris fall back, the first 02:30", budget.Day, time.Date(2026, 10, 25, 0, 30, 0, 0, time.UTC), "2026-10-25",
			time.Date(2026, 10, 24, 22, 0, 0, 0, time.UTC), time.Date(2026, 10, 25, 23, 0, 0, 0, time.UTC), 25 * time.Hour, paris},
		{"paris fall back, the second 02:30", budget.Day, time.Date(2026, 10, 25, 1, 30, 0, 0, time.UTC), "2026-10-25",
			time.Date(2026, 10, 24, 22, 0, 0, 0, time.UTC), time.Date(2026, 10, 25, 23, 0, 0, 0, time.UTC), 25 * time.Hour, paris},
		{"paris october: a month an hour long", budget.Month, time.Date(2026, 10, 1, 0, 0, 0, 0, paris), "2026-10",
			time.Date(2026, 9, 30, 22, 0, 0, 0, time.UTC), time.Date(2026, 10, 31, 23, 0, 0, 0, time.UTC), 31*24*time.Hour + time.Hour, nil},
		// The last instant of January in Paris, and the first of February.
		{"paris jan 31, last instant", budget.Day, time.Date(2026, 1, 31, 22, 59, 59, 999999999, time.UTC), "2026-01-31",
			time.Date(2026, 1, 30, 23, 0, 0, 0, time.UTC), time.Date(2026, 1, 31, 23, 0, 0, 0, time.UTC), 24 * time.Hour, paris},
		{"paris january, last instant", budget.Month, time.Date(2026, 1, 31, 22, 59, 59, 999999999, time.UTC), "2026-01",
			time.Date(2025, 12, 31, 23, 0, 0, 0, time.UTC), time.Date(2026, 1, 31, 23, 0, 0, 0, time.UTC), 31 * 24 * time.Hour, paris},
		{"paris february, first instant (still january in UTC)", budget.Month, time.Date(2026, 1, 31, 23, 0, 0, 0, time.UTC), "2026-02",
			time.Date(2026, 1, 31, 23, 0, 0, 0, time.UTC), time.Date(2026, 2, 28, 23, 0, 0, 0, time.UTC), 28 * 24 * time.Hour, paris},
		{"paris feb 1, first instant", budget.Day, time.Date(2026, 1, 31, 23, 0, 0, 0, time.UTC), "2026-02-01",
			time.Date(2026, 1, 31, 23, 0, 0, 0, time.UTC), time.Date(2026, 2, 1, 23, 0, 0, 0, time.UTC), 24 * time.Hour, paris},
		{"a leap february", budget.Month, time.Date(2028, 2, 29, 12, 0, 0, 0, time.UTC), "2028-02",
			time.Date(2028, 2, 1, 0, 0, 0, 0, time.UTC), time.Date(2028, 3, 1, 0, 0, 0, 0, time.UTC), 29 * 24 * time.Hour, nil},
		{"a leap day", budget.Day, time.Date(2028, 2, 29, 23, 59, 59, 0, time.UTC), "2028-02-29",
			time.Date(2028, 2, 29, 0, 0, 0, 0, time.UTC), time.Date(2028, 3, 1, 0, 0, 0, 0, time.UTC), 24 * time.Hour, nil},
		{"2100 is no leap year", budget.Month, time.Date(2100, 2, 28, 12, 0, 0, 0, time.UTC), "2100-02",
			time.Date(2100, 2, 1, 0, 0, 0, 0, time.UTC), time.Date(2100, 3, 1, 0, 0, 0, 0, time.UTC), 28 * 24 * time.Hour, nil},
		{"december into january", budget.Month, time.Date(2026, 12, 31, 23, 0, 0, 0, time.UTC), "2026-12",
			time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC), 31 * 24 * time.Hour, nil},
		// Santiago skips its midnight on 2026-09-06 (00:00 is 01:00): the
		// day starts at the change, and the day before ends there.
		{"santiago, a day without midnight", budget.Day, time.Date(2026, 9, 6, 12, 0, 0, 0, santiago), "2026-09-06",
			time.Date(2026, 9, 6, 4, 0, 0, 0, time.UTC), time.Date(2026, 9, 7, 3, 0, 0, 0, time.UTC), 23 * time.Hour, nil},
		{"santiago, the evening before", budget.Day, time.Date(2026, 9, 6, 3, 59, 59, 0, time.UTC), "2026-09-05",
			time.Date(2026, 9, 5, 4, 0, 0, 0, time.UTC), time.Date(2026, 9, 6, 4, 0, 0, 0, time.UTC), 24 * time.Hour, santiago},
		{"havana, a day without midnight", budget.Day, time.Date(2026, 3, 8, 12, 0, 0, 0, havana), "2026-03-08",
			time.Date(2026, 3, 8, 5, 0, 0, 0, time.UTC), time.Date(2026, 3, 9, 4, 0, 0, 0, time.UTC), 23 * time.Hour, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			loc := tc.at.Location()
			if tc.in != nil {
				loc = tc.in
			}
			p := budget.PeriodOf(tc.span, tc.at, loc)
			if p.ID() != tc.id || !p.Start.Equal(tc.start) || !p.End.Equal(tc.end) || p.End.Sub(p.Start) != tc.length || p.Span != tc.span {
				t.Errorf("%v of %v: %s [%v, %v) (%v), want %s [%v, %v) (%v)", tc.span, tc.at, p.ID(), p.Start.UTC(), p.End.UTC(), p.End.Sub(p.Start), tc.id, tc.start, tc.end, tc.length)
			}
			if !p.Contains(tc.at) || p.Contains(p.End) || !p.Contains(p.Start) {
				t.Errorf("%s does not contain what it should", p.ID())
			}
			q, err := budget.ParsePeriod(tc.span, tc.id, loc)
			if err != nil || q != p {
				t.Errorf("ParsePeriod(%s): %+v %v, want %+v", tc.id, q, err, p)
			}
		})
	}
}

// Periods tile time: in every zone, each period ends where the next
// starts, contains what PeriodOf says it does, and Previous is the one
// before. Checked every 20 minutes through 2026 and 2028 (a leap year).
func TestPeriodsTileTime(t *testing.T) {
	for _, name := range []string{"UTC", "Europe/Paris", "America/New_York", "America/Santiago", "America/Havana", "Australia/Lord_Howe", "Asia/Kathmandu", "Pacific/Apia"} {
		loc := zone(t, name)
		for _, span := range []budget.Span{budget.Day, budget.Month} {
			for _, year := range []int{2026, 2028} {
				at := time.Date(year, 1, 1, 0, 0, 0, 0, loc)
				prev := budget.PeriodOf(span, at, loc).Previous()
				for ; at.Year() == year; at = at.Add(20 * time.Minute) {
					p := budget.PeriodOf(span, at, loc)
					if !p.Contains(at) {
						t.Fatalf("%s %v: %s [%v, %v) does not contain %v", name, span, p.ID(), p.Start, p.End, at)
					}
					if p == prev {
						continue
					}
					if !p.Start.Equal(prev.End) || p.ID() <= prev.ID() || p.Previous() != prev {
						t.Fatalf("%s %v: %s [%v, %v) follows %s [%v, %v)", name, span, p.ID(), p.Start, p.End, prev.ID(), prev.Start, prev.End)
					}
					if l := p.Start.In(loc); span == budget.Day && l.Format("2006-01-02") != p.ID() || span == budget.Month && (l.Format("2006-01") != p.ID() || l.Day() != 1) {
						t.Fatalf("%s %v: %s starts at %v", name, span, p.ID(), l)
					}
					prev = p
				}
			}
		}
	}
}
