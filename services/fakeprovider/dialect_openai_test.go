package fakeprovider

import (
	"net/http"
	"testing"
	"time"
)

func TestFormatDuration(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{12 * time.Millisecond, "12ms"},
		{time.Second, "1s"},
		{6 * time.Minute, "6m0s"},
		{90*time.Second + 500*time.Millisecond, "1m30.5s"},
		{8640 * time.Millisecond, "8.64s"},
		{0, "0s"},
		{-time.Second, "0s"},
		{time.Microsecond, "1ms"},                   // rounded up: never too early
		{time.Millisecond + time.Nanosecond, "2ms"}, // likewise
		{999 * time.Millisecond, "999ms"},
		{time.Hour + time.Second, "1h0m1s"},
	}
	for _, tt := range tests {
		if got := formatDuration(tt.d); got != tt.want {
			t.Errorf("formatDuration(%d) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

func TestRetryHeaders(t *testing.T) {
	tests := []struct {
		d       time.Duration
		seconds string
		ms      string
	}{
		{0, "1", "1"},
		{time.Microsecond, "1", "1"},
		{140 * time.Millisecond, "1", "140"},
		{time.Second, "1", "1000"},
		{time.Second + time.Millisecond, "2", "1001"},
		{2400 * time.Millisecond, "3", "2400"},
		{time.Minute, "60", "60000"},
	}
	for _, tt := range tests {
		h := http.Header{}
		setRetryHeaders(h, tt.d)
		if h.Get("retry-after") != tt.seconds || h.Get("retry-after-ms") != tt.ms {
			t.Errorf("%v: retry-after %s, retry-after-ms %s; want %s, %s",
				tt.d, h.Get("retry-after"), h.Get("retry-after-ms"), tt.seconds, tt.ms)
		}
	}
}
