//go:build linux

package systemd

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// maxStatusLen bounds a STATUS= line so that a whole message stays well
// inside the service manager's 4096-byte datagram limit.
const maxStatusLen = 1024

// Notifier sends sd_notify(3) messages to the service manager that started
// rpwrap. The zero value and a nil *Notifier are disabled: every method is a
// no-op that returns nil. A Notifier is safe for concurrent use.
type Notifier struct {
	socket   string        // $NOTIFY_SOCKET as read at start; "" when disabled
	watchdog time.Duration // $WATCHDOG_USEC when meant for this process; 0 otherwise
	pid      int
}

// NewNotifier reads $NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID once and
// unsets them from the process environment, so that no child inherits them.
// It never fails: without $NOTIFY_SOCKET the Notifier is disabled, and a
// watchdog setting that is malformed or names another pid (WATCHDOG_PID) is
// treated as no watchdog, as sd_watchdog_enabled(3) does.
func NewNotifier() *Notifier {
	n := &Notifier{socket: os.Getenv("NOTIFY_SOCKET"), pid: os.Getpid()}
	os.Unsetenv("NOTIFY_SOCKET")
	// Unsets both variables; an error only reports a malformed value.
	interval, err := daemon.SdWatchdogEnabled(true)
	if err == nil && n.socket != "" {
		n.watchdog = interval
	}
	return n
}

// Enabled reports whether the Notifier has a socket to send to.
func (n *Notifier) Enabled() bool { return n != nil && n.socket != "" }

// WatchdogInterval returns $WATCHDOG_USEC as read by NewNotifier, or 0 when
// no watchdog is configured for this process. Watchdog pings at half of it.
func (n *Notifier) WatchdogInterval() time.Duration {
	if n == nil {
		return 0
	}
	return n.watchdog
}

// Ready sends READY=1 together with MAINPID=<rpwrap's pid>, so the service
// manager keeps rpwrap as the main process whichever server is running. It
// is also the end of a reload started with Reloading. It returns an error
// wrapping the socket error when the message cannot be sent.
func (n *Notifier) Ready() error {
	if !n.Enabled() {
		return nil
	}
	return n.send(daemon.SdNotifyReady + "\nMAINPID=" + strconv.Itoa(n.pid))
}

// Reloading sends RELOADING=1 with MONOTONIC_USEC set to CLOCK_MONOTONIC in
// microseconds, which systemd (≥ 253, Type=notify-reload) requires to tell
// this reload from an older one. Send Ready when the reload is over. It
// returns an error wrapping the socket error when the message cannot be
// sent.
func (n *Notifier) Reloading() error {
	return n.send(daemon.SdNotifyReloading + "\n" + strings.TrimSuffix(daemon.SdNotifyMonotonicUsec(), "\n"))
}

// Stopping sends STOPPING=1. It returns an error wrapping the socket error
// when the message cannot be sent.
func (n *Notifier) Stopping() error { return n.send(daemon.SdNotifyStopping) }

// Status sends STATUS= with the formatted text, which `systemctl status`
// shows. Newlines become spaces, invalid UTF-8 becomes U+FFFD and text past
// 1024 bytes is cut, so the status is always one readable line. It returns an
// error wrapping the socket error when the message cannot be sent.
func (n *Notifier) Status(format string, args ...any) error {
	return n.send("STATUS=" + statusLine(fmt.Sprintf(format, args...)))
}

func statusLine(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ", "\x00", " ").Replace(s)
	if len(s) <= maxStatusLen {
		return s
	}
	cut := maxStatusLen
	for cut > 0 && !utf8RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }

// Watchdog sends WATCHDOG=1 every half $WATCHDOG_USEC from a goroutine it
// starts, until ctx is done; it returns at once. Without a watchdog for this
// process (see NewNotifier) it starts nothing. Sending errors are dropped: a
// missed ping is what the service manager's watchdog exists to notice.
func (n *Notifier) Watchdog(ctx context.Context) {
	if n.WatchdogInterval() <= 0 || !n.Enabled() {
		return
	}
	go n.watchdogLoop(ctx)
}

func (n *Notifier) watchdogLoop(ctx context.Context) {
	t := time.NewTicker(n.watchdog / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = n.send(daemon.SdNotifyWatchdog)
		}
	}
}

// send writes one datagram to the service manager's socket. An address
// starting with '@' is in the abstract namespace (Go maps it as systemd
// does); vsock addresses are not supported.
func (n *Notifier) send(state string) error {
	if !n.Enabled() {
		return nil
	}
	if !strings.HasPrefix(n.socket, "/") && !strings.HasPrefix(n.socket, "@") {
		return fmt.Errorf("send %q to NOTIFY_SOCKET=%s: only absolute paths and @abstract names are supported", firstLine(state), n.socket)
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.socket, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("send %q to NOTIFY_SOCKET=%s (is the service manager still running?): %w", firstLine(state), n.socket, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("send %q to NOTIFY_SOCKET=%s: %w", firstLine(state), n.socket, err)
	}
	return nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
