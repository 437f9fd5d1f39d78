// Package e2e holds end-to-end tests: they build the real api and worker
// binaries, run them as processes against a real nats-server, and talk to
// them over HTTP the way a frontend does.
package e2e
