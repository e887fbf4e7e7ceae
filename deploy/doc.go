// Package deploy holds Ward's container image definition (Dockerfile) and
// Kubernetes manifests (kubernetes/), and a test that checks them: the
// probes name health paths the server serves, the pods run as a non-root
// user on a read-only root file system with resources set, the
// key-encryption key and the DSN come from a Secret, and the configuration
// in the ConfigMap passes Ward's own validation. It has no code of its
// own. See docs/deploy.md.
package deploy
