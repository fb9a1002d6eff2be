// Package packaging builds rpwrap's Debian package: build-deb.sh writes
// rpwrap_VERSION_ARCH.deb with dpkg-deb(1), and its test installs that
// package with dpkg(1), runs what it installed and removes it again.
//
//	$ packaging/build-deb.sh dist && dpkg -i dist/rpwrap_*.deb
package packaging
