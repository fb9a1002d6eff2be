// Package fleet holds an Ansible playbook, rollout.yml, that rolls a new
// server release across hosts that run it under rpwrap, one host at a time,
// gated on `rpwrap ctl restart`'s exit status, and the test that runs it for
// real: three hosts, each a network namespace with its own address, sshd and
// rpwrap, behind Debian's HAProxy in another namespace, under load from
// outside with every request counted. README.md gives the figures.
//
// The package has no code of its own. Run its test as root with ansible,
// openssh-server and haproxy installed:
//
//	go test -v -run TestFleetRollout ./examples/fleet/
package fleet
