//go:build linux

package supervisor

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/rpwrap/rpwrap/fdpass"
)

// guard checks, before the flip, that g's server holds the sockets rpwrap
// gave it. A server that ignores LISTEN_FDS and binds a socket of its own
// would otherwise get no connection after the flip, and connections steered
// to rpwrap's socket would hang.
func (s *Supervisor) guard(g *generation) error {
	held := socketInodes(processTree(g.pid))
	ours := map[uint64]bool{}
	for _, gen := range s.liveGenerations() {
		for _, l := range gen.listeners {
			ours[l.Inode()] = true
		}
	}
	for i, l := range g.listeners {
		spec := s.groups[i].spec
		if spec.Network == "tcp" {
			listening, err := fdpass.ListeningInodes(spec.Addr.Port())
			if err != nil {
				return fmt.Errorf("check the sockets of %s: %w", g, err)
			}
			for _, inode := range listening {
				if held[inode] && !ours[inode] {
					return fmt.Errorf("%s listens on port %d with a socket of its own (inode %d) instead of the one rpwrap passed for %s: "+
						"the server ignored it (route --pass %s); %s", g, spec.Addr.Port(), inode, spec, s.cfg.Route, routeAdvice)
				}
			}
		}
		if !held[l.Inode()] {
			return fmt.Errorf("%s does not hold the socket rpwrap passed for %s (inode %d): "+
				"the server ignored it (route --pass %s); %s", g, spec, l.Inode(), s.cfg.Route, routeAdvice)
		}
	}
	return nil
}

const routeAdvice = "use --pass bind for servers that bind their own port (Apache), --pass nginx for nginx, or `bind fd@3` in HAProxy's configuration"

// processTree lists pid and all its descendants.
func processTree(pid int) []int {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp := ppid(p); pp > 0 {
			children[pp] = append(children[pp], p)
		}
	}
	tree := []int{pid}
	for i := 0; i < len(tree); i++ {
		tree = append(tree, children[tree[i]]...)
	}
	return tree
}

// ppid reads the parent pid from /proc/PID/stat; 0 if the process is gone.
func ppid(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.Atoi(f[1])
	return n
}

// socketInodes collects the inodes of every socket the processes hold.
func socketInodes(pids []int) map[uint64]bool {
	inodes := map[uint64]bool{}
	for _, pid := range pids {
		dir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			target, err := os.Readlink(filepath.Join(dir, e.Name()))
			if err != nil || !strings.HasPrefix(target, "socket:[") {
				continue
			}
			n, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(target, "socket:["), "]"), 10, 64)
			if err == nil {
				inodes[n] = true
			}
		}
	}
	return inodes
}
