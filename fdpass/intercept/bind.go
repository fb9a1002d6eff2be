//go:build linux

package intercept

import (
	"errors"

	"golang.org/x/sys/unix"
)

// answer is how one bind notification is answered.
type answer struct {
	send    bool       // false: the notification is gone, answer nothing
	cont    bool       // SECCOMP_USER_NOTIF_FLAG_CONTINUE: the kernel does the bind
	errno   unix.Errno // bind fails with this; 0 with !cont: bind returns 0
	claim   *managed   // on a successful 0, this managed socket is taken
	onReply func()     // after a successful send
}

var (
	answerNone     = answer{}
	answerContinue = answer{send: true, cont: true}
)

func answerErrno(e unix.Errno) answer { return answer{send: true, errno: e} }

// handleOne receives one notification and answers it. It fails only when
// the notify fd itself fails.
func (i *Interceptor) handleOne(nfd int) error {
	var n seccompNotif
	if err := notifRecv(nfd, &n); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil // the task went away between poll and receive
		}
		return err
	}
	a := i.decide(nfd, &n)
	if !a.send {
		return nil
	}
	r := seccompNotifResp{ID: n.ID}
	switch {
	case a.cont:
		r.Flags = unix.SECCOMP_USER_NOTIF_FLAG_CONTINUE
	case a.errno != 0:
		r.Error = -int32(a.errno)
	}
	if err := notifSend(nfd, r); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil // killed meanwhile: nothing was taken
		}
		return err
	}
	if a.claim != nil {
		a.claim.claimed.Store(true)
	}
	if a.onReply != nil {
		a.onReply()
	}
	return nil
}

// decide reads the bind's address, checks that the notification is still
// valid (so the pid was not reused while reading), and only then acts.
func (i *Interceptor) decide(nfd int, n *seccompNotif) answer {
	if n.Data.Nr != unix.SYS_BIND {
		return answerContinue
	}
	raw, readErr := readSockaddr(n.Pid, n.Data.Args[1], n.Data.Args[2])
	if notifIDValid(nfd, n.ID) != nil {
		return answerNone
	}
	if readErr != nil {
		return answerContinue // bad pointer or length: the kernel answers EFAULT or EINVAL itself
	}
	sa, err := parseSockaddr(raw)
	if err != nil || !i.portManaged(sa.addr.Port()) {
		return answerContinue
	}
	return i.bindManagedPort(nfd, n, sa)
}

func (i *Interceptor) portManaged(port uint16) bool {
	for _, m := range i.managed {
		if m.Addr.Port() == port {
			return true
		}
	}
	return false
}
