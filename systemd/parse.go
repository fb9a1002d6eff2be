package systemd

import (
	"bytes"
	"unicode/utf8"
)

// notifyBufferMax is the largest datagram the service manager reads:
// NOTIFY_BUFFER_MAX in systemd's src/core/manager.c, PIPE_BUF (4096). A
// longer message is dropped whole, as systemd drops it.
const notifyBufferMax = 4096

// ParseNotify parses one sd_notify(3) datagram: newline-separated KEY=VALUE
// assignments, as in an environment block. It never fails: a line that is
// empty, not valid UTF-8, holds a NUL byte, has no '=' or has a key that is
// not made of A-Z, 0-9 and '_' (not starting with a digit) is skipped. When a
// key repeats, the last value wins. The result is never nil.
func ParseNotify(b []byte) map[string]string {
	fields := map[string]string{}
	for line := range bytes.SplitSeq(b, []byte{'\n'}) {
		if !utf8.Valid(line) || bytes.IndexByte(line, 0) >= 0 {
			continue
		}
		key, value, ok := bytes.Cut(line, []byte{'='})
		if !ok || !validKey(key) {
			continue
		}
		fields[string(key)] = string(value)
	}
	return fields
}

// validKey reports whether key can name an sd_notify field: upper-case
// letters, digits and underscores, not starting with a digit.
func validKey(key []byte) bool {
	if len(key) == 0 || (key[0] >= '0' && key[0] <= '9') {
		return false
	}
	for _, c := range key {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}
