//go:build linux

package bpf

import (
	"errors"
	"fmt"
	"net"
	"syscall"
)

// Flavour names the kind of program that steers a reuseport group.
type Flavour string

const (
	// Auto picks EBPF when the kernel and the process's privileges allow
	// it, and CBPF otherwise.
	Auto Flavour = "auto"
	// EBPF is an SK_REUSEPORT program with a socket map: selection by map,
	// migration of a closing listener's queue, foreign members ignored.
	EBPF Flavour = "ebpf"
	// CBPF is a classic BPF program that returns a group index; it needs
	// no privileges.
	CBPF Flavour = "cbpf"
)

// Slot names one socket of the group inside a Selector. Slots are small
// numbers, reused after Remove.
type Slot uint32

// MaxSlots is how many sockets one Selector can hold at once.
const MaxSlots = 32

// MaxProbes is how many probe routes one Selector can hold at once.
const MaxProbes = 16

var (
	// ErrNotSupported is wrapped by errors that say the eBPF flavour, or a
	// feature of the cBPF flavour, cannot work here.
	ErrNotSupported = errors.New("not supported")
	// ErrUnknownSlot is wrapped when a call names a slot that Add did not
	// return, or that was removed.
	ErrUnknownSlot = errors.New("unknown slot")
	// ErrFull is wrapped when Add finds MaxSlots sockets, or SetProbe
	// MaxProbes routes, already in use.
	ErrFull = errors.New("selector full")
	// ErrClosed is returned by every call after Close.
	ErrClosed = net.ErrClosed
)

// Selector steers the new connections (TCP) or datagrams (UDP) of one
// SO_REUSEPORT group. Its methods are safe for concurrent use.
type Selector interface {
	// Flavour reports which kind of program steers the group: EBPF or CBPF.
	Flavour() Flavour
	// Add registers a socket that has already joined the group (TCP: after
	// listen(2); UDP: after bind(2)) and returns its slot. It does not
	// change the active slot. The caller keeps the socket open until
	// Remove. Add fails when the socket is not of the group's family,
	// protocol and address, is not listening (TCP) or bound (UDP), lacks
	// SO_REUSEPORT, is MPTCP, or when MaxSlots are in use (ErrFull).
	Add(sock syscall.Conn) (Slot, error)
	// Join runs join, which makes a new socket join the group (TCP:
	// listen(2); UDP: bind(2)) and returns it, and adds it as Add does, as
	// one step that no other Join or Leave of the group comes between.
	// When the socket cannot be added, Join closes it and returns the
	// error. Use Join rather than Add for sockets that join while the
	// group serves: the CBPF flavour mirrors the kernel's numbering of the
	// members, which follows the order in which they join and leave.
	Join(join func() (Member, error)) (Slot, error)
	// Leave runs leave, which takes the socket of slot out of the group
	// (TCP: shutdown(2) of the listener; or the last close of the socket),
	// and then removes the slot as Remove does, as one step that no other
	// Join or Leave of the group comes between. When leave fails the slot
	// stays, and Leave returns the error. A close that is not the socket's
	// last (another process still holds it) leaves it in the group: with
	// CBPF, take a TCP socket out with shutdown(2); a UDP socket leaves
	// only with its last holder.
	Leave(s Slot, leave func() error) error
	// Activate is the flip: every new connection goes to s from now on.
	// It fails with ErrUnknownSlot, or with the kernel's error, in which
	// case the previous slot stays active.
	Activate(s Slot) error
	// Active returns the slot that receives new connections.
	Active() Slot
	// Remove forgets a slot once its socket has left the group (its last
	// reference closed, or shutdown(2)). Removing the active slot leaves
	// the group steered to the lowest live slot (EBPF) or kernel index 0
	// (CBPF) until the next Activate. It fails with ErrUnknownSlot.
	Remove(s Slot) error
	// SetProbe steers connections whose source port is srcPort to slot s,
	// whatever the active slot is (the readiness probe route). It fails
	// with ErrUnknownSlot, or ErrFull past MaxProbes routes.
	SetProbe(srcPort uint16, s Slot) error
	// ClearProbe removes the probe route of srcPort; clearing a route that
	// does not exist is not an error.
	ClearProbe(srcPort uint16) error
	// Close detaches the program from the group and frees it and its
	// maps; the group keeps working by hash afterwards. It returns the
	// first error met; a second Close returns ErrClosed.
	Close() error
}

// New attaches a selector to the group of first (already listening for
// TCP, bound for UDP, with SO_REUSEPORT) and makes first slot 0, active.
// With Auto it falls back to CBPF when Supported reports an error; with EBPF
// the error then wraps ErrNotSupported. The caller logs the Flavour it got.
// New fails when first is not a socket it can steer (see Selector.Add) or
// when the kernel refuses the program; nothing is left attached then.
func New(first syscall.Conn, f Flavour) (Selector, error) {
	return NewWithFlows(first, f, FlowsOff)
}

// NewWithFlows is New with a flow mode for UDP groups: with the EBPF
// flavour the program keeps each flow on the socket that received its
// first datagram (FlowsTuple, FlowsQUIC). A TCP group ignores the mode (the
// kernel keeps a connection with its socket), and so does a CBPF selector,
// which cannot keep state: it steers every datagram to the active socket,
// like FlowsOff. It fails like New, and on a mode ParseFlowMode refuses.
func NewWithFlows(first syscall.Conn, f Flavour, flows FlowMode) (Selector, error) {
	if _, err := ParseFlowMode(string(flows)); err != nil {
		return nil, fmt.Errorf("create reuseport selector: %w", err)
	}
	info, err := inspect(first)
	if err != nil {
		return nil, fmt.Errorf("create reuseport selector: %w", err)
	}
	switch f {
	case Auto:
		if Supported() != nil {
			return newCBPF(first, info)
		}
		return newEBPF(first, info, flows)
	case EBPF:
		if err := Supported(); err != nil {
			return nil, fmt.Errorf("create eBPF reuseport selector on %s: %w", info, err)
		}
		return newEBPF(first, info, flows)
	case CBPF:
		return newCBPF(first, info)
	}
	return nil, fmt.Errorf("create reuseport selector: unknown flavour %q (want auto, ebpf or cbpf)", f)
}

// ProgramID returns the kernel's id of the eBPF program that steers sel's
// group. ok is false for a cBPF selector (a classic program has no id), a
// closed one, or when the kernel does not tell the id.
func ProgramID(sel Selector) (id uint32, ok bool) {
	p, is := sel.(interface{ ProgramID() (uint32, bool) })
	if !is {
		return 0, false
	}
	return p.ProgramID()
}
