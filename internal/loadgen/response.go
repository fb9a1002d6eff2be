package loadgen

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// statusError is a complete response whose status is not 200.
type statusError struct{ code int }

func (e statusError) Error() string { return fmt.Sprintf("status %d, want 200", e.code) }

// protocolError is a response that is not HTTP/1.1 as RFC 9112 writes it.
type protocolError struct{ msg string }

func (e protocolError) Error() string { return "malformed response: " + e.msg }

// header is what readResponse needs from the status line and header fields.
type header struct {
	status        int
	contentLength int64 // -1: absent
	chunked       bool
	close         bool // the connection ends after this response
}

// readResponse reads one whole response from r. It returns whether the
// connection may carry another request, and an error when the response is
// incomplete (io.EOF if not a byte of it came, io.ErrUnexpectedEOF if part
// did), malformed (protocolError), not 200 (statusError, after reading it
// whole), or when reading fails.
func readResponse(r *bufio.Reader) (reusable bool, err error) {
	h, err := readHeader(r)
	if err != nil {
		return false, err
	}
	if err := readBody(r, h); err != nil {
		return false, err
	}
	if h.hasBody() && !h.chunked && h.contentLength < 0 {
		h.close = true // the body ended with the connection
	}
	if h.status != 200 {
		return !h.close, statusError{h.status}
	}
	return !h.close, nil
}

func readHeader(r *bufio.Reader) (header, error) {
	line, err := readLine(r)
	if err != nil {
		return header{}, err // io.EOF here: not a byte came
	}
	h := header{contentLength: -1}
	if h.status, err = parseStatusLine(line); err != nil {
		return h, err
	}
	h.close = bytes.HasPrefix(line, []byte("HTTP/1.0"))
	for {
		line, err := readLine(r)
		if err != nil {
			return h, partial(err)
		}
		if len(line) == 0 {
			return h, nil
		}
		if err := h.field(line); err != nil {
			return h, err
		}
	}
}

func parseStatusLine(line []byte) (int, error) {
	// HTTP-version SP status-code SP [reason-phrase]
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return 0, protocolError{fmt.Sprintf("status line %q", line)}
	}
	code, err := strconv.Atoi(string(line[9:12]))
	if err != nil || code < 100 {
		return 0, protocolError{fmt.Sprintf("status line %q", line)}
	}
	return code, nil
}

// field takes in one header field line.
func (h *header) field(line []byte) error {
	name, value, ok := bytes.Cut(line, []byte(":"))
	if !ok {
		return protocolError{fmt.Sprintf("header line %q", line)}
	}
	value = bytes.TrimSpace(value)
	switch {
	case bytes.EqualFold(name, []byte("Content-Length")):
		n, err := strconv.ParseInt(string(value), 10, 64)
		if err != nil || n < 0 {
			return protocolError{fmt.Sprintf("Content-Length %q", value)}
		}
		h.contentLength = n
	case bytes.EqualFold(name, []byte("Transfer-Encoding")):
		h.chunked = bytes.EqualFold(value, []byte("chunked"))
	case bytes.EqualFold(name, []byte("Connection")):
		h.close = bytes.EqualFold(value, []byte("close"))
	}
	return nil
}

func (h header) hasBody() bool {
	return h.status >= 200 && h.status != 204 && h.status != 304
}

// readBody reads the body that h announces, as RFC 9112 section 6.3 says
// to find its length.
func readBody(r *bufio.Reader, h header) error {
	switch {
	case !h.hasBody():
		return nil
	case h.chunked:
		return readChunked(r)
	case h.contentLength >= 0:
		return discard(r, h.contentLength)
	default: // delimited by the end of the connection
		_, err := io.Copy(io.Discard, r)
		return err
	}
}

func readChunked(r *bufio.Reader) error {
	for {
		line, err := readLine(r)
		if err != nil {
			return partial(err)
		}
		sizeHex, _, _ := bytes.Cut(line, []byte(";"))
		size, err := strconv.ParseInt(string(bytes.TrimSpace(sizeHex)), 16, 64)
		if err != nil || size < 0 {
			return protocolError{fmt.Sprintf("chunk size %q", line)}
		}
		if size == 0 {
			return skipTrailers(r)
		}
		if err := discard(r, size); err != nil {
			return err
		}
		if err := chunkEnd(r); err != nil {
			return err
		}
	}
}

// chunkEnd reads the CRLF that ends a chunk's data.
func chunkEnd(r *bufio.Reader) error {
	line, err := readLine(r)
	if err != nil {
		return partial(err)
	}
	if len(line) != 0 {
		return protocolError{"no CRLF after chunk data"}
	}
	return nil
}

func skipTrailers(r *bufio.Reader) error {
	for {
		line, err := readLine(r)
		if err != nil {
			return partial(err)
		}
		if len(line) == 0 {
			return nil
		}
	}
}

func discard(r *bufio.Reader, n int64) error {
	if _, err := io.CopyN(io.Discard, r, n); err != nil {
		return partial(err)
	}
	return nil
}

// readLine reads a line without its CRLF (or LF). A line longer than the
// reader's buffer is a protocolError; io.EOF means not a byte came, and
// io.ErrUnexpectedEOF that the line was cut.
func readLine(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	switch {
	case errors.Is(err, bufio.ErrBufferFull):
		return nil, protocolError{"line too long"}
	case errors.Is(err, io.EOF) && len(line) > 0:
		return nil, io.ErrUnexpectedEOF
	case err != nil:
		return nil, err
	}
	return bytes.TrimRight(line, "\r\n"), nil
}

// partial turns io.EOF into io.ErrUnexpectedEOF: part of the response came.
func partial(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
