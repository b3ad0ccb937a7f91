package taildrop

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/skeinvpn/skein/internal/safetext"
)

// hashTimeout bounds the resume query (the official sender's value).
const hashTimeout = 10 * time.Second

// Send sends a file to the peer API at base ("http://ip:port"), resuming a partial transfer the
// peer holds from us when its leading blocks match the file:
//
//  1. GET base/v0/put/<name> (10 s; any failure, 404 or 405 means "start from 0") returns the
//     SHA-256 of each 64 KiB block of the peer's partial file;
//  2. body is read block by block while the hashes match; the matched prefix is not sent again;
//  3. PUT base/v0/put/<name> with the rest, Content-Length = size − offset and, when offset > 0,
//     Range: bytes=<offset>-.
//
// Both requests carry "Host: peer". size < 0 means unknown (the body is sent chunked). body is
// read once, never more than size bytes; progress, if set, gets the number of bytes consumed so
// far (including the matched prefix), possibly from another goroutine but never after Send
// returned. It returns the offset the transfer resumed at. Errors from the peer name the HTTP
// status and the peer's text.
//
// c should have no overall Timeout (a large file takes long); cancel ctx instead. The name is
// checked only for what cannot work at all (empty, '/', NUL, invalid UTF-8, too long): the peer
// applies its own rules, and ours are stricter than the official ones.
func Send(ctx context.Context, c *http.Client, base, name string, size int64, body io.Reader, progress func(sent int64)) (resumedAt int64, err error) {
	if name == "" || !utf8.ValidString(name) || strings.ContainsAny(name, "/\x00") || len(name) > MaxNameLen {
		return 0, fmt.Errorf("taildrop: send: %w", ErrInvalidName)
	}
	if c == nil {
		c = http.DefaultClient
	}
	u := strings.TrimRight(base, "/") + "/v0/put/" + url.PathEscape(name)
	src := &consumeCounter{r: body, progress: progress}
	defer src.finish()
	var rest io.Reader = src
	if size >= 0 {
		rest = io.LimitReader(src, size)
	}

	offset, pending, err := matchPartial(ctx, c, u, rest)
	if err != nil {
		return 0, fmt.Errorf("taildrop: send %q: reading the file: %w", name, err)
	}
	var reqBody io.Reader = io.MultiReader(bytes.NewReader(pending), rest)
	contentLength := int64(-1)
	if size >= 0 {
		contentLength = size - offset
		if contentLength == 0 {
			reqBody = http.NoBody
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u, reqBody)
	if err != nil {
		return 0, fmt.Errorf("taildrop: send %q: %w", name, err)
	}
	req.Host = "peer"
	req.ContentLength = contentLength
	req.Header.Set("Content-Type", "application/octet-stream")
	if offset > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-")
	}
	resp, err := c.Do(req)
	if err != nil {
		if rerr := src.readErr(); rerr != nil {
			return offset, fmt.Errorf("taildrop: send %q: reading the file: %w", name, rerr)
		}
		return offset, fmt.Errorf("taildrop: send %q: %w", name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		// The peer's words reach the user's terminal: no control characters (hole 5).
		text := safetext.Clean(strings.TrimSpace(string(msg)), 512)
		if text == "" {
			text = "(no text)"
		}
		return offset, fmt.Errorf("taildrop: send %q: peer answered %s: %s", name, resp.Status, text)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	return offset, nil
}

// consumeCounter counts the bytes read from the file and reports them. The HTTP transport may
// read it from its own goroutine, even after Send returned; once finished, it neither reads
// the file nor calls progress again.
type consumeCounter struct {
	r        io.Reader
	progress func(int64)

	mu   sync.Mutex
	n    int64
	err  error // first read error other than EOF
	done bool
}

var errSendFinished = errors.New("taildrop: send finished")

func (cc *consumeCounter) Read(p []byte) (int, error) {
	cc.mu.Lock()
	done := cc.done
	cc.mu.Unlock()
	if done {
		return 0, errSendFinished
	}
	n, err := cc.r.Read(p)
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.done {
		return 0, errSendFinished
	}
	if n > 0 {
		cc.n += int64(n)
		if cc.progress != nil {
			cc.progress(cc.n)
		}
	}
	if err != nil && err != io.EOF && cc.err == nil {
		cc.err = err
	}
	return n, err
}

// readErr is the first error reading the file.
func (cc *consumeCounter) readErr() error {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.err
}

func (cc *consumeCounter) finish() {
	cc.mu.Lock()
	cc.done = true
	cc.mu.Unlock()
}

// blockHash is one line of the peer's answer to the resume query.
type blockHash struct {
	Checksum string `json:"checksum"`
	Algo     string `json:"algo"`
	Size     int64  `json:"size"`
}

// matchPartial asks the peer for the block hashes of its partial file at u and consumes the
// matching prefix of file. It returns the matched length and the bytes read beyond it (the
// first block that did not match), which must be sent first. Only a read error of file is an
// error; any trouble with the peer just ends the match.
func matchPartial(ctx context.Context, c *http.Client, u string, file io.Reader) (offset int64, pending []byte, err error) {
	gctx, cancel := context.WithTimeout(ctx, hashTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(gctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, nil, nil
	}
	req.Host = "peer"
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil, nil
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, nil, nil
	}
	return matchHashes(resp.Body, file)
}

// matchHashes reads the peer's block hashes (one JSON object per line) from hashes and consumes
// the prefix of file they match: see matchPartial. The peer is not trusted: anything malformed
// ends the match.
func matchHashes(hashes io.Reader, file io.Reader) (offset int64, pending []byte, err error) {
	br := bufio.NewReaderSize(hashes, 4096)
	block := make([]byte, hashBlockSize)
	for {
		line, lerr := br.ReadSlice('\n')
		if lerr != nil && (lerr != io.EOF || len(line) == 0) {
			return offset, nil, nil // end of the list, timeout, or a line too long
		}
		var bh blockHash
		var want [sha256.Size]byte
		if json.Unmarshal(line, &bh) != nil || bh.Algo != "sha256" || bh.Size <= 0 || bh.Size > hashBlockSize ||
			len(bh.Checksum) != 2*sha256.Size {
			return offset, nil, nil
		}
		if _, err := hex.Decode(want[:], []byte(bh.Checksum)); err != nil {
			return offset, nil, nil
		}
		n, rerr := io.ReadFull(file, block[:bh.Size])
		if rerr != nil && rerr != io.EOF && rerr != io.ErrUnexpectedEOF {
			return offset, nil, rerr
		}
		if n == 0 {
			return offset, nil, nil
		}
		if int64(n) != bh.Size || sha256.Sum256(block[:n]) != want {
			return offset, block[:n], nil
		}
		offset += int64(n)
		if errors.Is(lerr, io.EOF) {
			return offset, nil, nil
		}
	}
}
