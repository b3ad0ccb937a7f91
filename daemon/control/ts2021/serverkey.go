package ts2021

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/skeinvpn/skein/daemon/key"
)

const maxKeyResponse = 64 << 10

// FetchServerKey gets the server's Noise public key from GET /key. hc nil
// means http.DefaultClient; TLS is verified as hc is configured.
func FetchServerKey(ctx context.Context, hc *http.Client, serverURL string) (key.MachinePublic, error) {
	var zero key.MachinePublic
	if hc == nil {
		hc = http.DefaultClient
	}
	u := strings.TrimRight(serverURL, "/") + "/key?v=" + strconv.Itoa(CapabilityVersion)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return zero, fmt.Errorf("ts2021: fetching server key: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return zero, fmt.Errorf("ts2021: fetching server key: %w", err)
	}
	defer resp.Body.Close()
	// One byte over the limit tells "too big" from "exactly 64 KiB".
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxKeyResponse+1))
	if err != nil {
		return zero, fmt.Errorf("ts2021: fetching server key from %s: reading body: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return zero, fmt.Errorf("ts2021: fetching server key from %s: status %q, body %q", u, resp.Status, truncate(body, 200))
	}
	if len(body) > maxKeyResponse {
		return zero, fmt.Errorf("ts2021: fetching server key from %s: response larger than 64 KiB", u)
	}
	var r struct {
		PublicKey key.MachinePublic `json:"publicKey"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return zero, fmt.Errorf("ts2021: fetching server key from %s: bad response %q: %w", u, truncate(body, 100), err)
	}
	if r.PublicKey.IsZero() {
		return zero, fmt.Errorf("ts2021: fetching server key from %s: control server is too old (no Noise key)", u)
	}
	return r.PublicKey, nil
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}
