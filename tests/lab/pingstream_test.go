package lab_test

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/skeinvpn/skein/internal/lab"
)

// pingInterval is the acceptance's `ping -i 0.1`.
const pingInterval = 100 * time.Millisecond

// pingStats is what one `ping -i 0.1` stream saw.
type pingStats struct {
	what        string
	sent, got   int
	longestGap  time.Duration // longest run of unanswered echoes, in sending time
	gapStart    time.Time     // when that run began (the first echo not answered)
	firstReply  time.Time     // the first answered echo sent after `after`
	replyTimes  []time.Time
	replySeqs   []int
	sentAtStart time.Time
}

// lost is the time the stream lost: unanswered echoes times the interval.
func (s pingStats) lost() time.Duration { return time.Duration(s.sent-s.got) * pingInterval }

func (s pingStats) String() string {
	return fmt.Sprintf("%s: %d sent, %d answered (%.1f s lost; longest outage %.1f s)",
		s.what, s.sent, s.got, s.lost().Seconds(), s.longestGap.Seconds())
}

// pingStream starts `ping -i 0.1` from h to `to` for d and returns a function that waits for it
// and returns what it saw. Each echo waits up to 1 s for its answer.
func pingStream(t testing.TB, what string, h *lab.Host, to netip.Addr, d time.Duration) (wait func() pingStats) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d+30*time.Second)
	secs := strconv.Itoa(int((d + time.Second - 1) / time.Second))
	cmd := h.Command(ctx, "ping", "-n", "-i", "0.1", "-W", "1", "-w", secs, to.String())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan pingStats, 1)
	go func() {
		s := pingStats{what: what, sentAtStart: start}
		seqRE := regexp.MustCompile(`icmp_seq=(\d+)`)
		sumRE := regexp.MustCompile(`(\d+) packets transmitted, (\d+) received`)
		sc := bufio.NewScanner(out)
		seen := map[int]bool{}
		for sc.Scan() {
			line := sc.Text()
			if m := sumRE.FindStringSubmatch(line); m != nil {
				s.sent, _ = strconv.Atoi(m[1])
				s.got, _ = strconv.Atoi(m[2])
				continue
			}
			if !strings.Contains(line, "bytes from") {
				continue
			}
			if m := seqRE.FindStringSubmatch(line); m != nil {
				seq, _ := strconv.Atoi(m[1])
				if !seen[seq] {
					seen[seq] = true
					s.replySeqs = append(s.replySeqs, seq)
					s.replyTimes = append(s.replyTimes, time.Now())
				}
			}
		}
		cmd.Wait()
		cancel()
		// The longest run of sequence numbers without an answer (ping counts from 1).
		prev := 0
		for _, seq := range s.replySeqs {
			if gap := time.Duration(seq-prev-1) * pingInterval; gap > s.longestGap {
				s.longestGap = gap
				s.gapStart = start.Add(time.Duration(prev) * pingInterval)
			}
			prev = max(prev, seq)
		}
		if tail := time.Duration(s.sent-prev) * pingInterval; tail > s.longestGap {
			s.longestGap = tail
			s.gapStart = start.Add(time.Duration(prev) * pingInterval)
		}
		done <- s
	}()
	var res *pingStats
	return func() pingStats {
		if res == nil {
			r := <-done
			res = &r
		}
		return *res
	}
}

// answeredAfter returns when the first echo sent at or after `at` was answered (zero if none).
func (s pingStats) answeredAfter(at time.Time) time.Time {
	for i, seq := range s.replySeqs {
		sent := s.sentAtStart.Add(time.Duration(seq-1) * pingInterval)
		if !sent.Before(at) {
			return s.replyTimes[i]
		}
	}
	return time.Time{}
}

// directWithin waits until every path (name → current path) is direct, and returns how long
// each took from `since`.
func directWithin(t testing.TB, since time.Time, budget time.Duration, paths map[string]func() string) map[string]time.Duration {
	t.Helper()
	took := map[string]time.Duration{}
	lab.Eventually(t, budget-time.Since(since), func() error {
		var missing []string
		for what, path := range paths {
			if _, ok := took[what]; ok {
				continue
			}
			if p := path(); strings.HasPrefix(p, "direct ") {
				took[what] = time.Since(since)
			} else {
				missing = append(missing, fmt.Sprintf("%s: %q", what, p))
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("not direct %v after the change: %s", time.Since(since).Round(time.Millisecond), strings.Join(missing, "; "))
		}
		return nil
	})
	return took
}
