package concurrency

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/sluicehq/sluice/services/kvstate"
)

// state is the shared state of one deployment: the block of slots each
// holder leases. It is never modified in place: writers build a new one.
type state struct {
	holders map[string]block
}

// block is one holder's lease: n slots, counted against the deployment's
// maximum until exp (unix nanoseconds, on the holder's clock), and want,
// the slots the holder had or asked for lately (its demand; see
// fairShare). A holder refused a slot may store a block of no slots whose
// want says so.
type block struct {
	n    int
	exp  int64
	want int
}

// own returns holder's block, or the zero block (exp 0) when it has none or
// its block expired by the holder's own clock.
func (st state) own(holder string, now time.Time) block {
	b, ok := st.holders[holder]
	if !ok || now.UnixNano() >= b.exp {
		return block{}
	}
	return b
}

// others returns the slots leased by the blocks of the other holders that
// may still be live: a block counts until its exp plus skew, so that a
// clock ahead of the holder's does not take its slots early.
func (st state) others(holder string, now time.Time, skew time.Duration) int {
	sum := 0
	for h, b := range st.holders {
		if h != holder && liveOther(b, now, skew) {
			sum += b.n
		}
	}
	return sum
}

// liveOther reports whether another holder's block still counts.
func liveOther(b block, now time.Time, skew time.Duration) bool {
	return now.UnixNano() < b.exp+int64(skew)
}

// withBlock returns st with holder's block set to b, or removed when b has
// neither slots nor want, and the expired blocks of other holders dropped:
// every write cleans up after holders that died.
func (st state) withBlock(holder string, b block, now time.Time, skew time.Duration) state {
	next := state{holders: make(map[string]block, len(st.holders)+1)}
	for h, o := range st.holders {
		if h != holder && liveOther(o, now, skew) {
			next.holders[h] = o
		}
	}
	if b.n > 0 || b.want > 0 {
		next.holders[holder] = b
	}
	return next
}

// fairShare returns holder's max-min fair share of max slots (Doorman's
// FAIR_SHARE) when its demand is demand and the other live holders' are
// their stored wants, and whether the deployment is contested: some other
// holder wants more than its block. When it is not, the share is max and
// means nothing: a holder may then grow into any free slot.
//
// The shares fill the holders' wants evenly, smallest first: with 5 slots
// and wants 1, 4 and 4 they are 1, 2 and 2. Ties are broken by holder id,
// so that every holder computes the same shares from the same wants.
func (st state) fairShare(holder string, demand, max int, now time.Time, skew time.Duration) (int, bool) {
	contested := false
	for h, b := range st.holders {
		if h != holder && liveOther(b, now, skew) && b.want > b.n {
			contested = true
			break
		}
	}
	if !contested {
		return max, false
	}
	type want struct {
		holder string
		want   int
	}
	wants := []want{{holder, demand}}
	for h, b := range st.holders {
		if h != holder && liveOther(b, now, skew) {
			wants = append(wants, want{h, b.want})
		}
	}
	slices.SortFunc(wants, func(a, b want) int {
		if c := cmp.Compare(a.want, b.want); c != 0 {
			return c
		}
		return strings.Compare(a.holder, b.holder)
	})
	left, share := max, 0
	for i, w := range wants {
		// An even split of what is left, rounded up.
		even := (left + len(wants) - i - 1) / (len(wants) - i)
		got := min(w.want, even)
		if w.holder == holder {
			share = got
		}
		left -= got
	}
	return share, true
}

// wireState is the JSON form of a state:
//
//	{"holders":{"d1":{"n":5,"exp":1735689600000000000,"want":6}}}
//
// The fields are pointers so that a value missing one is rejected rather
// than read as an empty state.
type wireState struct {
	Holders map[string]wireBlock `json:"holders"`
}

type wireBlock struct {
	N   *int   `json:"n"`
	Exp *int64 `json:"exp"`
	// Want is optional: a missing want is 0.
	Want int `json:"want,omitempty"`
}

// stateCodec stores states in their JSON form.
var stateCodec = kvstate.Codec[state]{
	Encode: func(st state) ([]byte, error) { return encodeState(st), nil },
	Decode: decodeState,
}

func encodeState(st state) []byte {
	w := wireState{Holders: make(map[string]wireBlock, len(st.holders))}
	for h, b := range st.holders {
		w.Holders[h] = wireBlock{N: &b.n, Exp: &b.exp, Want: b.want}
	}
	data, err := json.Marshal(w)
	if err != nil {
		// Strings and integers always encode.
		panic(fmt.Sprintf("concurrency: encode state: %v", err))
	}
	return data
}

func decodeState(data []byte) (state, error) {
	var w wireState
	if err := json.Unmarshal(data, &w); err != nil {
		return state{}, err
	}
	if w.Holders == nil {
		return state{}, errors.New(`missing "holders"`)
	}
	st := state{holders: make(map[string]block, len(w.Holders))}
	for h, b := range w.Holders {
		if h == "" || b.N == nil || b.Exp == nil {
			return state{}, fmt.Errorf(`holder %q: empty name, or missing "n" or "exp"`, h)
		}
		if *b.N < 0 || *b.Exp <= 0 || b.Want < 0 {
			return state{}, fmt.Errorf("holder %q: bad slots %d, expiry %d or want %d", h, *b.N, *b.Exp, b.Want)
		}
		st.holders[h] = block{n: *b.N, exp: *b.Exp, want: b.Want}
	}
	return st, nil
}
