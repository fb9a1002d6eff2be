// Package kubernetes holds web.yaml, a Deployment of nginx under rpwrap
// (ENTRYPOINT, probes on --health, a grace period that covers --stop-delay
// and the stop, a ConfigMap applied in place with `rpwrap ctl restart`),
// the image's Dockerfile, and the tests that check them offline: the
// manifest decoded strictly into the Kubernetes API's own types (the module
// in validate/), the numbers checked against each other, and the
// container's own command line run for real in a network namespace with
// the ConfigMap's nginx.conf. README.md says what only a cluster can show.
package kubernetes
